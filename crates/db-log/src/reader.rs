//! [`LogReader`]: the one way the log is read, by replication tasks and
//! by openraft's core (through the store). The newest entries come from
//! memory, older ones from the segment files on a blocking thread.
use super::index::{lock, Loc, Shared};
use super::record::read_entry;
use bulwark_db_api::raft_types::{storage_err, Entry, StorageError, TypeConfig};
use openraft::{ErrorVerb, RaftLogReader};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// A handle to read the log, handed to replication tasks.
#[derive(Clone)]
pub struct LogReader {
    pub(super) shared: Arc<Shared>,
}

pub(super) fn range_of<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// Read `start..end` from the files (a blocking call).
pub(super) fn read_files(shared: &Shared, start: u64, end: u64) -> io::Result<Vec<Entry>> {
    let want: Vec<Loc> = {
        let locs = lock(&shared.locs);
        let (s, e) = (start.max(locs.first), end.min(locs.end()));
        (s..e).filter_map(|i| locs.get(i).copied()).collect()
    };
    let files: BTreeMap<u64, Arc<File>> = {
        let segs = lock(&shared.segs);
        want.iter().filter_map(|l| segs.get(&l.seg).map(|s| (l.seg, s.file.clone()))).collect()
    };
    let mut out = Vec::with_capacity(want.len());
    for loc in &want {
        let Some(file) = files.get(&loc.seg) else {
            return Err(io::Error::other(format!("raft log entry {} was purged meanwhile", loc.log_id)));
        };
        out.push(read_entry(file, loc)?);
    }
    Ok(out)
}

pub(super) async fn read_entries(shared: &Arc<Shared>, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
    if start >= end {
        return Ok(Vec::new());
    }
    // The newest entries first: one that leaves memory meanwhile is in the
    // files.
    let cached: Vec<Arc<Entry>> = {
        let recent = lock(&shared.recent);
        if recent.entries.last_key_value().is_some_and(|(last, _)| *last < start) {
            // Past the end of the log.
            return Ok(Vec::new());
        }
        recent.entries.range(start..end).map(|(_, e)| e.2.clone()).collect()
    };
    // Memory holds a contiguous suffix of the log, so the files are read
    // only below its first index.
    let file_end = cached.first().map(|e| e.log_id.index).unwrap_or(end);
    let mut out = if start < file_end {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || read_files(&shared, start, file_end))
            .await
            .map_err(|e| storage_err(ErrorVerb::Read, e))?
            .map_err(|e| storage_err(ErrorVerb::Read, e))?
    } else {
        Vec::new()
    };
    out.extend(cached.iter().map(|e| (**e).clone()));
    Ok(out)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = range_of(&range);
        read_entries(&self.shared, start, end).await
    }
}
