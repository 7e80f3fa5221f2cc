//! Continuous archiving of the Raft log: every committed entry is copied
//! into an archive directory (`bulwark db --archive-log DIR`, or `[backup]
//! archive_log = true` under `bulwark up`) before the log may purge it, so
//! that a backup plus the archive rebuild the database as it was at any
//! moment after the backup (`bulwark db restore --to-time`, see
//! [`replay`](bulwark_db_backup::replay) in crate bulwark-db-backup).
//!
//! A task follows what the database has applied (applied entries are
//! committed: never truncated), reads those entries from the log, appends
//! them to the archive's current file (format:
//! [`archive_file`](bulwark_db_backup::archive_file), also in
//! bulwark-db-backup), and syncs
//! the file (and the directory when it makes a file); only then are they
//! archived. The log asks, at each purge, how far it may purge
//! ([`PurgeLimit`](bulwark_db_log::PurgeLimit)): up to the last archived
//! entry. So the write path never waits for the archive: a slow or full
//! archive disk holds purges back instead (the log grows), and
//! `bulwark_db_archive_behind_entries` on `/metrics` says by how much. The
//! task writes at most about five times a second, each time everything
//! applied since, on a blocking thread.
//!
//! Entries this node never had in its log (it was behind and received a
//! snapshot instead) cannot be archived: the task records a gap (a new
//! file starts after it, `bulwark_db_archive_gaps_total` counts it), and a
//! restore refuses to replay across it; a backup taken after the gap
//! starts a whole history again.
//!
//! Owns: the archive directory. Must not touch: the log's files (it reads
//! entries through the log's reader).
use bulwark_db_api::raft_types::{Entry, TypeConfig};
use bulwark_db_backup::archive_file::{self, encode, file_name, header, read_file};
use bulwark_db_log::PurgeLimit;
use bulwark_db_sm::durable::sync_dir;
use bulwark_db_sm::state_machine::Applied;
use bulwark_telemetry::metrics::Exposition;
use openraft::RaftLogReader;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A file is closed and the next one started past this size.
const ROLL_BYTES: u64 = 16 << 20;
/// Most entries archived in one round.
const BATCH: u64 = 4096;
/// Pause between two rounds that found less than a full batch: rounds
/// gather the entries of this long into one write and one sync.
const PACE: Duration = Duration::from_millis(200);
/// Pause before trying again after a failed write.
const RETRY: Duration = Duration::from_secs(1);

/// What the archive has done, for the purge limit and `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ArchiveStatus {
    /// The last entry archived (or skipped over as a gap): the log may
    /// purge up to it.
    pub archived: Option<u64>,
    /// The last entry the database applied, as the task last saw it.
    pub applied: u64,
    pub gaps: u64,
    pub failures: u64,
}

/// Shared between the task, the log's purge limit and `/metrics`.
#[derive(Debug, Default)]
pub struct ArchiveState {
    status: Mutex<ArchiveStatus>,
}

impl ArchiveState {
    pub fn status(&self) -> ArchiveStatus {
        *self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut ArchiveStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The archive's families on the node's `/metrics` (`node`: its id).
    pub fn encode_metrics(&self, node: &str, out: &mut Exposition<'_>) -> fmt::Result {
        let s = self.status();
        let node = [("node", node)];
        let archived = s.archived.unwrap_or(0);
        out.gauges("bulwark_db_archived_index", "Last log index copied to the log archive.", [(node, archived)])?;
        out.gauges(
            "bulwark_db_archive_behind_entries",
            "Applied entries not archived yet (the log keeps them: purging waits for the archive).",
            [(node, s.applied.saturating_sub(archived))],
        )?;
        out.counters(
            "bulwark_db_archive_gaps",
            "Entries skipped by the archive (this node received a snapshot instead).",
            [(node, s.gaps)],
        )?;
        out.counters("bulwark_db_archive_failures", "Failed writes to the log archive.", [(node, s.failures)])
    }
}

/// The archive's current file, appended to.
struct Writer {
    dir: PathBuf,
    file: Option<File>,
    /// Bytes of the current file, all synced.
    len: u64,
    /// The last entry in the archive.
    last: Option<u64>,
}

impl Writer {
    /// Open the archive in `dir` (made if missing): the last file is cut
    /// at its last good record, an empty one removed.
    fn open(dir: &Path) -> io::Result<Writer> {
        std::fs::create_dir_all(dir)?;
        let mut w = Writer { dir: dir.to_path_buf(), file: None, len: 0, last: None };
        while let Some((_, path)) = archive_file::list(dir)?.pop() {
            let c = read_file(&path)?;
            let Some(last) = c.records.last() else {
                std::fs::remove_file(&path)?;
                sync_dir(dir)?;
                continue;
            };
            let f = OpenOptions::new().read(true).write(true).open(&path)?;
            if c.bad_bytes > 0 {
                tracing::warn!(file = %path.display(), bytes = c.bad_bytes, "log archive: cutting a torn record off");
                f.set_len(c.good_len)?;
                f.sync_all()?;
            }
            (w.file, w.len, w.last) = (Some(f), c.good_len, Some(last.index));
            break;
        }
        Ok(w)
    }

