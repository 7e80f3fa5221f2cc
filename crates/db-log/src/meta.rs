//! The file `meta`: the vote and the last purged log id, replaced
//! atomically.
use super::record::invalid;
use super::segment::sync_dir;
use bulwark_db_api::raft_types::{LogId, Vote};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::path::Path;

/// The log's directory in the data dir.
pub(super) const DIR: &str = "raft-log";
pub(super) const META: &str = "meta";
pub(super) const META_TMP: &str = "meta.tmp";
pub(super) const LOCK: &str = "LOCK";

/// The vote and the purge point, in `meta`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) vote: Option<Vote>,
    pub(super) purged: Option<LogId>,
}

pub(super) fn read_meta(dir: &Path) -> io::Result<Meta> {
    match std::fs::read(dir.join(META)) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| invalid(format!("{}: {e}", dir.join(META).display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Meta::default()),
        Err(e) => Err(e),
    }
}

pub(super) fn write_meta(dir: &Path, meta: &Meta) -> io::Result<()> {
    let tmp = dir.join(META_TMP);
    let mut f = File::create(&tmp)?;
    io::Write::write_all(&mut f, &serde_json::to_vec(meta).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(META))?;
    sync_dir(dir)
}
