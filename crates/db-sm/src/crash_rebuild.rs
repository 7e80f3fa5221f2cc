//! `data.boot` and the rebuild of the database after a crash of the
//! machine.
//!
//! SQLite never syncs (see `state_machine`): its writes reach the page
//! cache, which survives kill -9 of the process but not a crash or power
//! loss of the machine. The file `data.boot` tells the two apart. It says
//! `running <boot id>` (the kernel's `/proc/sys/kernel/random/boot_id`)
//! from the moment the database is opened, and `clean` once the state
//! machine has closed it and fsynced it. Opening a database whose
//! `data.boot` says `running` with another boot id, or anything else it
//! never writes, means the machine may have gone down while writes were
//! not on disk: the database and its WAL are replaced by a copy of the
//! last snapshot (or removed, when there is none; the log is then whole)
//! and openraft applies the log from the snapshot's index again, as it
//! does on any restart.
//!
//! Owns: `data.boot` and the rebuild. Must not touch: the database while it
//! is open.
use crate::durable::{sync_dir, sync_file, unless_missing};
use crate::snapshot_file;
use std::path::Path;

/// The file saying whether the database may hold writes that are not on
/// disk (see the module doc).
pub(crate) const BOOT_FILE: &str = "data.boot";
const BOOT_FILE_TMP: &str = "data.boot.tmp";

/// This boot of the machine, if the kernel says.
pub(crate) fn current_boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// Whether the database in `dir` must be rebuilt when opened on boot
/// `boot`: `data.boot` says it was open on another boot, or says something
/// else than it ever writes (rebuilding is always safe). No file: a new
/// database, or one from before the file existed, which synced its
/// checkpoints.
pub(crate) fn crashed_since(dir: &Path, boot: &str) -> std::io::Result<bool> {
    match std::fs::read_to_string(dir.join(BOOT_FILE)) {
        Ok(s) => Ok(match s.trim() {
            "clean" => false,
            s => s.strip_prefix("running ").is_none_or(|was| was.trim() != boot),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replace `data.boot` durably with `content`.
pub(crate) fn write_boot_file(dir: &Path, content: &str) -> std::io::Result<()> {
    let tmp = dir.join(BOOT_FILE_TMP);
    std::fs::write(&tmp, format!("{content}\n"))?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, dir.join(BOOT_FILE))?;
    sync_dir(dir)
}

/// After a crash of the machine while the database was open: replace it
/// (and its WAL) with the last snapshot, or remove it when there is none.
/// The copy is made beside it and renamed over it, so a crash in between
/// leaves either database, and `data.boot` still asks for the rebuild.
pub(crate) fn rebuild_from_snapshot(dir: &Path) -> std::io::Result<()> {
    for name in ["data.db-wal", "data.db-shm"] {
        unless_missing(std::fs::remove_file(dir.join(name)))?;
    }
    match snapshot_file::current_path(dir).map_err(std::io::Error::other)? {
        Some(snapshot) => {
            let holds = snapshot_file::state_of(&snapshot).map_err(std::io::Error::other)?;
            let tmp = dir.join("data.rebuild.db");
            std::fs::copy(&snapshot, &tmp)?;
            sync_file(&tmp)?;
            std::fs::rename(&tmp, dir.join("data.db"))?;
            tracing::warn!(snapshot = ?holds.last, "the machine restarted while the database was open: rebuilt it from the last snapshot; the log is applied again from there");
        }
        None => {
            unless_missing(std::fs::remove_file(dir.join("data.db")))?;
            tracing::warn!("the machine restarted while the database was open: removed it (no snapshot yet); the whole log is applied again");
        }
    }
    sync_dir(dir)
}