    /// Start the file whose first entry is `first`, durable with its name.
    fn roll(&mut self, first: u64) -> io::Result<()> {
        let path = self.dir.join(file_name(first));
        let mut f = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        f.write_all(header())?;
        f.sync_all()?;
        sync_dir(&self.dir)?;
        (self.file, self.len) = (Some(f), archive_file::HEADER);
        Ok(())
    }

    /// Write `buf` at the end of the current file and sync it.
    fn flush(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("no archive file open"))?;
        std::os::unix::fs::FileExt::write_all_at(f, buf, self.len)?;
        f.sync_data()?;
        self.len += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    /// Append `entries` (ascending) durably; one after a gap starts a file.
    fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let mut buf = Vec::new();
        for e in entries {
            let i = e.log_id.index;
            if self.last.is_some_and(|l| i <= l) {
                continue;
            }
            let gap = self.last.is_some_and(|l| i != l + 1);
            if self.file.is_none() || gap || self.len + buf.len() as u64 > ROLL_BYTES {
                self.flush(&mut buf)?;
                self.roll(i)?;
            }
            encode(&mut buf, e)?;
            self.last = Some(i);
        }
        self.flush(&mut buf)
    }
}

/// The log archive of a node.
pub struct Archive {
    dir: PathBuf,
    state: Arc<ArchiveState>,
    writer: Writer,
}

impl Archive {
    /// Open (or create) the archive in `dir`; a torn last record is cut off.
    pub fn open(dir: &Path) -> io::Result<Archive> {
        let writer = Writer::open(dir)?;
        let state = Arc::new(ArchiveState::default());
        state.update(|s| s.archived = writer.last);
        Ok(Archive { dir: dir.to_path_buf(), state, writer })
    }

    pub fn state(&self) -> Arc<ArchiveState> {
        self.state.clone()
    }

    /// For the log: purges go up to the last archived entry.
    pub fn purge_limit(&self) -> PurgeLimit {
        let state = self.state.clone();
        Arc::new(move || state.status().archived)
    }

