//! What the log holds in memory, shared by the store, the writer and the
//! readers.
//!
//! # Memory
//!
//! The entries not yet written and the newest `RECENT` written ones are
//! kept decoded, so replication of followers that keep up reads them
//! without a thread or the file; older ones are read (`pread`) on a
//! blocking thread through an in-memory index (index -> segment, offset),
//! ~48 bytes per entry in the log.
use bulwark_db_api::raft_types::{Entry, LogId};
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};

/// Written entries kept decoded in memory.
pub(super) const RECENT: usize = 4096;

/// Where an entry is on disk.
#[derive(Debug, Clone, Copy)]
pub(super) struct Loc {
    pub(super) log_id: LogId,
    pub(super) seg: u64,
    /// Offset of the record (its header) in the segment.
    pub(super) off: u64,
    /// Whole record, header included.
    pub(super) len: u32,
}

/// The on-disk index: the entries in the files, contiguous from `first`.
#[derive(Default)]
pub(super) struct Locs {
    pub(super) first: u64,
    pub(super) v: VecDeque<Loc>,
}

impl Locs {
    pub(super) fn end(&self) -> u64 {
        self.first + self.v.len() as u64
    }

    pub(super) fn get(&self, index: u64) -> Option<&Loc> {
        index.checked_sub(self.first).and_then(|i| self.v.get(i as usize))
    }

    /// An entry record: it replaces the entry at its index and all after.
    pub(super) fn push(&mut self, loc: Loc) {
        let i = loc.log_id.index;
        if self.v.is_empty() || i < self.first || i > self.end() {
            // A first entry, or one after a purge past the end.
            self.v.clear();
            self.first = i;
        } else if i < self.end() {
            self.v.truncate((i - self.first) as usize);
        }
        self.v.push_back(loc);
    }

    /// Remove the entries from `index` on.
    pub(super) fn truncate(&mut self, index: u64) {
        if index <= self.first {
            self.v.clear();
        } else {
            self.v.truncate((index - self.first) as usize);
        }
    }

    /// Remove the entries up to `index`.
    pub(super) fn purge(&mut self, index: u64) {
        while self.v.front().is_some_and(|l| l.log_id.index <= index) {
            self.v.pop_front();
            self.first += 1;
        }
    }
}

pub(super) struct Segment {
    pub(super) file: Arc<File>,
    /// Highest entry index ever written to it.
    pub(super) max: Option<u64>,
}

/// The newest entries, decoded: every entry handed to `append` that the
/// writer has not written yet, plus the last [`RECENT`] written ones.
#[derive(Default)]
pub(super) struct Recent {
    /// index -> (append sequence number, written, entry). A contiguous
    /// suffix of the log.
    pub(super) entries: BTreeMap<u64, (u64, bool, Arc<Entry>)>,
}

pub(super) struct Shared {
    pub(super) locs: Mutex<Locs>,
    pub(super) segs: Mutex<BTreeMap<u64, Segment>>,
    pub(super) recent: Mutex<Recent>,
    /// The last log id of the log as the writer has written it (`pwrite`
    /// done, not necessarily synced yet).
    pub(super) written: tokio::sync::watch::Sender<Option<LogId>>,
    /// See [`AppendedEntries::bytes`](super::AppendedEntries::bytes).
    pub(super) appended_bytes: std::sync::atomic::AtomicU64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
