//! The entries this node appends, read ahead by replication.
use super::index::{lock, Shared};
use bulwark_db_api::raft_types::{Entry, LogId};
use std::sync::Arc;

/// The entries this node appends, as the writer writes them: readable
/// once written to the file (before they are synced), for replication that
/// sends a primary's new entries ahead of openraft's own append-entries
/// (see `transport` in `bulwark-db`). Never an entry merely handed to `append`: one that
/// only another node has would be lost with this process, and a restart
/// could append different content under the same log id.
#[derive(Clone)]
pub struct AppendedEntries {
    pub(super) shared: Arc<Shared>,
}

impl AppendedEntries {
    /// The last log id written, changed after every write (appends and
    /// truncates).
    pub fn watch_written(&self) -> tokio::sync::watch::Receiver<Option<LogId>> {
        self.shared.written.subscribe()
    }

    /// Bytes of the entries in the log (records as written to the
    /// segments): those found after the purge point when the log was
    /// opened, plus every one appended since (a count that only grows).
    pub fn bytes(&self) -> u64 {
        self.shared.appended_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Up to `max` written entries right after index `prev` that are
    /// still in memory (in order, without gaps; empty when the one after
    /// `prev` is not, or is not written yet).
    pub fn after(&self, prev: u64, max: usize) -> Vec<Entry> {
        let recent = lock(&self.shared.recent);
        let mut out = Vec::new();
        for (i, e) in recent.entries.range(prev.saturating_add(1)..) {
            if out.len() == max || *i != prev + 1 + out.len() as u64 || !e.1 {
                break;
            }
            out.push((*e.2).clone());
        }
        out
    }
}
