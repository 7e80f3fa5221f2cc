//! Small helpers for files that must survive a crash of the machine.
use std::path::Path;

/// fsync the file at `path` (data and metadata).
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// fsync the directory `dir` (its entries: creations, renames, removals).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `r`, with a file that does not exist counting as success.
pub(crate) fn unless_missing(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
