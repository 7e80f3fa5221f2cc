//! The releases of the user's program under the role's `release_dir`, as
//! `bulwark deploy` rolls them:
//!
//! ```text
//! <release_dir>/releases/<id>/   one copy per release, id = <name>-<digest>
//! <release_dir>/current          → the release the program runs
//! <release_dir>/previous         → the one before (`deploy --rollback`)
//! ```
//!
//! A release is a directory the operator has on this host (the same path
//! on every host); the role copies it under `releases/` (to a temporary
//! name, then renamed, so a half copy is never a release) and checks it
//! against the digest `deploy` computed where it ran: the same bytes run
//! everywhere. The digest covers every file's relative path, whether it is
//! executable, and its content (SHA-256), not the other mode bits: a copy
//! made under another umask is the same release. Symbolic links are
//! refused (a release is plain files).
//!
//! The copies get fixed modes, whatever the source's: directories and
//! executables 0750, other files 0640, owned by the role's user. When the
//! program runs as another `user` ([`Releases::readable_by`]), their group
//! is that user's primary group, so the program can read its release and
//! cannot change it (nor any other release); the release directory itself
//! must then lie where that user can reach it, outside the data directory
//! (see `[app] release_root`).
//!
//! `program.workdir` is the release called `initial`; `current` points to
//! it until the first deploy ([`Releases::prepare`]). The web tier serves
//! the site's static files through `current`, so they follow the release
//! the program runs. The links survive restarts of the role: a deployed
//! release stays deployed.
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The name of the release that is `program.workdir` itself.
pub const INITIAL: &str = "initial";

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError::Io { path: path.to_path_buf(), source }
}

/// SHA-256 over the tree under `dir`: each regular file's relative path,
/// whether it is executable, and its bytes, in path order. Hex.
pub fn digest(dir: &Path) -> Result<String, ReleaseError> {
    let mut files = Vec::new();
    walk(dir, Path::new(""), &mut files)?;
    files.sort();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for rel in files {
        let path = dir.join(&rel);
        let meta = std::fs::metadata(&path).map_err(io(&path))?;
        ctx.update(rel.to_string_lossy().as_bytes());
        ctx.update(&[0]);
        ctx.update(&[u8::from(is_executable(&meta))]);
        ctx.update(&meta.len().to_le_bytes());
        let mut f = std::fs::File::open(&path).map_err(io(&path))?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = f.read(&mut buf).map_err(io(&path))?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
    }
    Ok(ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

/// Mode of a release's directories and executable files.
const DIR_MODE: u32 = 0o750;
/// Mode of a release's other files.
const FILE_MODE: u32 = 0o640;

/// Every regular file under `dir` (relative paths); refuses links and
/// special files.
fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReleaseError> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let entry = entry.map_err(io(&dir))?;
        let kind = entry.file_type().map_err(io(&entry.path()))?;
        let rel = rel.join(entry.file_name());
        if kind.is_dir() {
            walk(root, &rel, out)?;
        } else if kind.is_file() {
            out.push(rel);
        } else {
            return Err(ReleaseError::Invalid(format!(
                "{}: a release holds only directories and regular files (no links)",
                root.join(rel).display()
            )));
        }
    }
    Ok(())
}

/// The id of release directory `src` with `digest`: its name and the
/// digest's first 12 digits (`site-v2-1a2b3c4d5e6f`).
pub fn release_id(src: &Path, digest: &str) -> String {
    let name: String = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "release".into())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    let name = name.trim_start_matches('.');
    format!("{}-{}", if name.is_empty() { "release" } else { name }, &digest[..digest.len().min(12)])
}

