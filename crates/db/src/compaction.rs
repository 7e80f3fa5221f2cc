//! When a node compacts its Raft log: by size, not by count (see
//! [`snapshot_by_size`]). Must not touch: the log's files or the
//! snapshot's making (openraft and `bulwark-db-sm` own them).
use bulwark_db_api::raft_types::Raft;
use bulwark_db_log::AppendedEntries;
use std::time::Duration;

/// Snapshot (and so compact the log) once the log appended since the last
/// snapshot is larger than both `min_bytes` and the database file. A
/// snapshot copies the whole database, so taking one every N entries, as
/// openraft's policy does, costs more and more as the database grows (under
/// load, a copy of the whole database every few seconds); by size, the copy
/// is never larger than the log it replaces. Checked once a second; ends
/// when Raft stops. The log on disk when the node starts counts.
pub(crate) async fn snapshot_by_size(raft: Raft, log: AppendedEntries, db: std::path::PathBuf, min_bytes: u64) {
    let mut metrics = raft.metrics();
    let mut seen = metrics.borrow().snapshot;
    // The log found on disk at the start counts too (all of it after the
    // last purge, so up to the entries kept after the last snapshot more).
    let mut base = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if metrics.has_changed().is_err() {
            return;
        }
        let snapshot = metrics.borrow_and_update().snapshot;
        if snapshot != seen {
            // A snapshot was made (or installed from the primary).
            seen = snapshot;
            base = log.bytes();
            continue;
        }
        let db_bytes = tokio::fs::metadata(&db).await.map(|m| m.len()).unwrap_or(0);
        let since = log.bytes().saturating_sub(base);
        if since > min_bytes.max(db_bytes) {
            tracing::info!(log_bytes = since, db_bytes, "snapshot: the log since the last one outgrew the database");
            base = log.bytes();
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
    }
}
