//! The database's checkpoint thread: copying the WAL into the database
//! file off the apply path (see [`start_checkpointer`]).
use super::{Shared, SyncMode};
use rusqlite::Connection;
use std::path::PathBuf;

/// How often the checkpointer copies the WAL into the database file (the
/// WAL grows by a few tens of MB per second at full write load).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(1000);
/// WAL frames (pages) past which the checkpointer truncates the WAL file
/// (~256 MiB with 4 KiB pages). Below it the file keeps its size and is
/// written again from its start, which needs no new blocks; at full load
/// one second of writes is ~20,000 frames here (a lower limit of 16,384
/// truncated it at every checkpoint).
pub(super) const WAL_TRUNCATE_FRAMES: i64 = 65_536;

/// The database's checkpoint thread. Every [`CHECKPOINT_EVERY`] it copies
/// the WAL into the database file with a `PASSIVE` checkpoint from a
/// connection of its own, which never blocks the writer. The writer commits
/// meanwhile, so that checkpoint ends a few frames short and SQLite could
/// never start the WAL over; so it then holds the writer (applies wait off
/// the runtime thread, see `apply`) for a second checkpoint of just those
/// frames, after which the next commit writes from the start of the WAL
/// again. A WAL that still grew past `truncate_frames` (a long read kept it)
/// is truncated. The thread ends with the state machine.
pub(super) fn start_checkpointer(
    shared: std::sync::Weak<Shared>,
    path: PathBuf,
    sync: SyncMode,
    stopped: std::sync::mpsc::Receiver<()>,
    truncate_frames: i64,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    fn checkpoint(c: &Connection, mode: &str) -> rusqlite::Result<(i64, i64)> {
        c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(1)?, r.get(2)?)))
    }
    std::thread::Builder::new().name("db-checkpoint".into()).spawn(move || {
        let own = match Connection::open(&path)
            .and_then(|c| c.pragma_update(None, "synchronous", sync.pragma()).map(|_| c))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("checkpointer: opening {}: {e}", path.display());
                return;
            }
        };
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
            let Some(shared) = shared.upgrade() else { return };
            let result = checkpoint(&own, "PASSIVE").and_then(|(frames, copied)| {
                if frames == 0 || (frames == copied && frames <= truncate_frames) {
                    return Ok(());
                }
                let writer = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
                let (frames, _) = checkpoint(&writer, "PASSIVE")?;
                if frames > truncate_frames {
                    checkpoint(&writer, "TRUNCATE")?;
                }
                Ok(())
            });
            if let Err(e) = result {
                tracing::warn!("checkpoint: {e}");
            }
        }
    })
}