    /// Archive, from entry `first` on (when the archive is empty: the
    /// first entry the log holds) every entry the database applies, read
    /// with `reader`, until the state machine is gone.
    pub async fn run<R: RaftLogReader<TypeConfig>>(
        self,
        first: u64,
        mut reader: R,
        mut applied: watch::Receiver<Applied>,
    ) {
        let Archive { dir, state, writer } = self;
        tracing::info!(dir = %dir.display(), archived = ?writer.last, "archiving the raft log");
        let mut writer = Some(writer);
        let mut next = state.status().archived.map_or(first, |a| a + 1);
        loop {
            let target = applied.borrow_and_update().index;
            state.update(|s| s.applied = target);
            if target < next {
                if applied.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let hi = target.min(next + BATCH - 1);
            let entries = match reader.try_get_log_entries(next..=hi).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("log archive: reading entries {next}..={hi}: {e}");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let got = entries.first().map(|e| e.log_id.index);
            if got != Some(next) {
                // Not in this node's log: it received a snapshot instead.
                let upto = got.map_or(hi, |g| g - 1);
                tracing::warn!(from = next, to = upto, "log archive: entries missing from this node's log (a snapshot replaced them): a gap in the archive");
                state.update(|s| {
                    s.gaps += 1;
                    s.archived = Some(upto);
                });
                next = upto + 1;
                continue;
            }
            let last = entries.last().map_or(next, |e| e.log_id.index);
            let count = entries.len() as u64;
            let w = match writer.take() {
                Some(w) => Ok(w),
                None => Writer::open(&dir),
            };
            let written = match w {
                Ok(mut w) => tokio::task::spawn_blocking(move || w.append(&entries).map(|_| w))
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e.to_string()))),
                Err(e) => Err(e),
            };
            match written {
                Ok(w) => {
                    writer = Some(w);
                    state.update(|s| s.archived = Some(last));
                    next = last + 1;
                    if count < BATCH {
                        tokio::time::sleep(PACE).await;
                    }
                }
                Err(e) => {
                    // Opened again (cutting a torn record) before the next try.
                    tracing::error!(dir = %dir.display(), "log archive: writing entries {next}..={last}: {e}; the log keeps them until it works");
                    state.update(|s| s.failures += 1);
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// A node's archive, opened, waiting for its state machine (see [`start_for`]).
pub(crate) struct Pending {
    archive: Archive,
    reader: bulwark_db_log::LogReader,
    first: u64,
}

impl Pending {
    /// Start archiving what the database applies (`applied`); answers the
    /// state for `/metrics`.
    pub(crate) fn run(self, applied: watch::Receiver<Applied>) -> Arc<ArchiveState> {
        let state = self.archive.state();
        tokio::spawn(self.archive.run(self.first, self.reader, applied));
        state
    }
}

/// Open the archive in `dir` (if any) for the node whose log is `log`:
/// the log's purges are held back to what it has archived from now on.
pub(crate) async fn start_for(
    log: &mut bulwark_db_log::LogStore,
    dir: Option<&Path>,
) -> Result<Option<Pending>, crate::DbError> {
    use openraft::storage::RaftLogStorage;
    let Some(dir) = dir else { return Ok(None) };
    let archive = Archive::open(dir).map_err(|source| crate::DbError::Archive { path: dir.to_path_buf(), source })?;
    log.limit_purges(archive.purge_limit());
    let state = log.get_log_state().await.map_err(|e| crate::DbError::LogState(Box::new(e)))?;
    let first = state.last_purged_log_id.map_or(0, |p| p.index + 1);
    let reader = log.get_log_reader().await;
    Ok(Some(Pending { archive, reader, first }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_db_api::raft_types::{Write, WriteBatch};
    use bulwark_db_api::Statement;
    use std::io::Write as _;

    fn entry(index: u64) -> Entry {
        let batch = WriteBatch {
            writes: vec![Write { statements: vec![Statement::new("SELECT 1")], request_id: None }],
            time_ms: 1000 + index,
        };
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(2, 1), index),
            payload: openraft::EntryPayload::Normal(batch),
        }
    }

    fn indexes(dir: &Path) -> Vec<Vec<u64>> {
        archive_file::list(dir)
            .unwrap()
            .iter()
            .map(|(_, p)| read_file(p).unwrap().records.iter().map(|r| r.index).collect())
            .collect()
    }

    /// Up to `deadline` for `cond`.
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn the_log_purges_only_what_the_archive_holds() {
        use bulwark_db_log::LogStore;
        use openraft::storage::RaftLogStorage;
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("archive");
        let mut log = LogStore::open(data.path(), 1).unwrap();
        bulwark_db_log::test_hooks::append(&mut log, (0..10).map(entry)).await;
        let pending = start_for(&mut log, Some(&dir)).await.unwrap().unwrap();
        let mut reader = log.get_log_reader().await;
        let present = |r: &mut bulwark_db_log::LogReader| {
            let mut r = r.clone();
            async move { r.try_get_log_entries(0..10).await.unwrap().iter().map(|e| e.log_id.index).collect::<Vec<_>>() }
        };
        // Nothing archived yet: a purge removes nothing.
        log.purge(entry(5).log_id).await.unwrap();
        assert_eq!(present(&mut reader).await, (0..10).collect::<Vec<_>>());
        let (applied, watch) = watch::channel(Applied::default());
        let state = pending.run(watch);
        applied.send_replace(Applied { index: 3, term: 2, time_ms: 0 });
        eventually("entries 0..=3 archived", || state.status().archived == Some(3)).await;
        // Only up to the archived entry.
        log.purge(entry(5).log_id).await.unwrap();
        assert_eq!(present(&mut reader).await, (4..10).collect::<Vec<_>>());
        applied.send_replace(Applied { index: 9, term: 2, time_ms: 0 });
        eventually("entries 0..=9 archived", || state.status().archived == Some(9)).await;
        log.purge(entry(5).log_id).await.unwrap();
        assert_eq!(present(&mut reader).await, (6..10).collect::<Vec<_>>());
        assert_eq!(indexes(&dir), vec![(0..10).collect::<Vec<_>>()]);
        let text = bulwark_telemetry::metrics::render(vec![bulwark_telemetry::metrics::from_fn(move |out| {
            state.encode_metrics("1", out)
        })]);
        assert!(text.contains("\nbulwark_db_archived_index{node=\"1\"} 9\n"), "{text}");
        assert!(text.contains("\nbulwark_db_archive_behind_entries{node=\"1\"} 0\n"), "{text}");
        assert!(text.contains("\nbulwark_db_archive_gaps_total{node=\"1\"} 0\n"), "{text}");
        assert!(text.contains("# TYPE bulwark_db_archive_failures counter\n"), "{text}");
    }

    #[test]
    fn a_gap_starts_a_file_and_a_reopened_archive_goes_on_after_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Writer::open(d.path()).unwrap();
        w.append(&[entry(5), entry(6)]).unwrap();
        w.append(&[entry(6), entry(7), entry(10)]).unwrap();
        assert_eq!(indexes(d.path()), vec![vec![5, 6, 7], vec![10]]);
        drop(w);
        // A torn record at the end of the last file.
        let (_, last) = archive_file::list(d.path()).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let a = Archive::open(d.path()).unwrap();
        assert_eq!(a.state().status().archived, Some(10));
        assert_eq!((a.purge_limit())(), Some(10));
        let mut w = a.writer;
        w.append(&[entry(11)]).unwrap();
        assert_eq!(indexes(d.path()), vec![vec![5, 6, 7], vec![10, 11]]);
        assert_eq!(read_file(&last).unwrap().bad_bytes, 0);
    }
}
