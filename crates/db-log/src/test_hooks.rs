//! Hooks for tests of this crate and of the node (the `test-hooks`
//! feature): holding a log's syncs as a stalled disk would, and appending
//! until durable. Not part of a normal build.
use crate::index::lock;
use crate::meta::DIR;
use crate::store::LogStore;
use crate::writer::Done;
use bulwark_db_api::raft_types::Entry;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// Holds the syncs of one log (a disk that stalls): the writer has
/// written its batch (`pwrite`) and waits before `fdatasync` until
/// released.
pub struct SyncGate {
    dir: PathBuf,
    closed: Mutex<bool>,
    opened: Condvar,
    /// Syncs that waited here.
    pub held: std::sync::atomic::AtomicUsize,
}

static GATES: Mutex<Vec<Arc<SyncGate>>> = Mutex::new(Vec::new());

impl SyncGate {
    /// Hold every sync of the log in `data_dir` from now on.
    pub fn hold(data_dir: &Path) -> Arc<SyncGate> {
        let gate = Arc::new(SyncGate {
            dir: data_dir.join(DIR),
            closed: Mutex::new(true),
            opened: Condvar::new(),
            held: Default::default(),
        });
        lock(&GATES).push(gate.clone());
        gate
    }

    /// Let the held syncs and every later one go.
    pub fn release(&self) {
        *lock(&self.closed) = false;
        self.opened.notify_all();
        lock(&GATES).retain(|g| g.dir != self.dir);
    }
}

/// Called by the writer between its `pwrite` and its `fdatasync`.
pub(crate) fn before_sync(dir: &Path) {
    let Some(gate) = lock(&GATES).iter().find(|g| g.dir == dir).cloned() else { return };
    let mut closed = lock(&gate.closed);
    if *closed {
        gate.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    while *closed {
        closed = gate.opened.wait(closed).unwrap_or_else(|p| p.into_inner());
    }
}

/// Append and wait until durable (openraft's `LogFlushed` cannot be
/// built outside openraft).
pub async fn append(s: &mut LogStore, entries: impl IntoIterator<Item = Entry>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.append_entries(entries.into_iter().collect(), Done::Wake(tx)).unwrap();
    rx.await.unwrap().unwrap();
}
