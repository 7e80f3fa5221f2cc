//! The leader lease a node ran with, remembered across restarts.
//!
//! A replica refuses to vote for another primary for its lease after it
//! last heard the primary, and the primary counts its acceptance for that
//! long (`leader_acks`). openraft 0.9 starts the lease again at a node's
//! start, but with the lease of the new run: a node restarted with a
//! shorter `election_timeout` would vote (or campaign) sooner than the
//! primary still counts the acceptance it gave before the restart. So the
//! node keeps the longest lease that may still bind it in its data dir
//! (`lease-ms`), and a run whose own lease is shorter refuses votes and
//! does not campaign until its start plus that lease; then it records its
//! own. A data dir without the file (a new node, or one of an earlier
//! version) holds nothing back.
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

const FILE: &str = "lease-ms";

/// A recorded lease longer than this is not one a node ran with (the
/// configuration refuses election timeouts over 60 s): it is ignored.
const LONGEST: Duration = Duration::from_secs(3600);

/// What this run must do about the previous run's lease.
#[derive(Debug, PartialEq)]
pub(crate) enum LeaseHold {
    /// Nothing: the previous lease was not longer than this run's (which
    /// is now recorded).
    None,
    /// Refuse votes and do not campaign until then, and record this run's
    /// lease only after (see [`record`]).
    Until(Instant),
}

/// Read the previous run's lease from `data_dir` and decide, for a run
/// with `lease` that started at `started`.
pub(crate) fn at_start(data_dir: &Path, lease: Duration, started: Instant) -> io::Result<LeaseHold> {
    let previous = match std::fs::read_to_string(data_dir.join(FILE)) {
        Ok(text) => text.trim().parse::<u64>().ok().map(Duration::from_millis).filter(|p| *p <= LONGEST),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    match previous {
        Some(p) if p > lease => Ok(LeaseHold::Until(started + p)),
        // Already recorded: nothing to write (a full disk or a read-only
        // data dir does not stop a node whose lease did not change).
        Some(p) if p == lease => Ok(LeaseHold::None),
        _ => record(data_dir, lease).map(|()| LeaseHold::None),
    }
}

/// Record `lease` as the one that binds this node, durably (written to a
/// new file, synced, renamed over the old one, the directory synced):
/// before the node accepts anything under it.
pub(crate) fn record(data_dir: &Path, lease: Duration) -> io::Result<()> {
    let tmp = data_dir.join(format!("{FILE}.new"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(lease.as_millis().to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(FILE))?;
    std::fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_lease_waits_out_the_longer_one_before_it_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let (long, short) = (Duration::from_millis(2400), Duration::from_millis(480));
        assert_eq!(at_start(dir.path(), long, now).unwrap(), LeaseHold::None, "a new data dir");
        assert_eq!(at_start(dir.path(), long, now).unwrap(), LeaseHold::None, "the same lease again");
        assert_eq!(at_start(dir.path(), short, now).unwrap(), LeaseHold::Until(now + long));
        // Until the hold ends the longer lease stays recorded: a run that
        // crashes meanwhile holds again at its next start.
        let later = now + Duration::from_secs(1);
        assert_eq!(at_start(dir.path(), short, later).unwrap(), LeaseHold::Until(later + long));
        record(dir.path(), short).unwrap();
        assert_eq!(at_start(dir.path(), short, later).unwrap(), LeaseHold::None);
        assert_eq!(at_start(dir.path(), long, later).unwrap(), LeaseHold::None, "a longer lease holds nothing");
        std::fs::write(dir.path().join(FILE), "garbage").unwrap();
        assert_eq!(at_start(dir.path(), short, later).unwrap(), LeaseHold::None);
        std::fs::write(dir.path().join(FILE), u64::MAX.to_string()).unwrap();
        assert_eq!(at_start(dir.path(), short, later).unwrap(), LeaseHold::None, "no lease is that long");
        // The same lease again writes nothing (a full disk or a read-only
        // data dir does not matter then): the file is the same one.
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(dir.path().join(FILE)).unwrap().ino();
        assert_eq!(at_start(dir.path(), short, later).unwrap(), LeaseHold::None);
        assert_eq!(std::fs::metadata(dir.path().join(FILE)).unwrap().ino(), inode, "rewritten");
    }
}
