//! Files and directories only their owner may read: the data directory
//! holds the database, the cluster secret, the admin token, the TLS key
//! and the logs (which name clients and paths), so none of it is for other
//! users of the machine. Modes are set explicitly, whatever the umask, and
//! tightened on files and directories left from an earlier run.
use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory `up` and the roles create for their state.
pub const DIR_MODE: u32 = 0o700;
/// Mode of logs, secrets, tokens, keys and the control socket.
pub const FILE_MODE: u32 = 0o600;

/// Create `dir` (and missing parents, also 0700) or tighten it to 0700.
/// A shared directory such as `/tmp` (writable by everyone, or sticky) is
/// refused rather than locked up: state needs a directory of its own.
pub fn dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    if std::fs::metadata(dir)?.mode() & 0o1002 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is shared with every user of this machine: give bulwark a directory of its own", dir.display()),
        ));
    }
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Set an existing file to 0600.
pub fn tighten(file: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(file, Permissions::from_mode(FILE_MODE))
}

/// Open a log for appending, created 0600 (an existing one is tightened).
pub fn open_log(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new().create(true).append(true).mode(FILE_MODE).open(path)?;
    f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Write `content()` to a new 0600 file at `path`; an existing file keeps
/// its content and is tightened to 0600.
pub fn ensure_file(path: &Path, content: impl FnOnce() -> String) -> std::io::Result<()> {
    match OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path) {
        Ok(mut f) => f.write_all(content().as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => tighten(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn creates_private_and_tightens_what_exists() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        dir(&d).unwrap();
        assert_eq!((mode(&t.path().join("a")), mode(&d)), (0o700, 0o700));
        std::fs::set_permissions(&d, Permissions::from_mode(0o755)).unwrap();
        dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        let shared = t.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, Permissions::from_mode(0o1777)).unwrap();
        assert!(dir(&shared).unwrap_err().to_string().contains("shared with every user"));
        assert_eq!(mode(&shared), 0o777, "left as it was");

        let secret = d.join("secret");
        ensure_file(&secret, || "s3cret".into()).unwrap();
        assert_eq!(mode(&secret), 0o600);
        std::fs::set_permissions(&secret, Permissions::from_mode(0o644)).unwrap();
        ensure_file(&secret, || unreachable!("an existing file is kept")).unwrap();
        assert_eq!((mode(&secret), std::fs::read_to_string(&secret).unwrap().as_str()), (0o600, "s3cret"));

        let log = d.join("x.log");
        std::fs::write(&log, "old\n").unwrap();
        std::fs::set_permissions(&log, Permissions::from_mode(0o644)).unwrap();
        open_log(&log).unwrap().write_all(b"new\n").unwrap();
        assert_eq!((mode(&log), std::fs::read_to_string(&log).unwrap().as_str()), (0o600, "old\nnew\n"));
    }
}