fn valid_id(id: &str) -> bool {
    id == INITIAL
        || (!id.is_empty()
            && !id.starts_with('.')
            && id.len() <= 200
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// One app's releases.
#[derive(Debug, Clone)]
pub struct Releases {
    dir: PathBuf,
    keep: usize,
    /// `program.workdir`: the `initial` release.
    initial: Option<PathBuf>,
    /// The group of the program's user, when it runs as another user: the
    /// release directory and the copies are readable by it.
    reader: Option<u32>,
}

impl Releases {
    pub fn new(dir: PathBuf, keep: usize, initial: Option<PathBuf>) -> Releases {
        Releases { dir, keep, initial, reader: None }
    }

    /// Releases a program running with group `gid` can read (and not write).
    pub fn readable_by(mut self, gid: u32) -> Releases {
        self.reader = Some(gid);
        self
    }

    /// The directory holding `releases/`, `current` and `previous`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Create the release directory and `releases/` (0750, group of the
    /// reader; a missing parent 0755) and point `current` at
    /// `program.workdir` unless it names a deployed release: until the
    /// first deploy, the link the web tier serves the static files through
    /// leads to the initial release.
    pub fn prepare(&self) -> Result<(), ReleaseError> {
        for d in [self.dir.clone(), self.store()] {
            match std::fs::create_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // A missing release root: created reachable by everyone
                    // (it lists the apps' names only), whatever the umask.
                    let parent = d.parent().unwrap_or(Path::new("/"));
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).map_err(io(parent))?;
                    std::fs::create_dir(&d).map_err(io(&d))?;
                }
                Err(e) => return Err(io(&d)(e)),
            }
            self.own(&d, DIR_MODE)?;
        }
        // Copies made for another user (`user` changed since) are handed
        // to this one, so that a rollback to them can run.
        if let Some(gid) = self.reader {
            let entries = std::fs::read_dir(self.store()).map_err(io(&self.store()))?;
            for e in entries.filter_map(Result::ok) {
                use std::os::unix::fs::MetadataExt;
                let stale = e.metadata().is_ok_and(|m| m.is_dir() && m.gid() != gid);
                if stale && !e.file_name().to_string_lossy().starts_with('.') {
                    regroup(&e.path(), gid)?;
                }
            }
        }
        let deployed = self.link_id("current").is_some_and(|id| id != INITIAL);
        match &self.initial {
            Some(initial) if !deployed && std::fs::read_link(self.link("current")).ok().as_ref() != Some(initial) => {
                self.set_link("current", initial)
            }
            _ => Ok(()),
        }
    }

    /// Give `path` `mode` and, with a reader, its group.
    fn own(&self, path: &Path, mode: u32) -> Result<(), ReleaseError> {
        if let Some(gid) = self.reader {
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
                .map_err(|e| io(path)(std::io::Error::from(e)))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
    }

    fn store(&self) -> PathBuf {
        self.dir.join("releases")
    }

    fn link(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The id a link points to (`None` when the link does not exist).
    fn link_id(&self, name: &str) -> Option<String> {
        let target = std::fs::read_link(self.link(name)).ok()?;
        if target.parent() == Some(self.store().as_path()) {
            target.file_name().map(|n| n.to_string_lossy().into_owned())
        } else {
            Some(INITIAL.into())
        }
    }

    /// The release the program runs.
    pub fn current(&self) -> String {
        self.link_id("current").unwrap_or_else(|| INITIAL.into())
    }

    /// The release before it, if any.
    pub fn previous(&self) -> Option<String> {
        self.link_id("previous")
    }

    /// The directory of release `id`.
    pub fn path_of(&self, id: &str) -> Result<Option<PathBuf>, ReleaseError> {
        if !valid_id(id) {
            return Err(ReleaseError::Invalid(format!("`{id}` is not a release id")));
        }
        if id == INITIAL {
            return Ok(self.initial.clone());
        }
        let p = self.store().join(id);
        Ok(p.is_dir().then_some(p))
    }

    /// The working directory of the program's next start.
    pub fn current_dir(&self) -> Option<PathBuf> {
        self.path_of(&self.current()).ok().flatten().or_else(|| self.initial.clone())
    }

    /// Copy `src` in as a release unless it is there, checking it has
    /// `digest` (as computed where `deploy` ran). Returns its id.
    pub fn import(&self, src: &Path, want: &str) -> Result<String, ReleaseError> {
        if !src.is_dir() {
            return Err(ReleaseError::Invalid(format!("{} is not a directory on this host", src.display())));
        }
        let id = release_id(src, want);
        let target = self.store().join(&id);
        if target.is_dir() {
            let have = digest(&target)?;
            if have != want {
                return Err(ReleaseError::Invalid(format!(
                    "{} was changed after it was copied in (digest {have}, expected {want}); remove it and deploy again",
                    target.display()
                )));
            }
            return Ok(id);
        }
        let have = digest(src)?;
        if have != want {
            return Err(ReleaseError::Invalid(format!(
                "{} differs from the release being deployed (digest {have}, expected {want}): copy the same files to every host",
                src.display()
            )));
        }
        let store = self.store();
        std::fs::create_dir_all(&store).map_err(io(&store))?;
        let tmp = store.join(format!(".incoming-{id}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        self.copy_tree(src, &tmp)?;
        if digest(&tmp)? != want {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(ReleaseError::Invalid(format!("{} changed while it was copied: deploy again", src.display())));
        }
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
        Ok(id)
    }

    /// Make `id` current and the current one previous. Returns the
    /// directory of `id`.
    pub fn switch(&self, id: &str) -> Result<PathBuf, ReleaseError> {
        let Some(dir) = self.path_of(id)? else {
            return Err(ReleaseError::Invalid(format!("no release `{id}` on this host")));
        };
        let current = self.current();
        if current != id {
            if let Some(old) = self.path_of(&current)? {
                self.set_link("previous", &old)?;
            }
        }
        self.set_link("current", &dir)?;
        Ok(dir)
    }

    /// Put back `current` and `previous` as they were (a failed switch).
    pub fn restore(&self, current: &str, previous: Option<&str>) -> Result<(), ReleaseError> {
        for (name, id) in [("current", Some(current)), ("previous", previous)] {
            match id.map(|id| self.path_of(id)).transpose()?.flatten() {
                Some(dir) => self.set_link(name, &dir)?,
                None => {
                    let _ = std::fs::remove_file(self.link(name));
                }
            }
        }
        Ok(())
    }

    /// Replace link `name` atomically (a new link renamed over it).
    fn set_link(&self, name: &str, target: &Path) -> Result<(), ReleaseError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let tmp = self.dir.join(format!(".{name}.new"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp).map_err(io(&tmp))?;
        std::fs::rename(&tmp, self.link(name)).map_err(io(&self.link(name)))
    }

    /// Remove the oldest releases beyond `keep`, never `current` or
    /// `previous`. Returns the ids removed.
    pub fn prune(&self) -> Vec<String> {
        let keep_ids = [Some(self.current()), self.previous()];
        let Ok(entries) = std::fs::read_dir(self.store()) else { return Vec::new() };
        let mut others: Vec<(std::time::SystemTime, String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| !keep_ids.iter().flatten().any(|k| *k == e.file_name().to_string_lossy()))
            .filter_map(|e| {
                Some((e.metadata().ok()?.modified().ok()?, e.file_name().to_string_lossy().into(), e.path()))
            })
            .collect();
        others.sort();
        let excess = others.len().saturating_sub(self.keep);
        let mut removed = Vec::new();
        for (_, id, path) in others.into_iter().take(excess) {
            if std::fs::remove_dir_all(&path).is_ok() {
                removed.push(id);
            }
        }
        removed
    }
}

/// Give every file and directory under `dir` (itself included) group `gid`.
fn regroup(dir: &Path, gid: u32) -> Result<(), ReleaseError> {
    let chgrp = |p: &Path| {
        nix::unistd::chown(p, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| io(p)(std::io::Error::from(e)))
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if entry.file_type().map_err(io(&entry.path()))?.is_dir() {
            regroup(&entry.path(), gid)?;
        } else {
            chgrp(&entry.path())?;
        }
    }
    chgrp(dir)
}

impl Releases {
    /// Copy the tree `src` to the new directory `dst`, with the modes and
    /// group of a release (see the module's documentation).
    fn copy_tree(&self, src: &Path, dst: &Path) -> Result<(), ReleaseError> {
        std::fs::create_dir(dst).map_err(io(dst))?;
        for entry in std::fs::read_dir(src).map_err(io(src))? {
            let entry = entry.map_err(io(src))?;
            let kind = entry.file_type().map_err(io(&entry.path()))?;
            let to = dst.join(entry.file_name());
            if kind.is_dir() {
                self.copy_tree(&entry.path(), &to)?;
            } else if kind.is_file() {
                std::fs::copy(entry.path(), &to).map_err(io(&to))?;
                let executable = is_executable(&std::fs::metadata(&to).map_err(io(&to))?);
                self.own(&to, if executable { DIR_MODE } else { FILE_MODE })?;
            } else {
                return Err(ReleaseError::Invalid(format!(
                    "{}: a release holds only directories and regular files (no links)",
                    entry.path().display()
                )));
            }
        }
        self.own(dst, DIR_MODE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(dir: &Path, name: &str, version: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.join("static")).unwrap();
        std::fs::write(p.join("VERSION"), version).unwrap();
        std::fs::write(p.join("static/a.css"), "a{}").unwrap();
        p
    }

    #[test]
    fn releases_are_copied_checked_switched_and_pruned() {
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let initial = release(src.path(), "site", "1");
        let r = Releases::new(home.path().join("app1"), 1, Some(initial.clone()));
        assert_eq!((r.current(), r.previous()), (INITIAL.to_string(), None));
        assert_eq!(r.current_dir(), Some(initial.clone()));

        let v2 = release(src.path(), "v2", "2");
        let d2 = digest(&v2).unwrap();
        assert_eq!(digest(&v2).unwrap(), d2, "stable");
        // A digest of other bytes is refused, nothing is copied.
        let wrong = digest(&initial).unwrap();
        assert!(r.import(&v2, &wrong).unwrap_err().to_string().contains("differs"));
        let id2 = r.import(&v2, &d2).unwrap();
        assert_eq!(id2, format!("v2-{}", &d2[..12]));
        assert_eq!(r.import(&v2, &d2).unwrap(), id2, "a second import finds it");
        let dir2 = r.switch(&id2).unwrap();
        assert_eq!(std::fs::read_to_string(dir2.join("VERSION")).unwrap(), "2");
        assert_eq!((r.current(), r.previous()), (id2.clone(), Some(INITIAL.to_string())));

        // Rolling back is switching to previous; it toggles.
        r.switch(INITIAL).unwrap();
        assert_eq!((r.current(), r.previous()), (INITIAL.to_string(), Some(id2.clone())));
        assert_eq!(r.current_dir(), Some(initial.clone()));
        r.restore(&id2, Some(INITIAL)).unwrap();
        assert_eq!((r.current(), r.previous()), (id2.clone(), Some(INITIAL.to_string())));

        // Two more releases with keep = 1: the oldest not current or previous goes.
        let v3 = release(src.path(), "v3", "3");
        let id3 = r.import(&v3, &digest(&v3).unwrap()).unwrap();
        r.switch(&id3).unwrap();
        let v4 = release(src.path(), "v4", "4");
        let id4 = r.import(&v4, &digest(&v4).unwrap()).unwrap();
        r.switch(&id4).unwrap();
        assert_eq!(r.prune(), Vec::<String>::new(), "keep 1 besides current and previous");
        let v5 = release(src.path(), "v5", "5");
        let id5 = r.import(&v5, &digest(&v5).unwrap()).unwrap();
        r.switch(&id5).unwrap();
        assert_eq!(r.prune(), vec![id2.clone()]);
        assert!(r.path_of(&id3).unwrap().is_some() && r.path_of(&id2).unwrap().is_none());

        // A modified copy is found; bad ids and links are refused.
        std::fs::write(r.path_of(&id5).unwrap().unwrap().join("VERSION"), "tampered").unwrap();
        assert!(r.import(&v5, &digest(&v5).unwrap()).unwrap_err().to_string().contains("changed"));
        assert!(r.switch("../etc").is_err());
        std::os::unix::fs::symlink("/etc/passwd", v5.join("link")).unwrap();
        assert!(digest(&v5).unwrap_err().to_string().contains("no links"));
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn copies_get_fixed_modes_and_the_digest_ignores_all_but_the_executable_bit() {
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let v1 = release(src.path(), "v1", "1");
        std::fs::write(v1.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(v1.join("run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(v1.join("VERSION"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(v1.join("static"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let d1 = digest(&v1).unwrap();
        // The same files under another umask are the same release ...
        std::fs::set_permissions(v1.join("VERSION"), std::fs::Permissions::from_mode(0o664)).unwrap();
        std::fs::set_permissions(v1.join("static"), std::fs::Permissions::from_mode(0o775)).unwrap();
        assert_eq!(digest(&v1).unwrap(), d1);
        // ... but not with a program that is no longer executable.
        std::fs::set_permissions(v1.join("run.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_ne!(digest(&v1).unwrap(), d1);
        std::fs::set_permissions(v1.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();

        let r = Releases::new(home.path().join("app1"), 5, Some(v1.clone()));
        let id = r.import(&v1, &d1).unwrap();
        let copy = r.path_of(&id).unwrap().unwrap();
        assert_eq!(
            [mode(&copy), mode(&copy.join("static")), mode(&copy.join("VERSION")), mode(&copy.join("run.sh"))],
            [0o750, 0o750, 0o640, 0o750]
        );
        assert_eq!(r.import(&v1, &d1).unwrap(), id, "the copy checks out");
    }

    #[test]
    fn prepare_points_current_at_the_initial_release_until_a_deploy() {
        use std::os::unix::fs::MetadataExt;
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let initial = release(src.path(), "site", "1");
        // The release root is created reachable; the app's directory is not
        // open to others.
        let dir = home.path().join("releases/app1");
        let gid = nix::unistd::getegid().as_raw();
        let r = Releases::new(dir.clone(), 5, Some(initial.clone())).readable_by(gid);
        r.prepare().unwrap();
        assert_eq!(
            (mode(&home.path().join("releases")), mode(&dir), mode(&dir.join("releases"))),
            (0o755, 0o750, 0o750)
        );
        assert_eq!(std::fs::metadata(&dir).unwrap().gid(), gid);
        assert_eq!(std::fs::read_link(dir.join("current")).unwrap(), initial);
        assert_eq!((r.current(), r.current_dir()), (INITIAL.to_string(), Some(initial.clone())));
        // A deployed release stays current across restarts ...
        let v2 = release(src.path(), "v2", "2");
        let id2 = r.import(&v2, &digest(&v2).unwrap()).unwrap();
        r.switch(&id2).unwrap();
        r.prepare().unwrap();
        assert_eq!(r.current(), id2);
        // Copies made for another group are handed to the reader's (the
        // program's `user` changed: root changes the group).
        assert!(nix::unistd::geteuid().is_root(), "this test changes groups: run it as root");
        let other = crate::program::lookup_user("nobody").unwrap().1;
        let r = Releases::new(dir.clone(), 5, Some(initial.clone())).readable_by(other);
        r.prepare().unwrap();
        let copy = r.path_of(&id2).unwrap().unwrap();
        for p in [copy.clone(), copy.join("static"), copy.join("static/a.css")] {
            assert_eq!(std::fs::metadata(&p).unwrap().gid(), other, "{}", p.display());
        }
        // ... and an initial release that moved is followed.
        r.switch(INITIAL).unwrap();
        let moved = release(src.path(), "site-moved", "1");
        let r = Releases::new(dir.clone(), 5, Some(moved.clone()));
        r.prepare().unwrap();
        assert_eq!(std::fs::read_link(dir.join("current")).unwrap(), moved);
    }
}
