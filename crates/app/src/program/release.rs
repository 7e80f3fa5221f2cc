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
//! everywhere. The digest covers every file's relative path, mode and
//! content (SHA-256); symbolic links are refused (a release is plain files).
//!
//! While `current` does not exist the program runs from `program.workdir`,
//! the release called `initial`. The links survive restarts of the role:
//! a deployed release stays deployed.
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
/// mode and bytes, in path order. Hex.
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
        ctx.update(&(meta.permissions().mode() & 0o7777).to_le_bytes());
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
}

impl Releases {
    pub fn new(dir: PathBuf, keep: usize, initial: Option<PathBuf>) -> Releases {
        Releases { dir, keep, initial }
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
        copy_tree(src, &tmp)?;
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

/// Copy the tree `src` to the new directory `dst`, keeping file and
/// directory modes.
fn copy_tree(src: &Path, dst: &Path) -> Result<(), ReleaseError> {
    std::fs::create_dir(dst).map_err(io(dst))?;
    let mode = std::fs::metadata(src).map_err(io(src))?.permissions().mode();
    for entry in std::fs::read_dir(src).map_err(io(src))? {
        let entry = entry.map_err(io(src))?;
        let kind = entry.file_type().map_err(io(&entry.path()))?;
        let to = dst.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &to).map_err(io(&to))?;
        } else {
            return Err(ReleaseError::Invalid(format!(
                "{}: a release holds only directories and regular files (no links)",
                entry.path().display()
            )));
        }
    }
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode)).map_err(io(dst))
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
}
