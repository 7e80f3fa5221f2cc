//! Hooks for tests of the node (the `test-hooks` feature): holding a
//! node's applies, as a replica whose database falls behind would. Not
//! part of a normal build.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Holds the applies of the state machine in one data dir: committed
/// entries wait before they reach SQLite until released. The wait is
/// asynchronous: the node's runtime (appends, heartbeats, reads) goes on.
pub struct ApplyGate {
    dir: PathBuf,
    open: watch::Sender<bool>,
}

static GATES: Mutex<Vec<(PathBuf, watch::Receiver<bool>)>> = Mutex::new(Vec::new());

fn gates() -> std::sync::MutexGuard<'static, Vec<(PathBuf, watch::Receiver<bool>)>> {
    GATES.lock().unwrap_or_else(|p| p.into_inner())
}

impl ApplyGate {
    /// Hold every apply of the state machine in `data_dir` from now on.
    pub fn hold(data_dir: &Path) -> Arc<ApplyGate> {
        let (open, rx) = watch::channel(false);
        gates().push((data_dir.to_path_buf(), rx));
        Arc::new(ApplyGate { dir: data_dir.to_path_buf(), open })
    }

    /// Let the held applies and every later one go.
    pub fn release(&self) {
        let _ = self.open.send(true);
        gates().retain(|(d, _)| d != &self.dir);
    }
}

impl Drop for ApplyGate {
    fn drop(&mut self) {
        self.release();
    }
}

/// Called by the state machine before it applies a batch of entries.
pub(crate) async fn before_apply(dir: &Path) {
    let gate = gates().iter().find(|(d, _)| dir.starts_with(d)).map(|(_, rx)| rx.clone());
    if let Some(mut rx) = gate {
        let _ = rx.wait_for(|open| *open).await;
    }
}
