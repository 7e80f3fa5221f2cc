//! Files on disk as served representations, and the per-thread cache of
//! them.
//!
//! A [`FileEntry`] is everything needed to answer for one URL: the file's
//! bytes when small (or where to stream them from), its precompressed
//! siblings, and header values computed once (ETag, Last-Modified,
//! Content-Type, Content-Length, Cache-Control). Entries are checked against
//! the disk (stat of every path involved) at most every `cache.revalidate`.
//!
//! Safety: every file served is canonicalised when loaded and must lie
//! under the canonical root, so a symlink that leads outside is refused.
//!
//! The root may itself be a symbolic link that is switched to another
//! directory (the `current` link of an app's releases, see `bulwark
//! deploy`): it is resolved again on every lookup, and cached entries are
//! checked through it, so the files of the new directory are served within
//! `cache.revalidate` of the switch.
use crate::encoding::Coding;
use crate::path::CleanPath;
use bulwark_config::web::CacheControl;
use bytes::Bytes;
use http::HeaderValue;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

/// At most this many URLs are cached per worker thread.
const MAX_ENTRIES: usize = 100_000;

/// A file's identity and content version as far as `stat` can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    pub(crate) fn of(m: &Metadata) -> Stamp {
        Stamp { dev: m.dev(), ino: m.ino(), len: m.len(), mtime: m.mtime(), mtime_nsec: m.mtime_nsec() }
    }
}

/// One servable version of a URL's content: the file itself or a
/// precompressed sibling.
#[derive(Debug)]
pub struct Representation {
    pub coding: Coding,
    /// The path under the root as the URL names it (may contain symlinks,
    /// the root included); revalidation stats this one so a swapped
    /// symlink is noticed.
    path: PathBuf,
    /// The canonical path, opened when streaming.
    pub real_path: PathBuf,
    pub stamp: Stamp,
    pub len: u64,
    /// The whole content, when small enough to keep in memory.
    pub bytes: Option<Bytes>,
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
    pub content_length: HeaderValue,
    /// Modification time in whole seconds since the epoch.
    pub modified: u64,
}

/// Everything needed to answer for one URL.
#[derive(Debug)]
pub struct FileEntry {
    pub identity: Representation,
    pub brotli: Option<Representation>,
    pub gzip: Option<Representation>,
    pub content_type: HeaderValue,
    pub cache_control: Option<HeaderValue>,
    /// Sibling paths that did not exist when loaded (their appearance
    /// invalidates the entry).
    missing_siblings: Vec<PathBuf>,
    checked: Cell<Instant>,
    memory: u64,
}

impl FileEntry {
    pub fn has_variants(&self) -> bool {
        self.brotli.is_some() || self.gzip.is_some()
    }

    pub fn representation(&self, coding: Coding) -> &Representation {
        match coding {
            Coding::Brotli => self.brotli.as_ref().unwrap_or(&self.identity),
            Coding::Gzip => self.gzip.as_ref().unwrap_or(&self.identity),
            Coding::Identity => &self.identity,
        }
    }

    /// True when every file involved is unchanged on disk.
    fn unchanged_on_disk(&self) -> bool {
        let same = |r: &Representation| std::fs::metadata(&r.path).is_ok_and(|m| Stamp::of(&m) == r.stamp);
        same(&self.identity)
            && self.brotli.as_ref().is_none_or(same)
            && self.gzip.as_ref().is_none_or(same)
            && self.missing_siblings.iter().all(|p| std::fs::metadata(p).is_err())
    }
}

/// What a clean path resolves to on disk.
#[derive(Debug)]
pub enum Resolved {
    File(Box<FileEntry>),
    /// A directory asked for without the trailing slash.
    Directory,
    NotFound,
    Forbidden,
}

/// How files are found and turned into entries; shared by all workers.
#[derive(Debug)]
pub struct FileSource {
    /// Root directory, absolute, as configured: it may be a symbolic link
    /// (resolved on every lookup).
    root: PathBuf,
    index: Vec<String>,
    precompressed: bool,
    max_file_bytes: u64,
    rules: Vec<(CacheRule, HeaderValue)>,
}

#[derive(Debug)]
enum CacheRule {
    Prefix(String),
    Glob(glob::Pattern),
}

/// A `cache_control` rule that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cache_control[{index}].{key}: {message}")]
pub struct RuleError {
    pub index: usize,
    pub key: &'static str,
    pub message: String,
}

impl FileSource {
    pub fn new(
        root: PathBuf,
        index: Vec<String>,
        precompressed: bool,
        max_file_bytes: u64,
        rules: &[CacheControl],
    ) -> Result<FileSource, RuleError> {
        let mut compiled = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let rule = if r.is_glob() {
                CacheRule::Glob(glob::Pattern::new(&r.pattern).map_err(|e| RuleError {
                    index: i,
                    key: "match",
                    message: e.to_string(),
                })?)
            } else {
                CacheRule::Prefix(r.pattern.clone())
            };
            let value = HeaderValue::from_str(&r.value).map_err(|e| RuleError {
                index: i,
                key: "value",
                message: e.to_string(),
            })?;
            compiled.push((rule, value));
        }
        Ok(FileSource { root, index, precompressed, max_file_bytes, rules: compiled })
    }

    /// The `Cache-Control` value for a URL path, first matching rule.
    fn cache_control(&self, url_path: &str) -> Option<HeaderValue> {
        let opts = glob::MatchOptions { case_sensitive: true, require_literal_separator: true, ..Default::default() };
        self.rules
            .iter()
            .find(|(rule, _)| match rule {
                CacheRule::Prefix(p) => url_path.starts_with(p.as_str()),
                CacheRule::Glob(g) => g.matches_with(url_path, opts),
            })
            .map(|(_, v)| v.clone())
    }

    /// Look a clean path up on disk (blocking file-system calls).
    pub fn resolve(&self, clean: &CleanPath<'_>) -> Resolved {
        let rel = Path::new(OsStr::from_bytes(&clean.rel));
        let path = self.root.join(rel);
        let real_root = match std::fs::canonicalize(&self.root) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(root = %self.root.display(), "the web root is gone: {e}");
                return Resolved::NotFound;
            }
        };
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => return refusal_of(&e),
        };
        let (file, url_rel) = if meta.is_dir() {
            if !clean.trailing_slash {
                return Resolved::Directory;
            }
            let found = self.index.iter().find_map(|name| {
                let p = path.join(name);
                std::fs::metadata(&p).ok().filter(Metadata::is_file).map(|_| (p, name))
            });
            match found {
                Some((p, name)) => {
                    let mut u = clean.rel.to_vec();
                    if !u.is_empty() {
                        u.push(b'/');
                    }
                    u.extend_from_slice(name.as_bytes());
                    (p, u)
                }
                None => return Resolved::Forbidden,
            }
        } else if meta.is_file() {
            if clean.trailing_slash {
                return Resolved::NotFound;
            }
            (path, clean.rel.to_vec())
        } else {
            return Resolved::Forbidden;
        };
        let identity = match self.load(&file, Coding::Identity, &real_root) {
            Ok(r) => r,
            Err(Refusal::Outside) => {
                tracing::warn!(path = %file.display(), "refused: resolves outside the root");
                return Resolved::Forbidden;
            }
            Err(Refusal::Io(e)) => return refusal_of(&e),
        };
        let mut missing_siblings = Vec::new();
        let mut sibling = |suffix: &str, coding: Coding| -> Option<Representation> {
            if !self.precompressed {
                return None;
            }
            let mut p = file.clone().into_os_string();
            p.push(suffix);
            let p = PathBuf::from(p);
            match self.load(&p, coding, &real_root) {
                Ok(r) => Some(r),
                Err(_) => {
                    missing_siblings.push(p);
                    None
                }
            }
        };
        let brotli = sibling(".br", Coding::Brotli);
        let gzip = sibling(".gz", Coding::Gzip);
        let url_path = format!("/{}", String::from_utf8_lossy(&url_rel));
        let memory = [Some(&identity), brotli.as_ref(), gzip.as_ref()]
            .into_iter()
            .flatten()
            .map(|r| r.bytes.as_ref().map_or(0, |b| b.len() as u64))
            .sum();
        Resolved::File(Box::new(FileEntry {
            content_type: content_type(&file),
            cache_control: self.cache_control(&url_path),
            identity,
            brotli,
            gzip,
            missing_siblings,
            checked: Cell::new(Instant::now()),
            memory,
        }))
    }

    /// Load one representation: canonicalise, check it is under the root
    /// (`real_root`, or where the root leads now: it may have been switched
    /// since), read it when small, compute its header values.
    fn load(&self, path: &Path, coding: Coding, real_root: &Path) -> Result<Representation, Refusal> {
        let real_path = std::fs::canonicalize(path).map_err(Refusal::Io)?;
        if !real_path.starts_with(real_root)
            && !std::fs::canonicalize(&self.root).is_ok_and(|now| real_path.starts_with(now))
        {
            return Err(Refusal::Outside);
        }
        let mut f = std::fs::File::open(&real_path).map_err(Refusal::Io)?;
        let meta = f.metadata().map_err(Refusal::Io)?;
        if !meta.is_file() {
            return Err(Refusal::Io(std::io::ErrorKind::NotFound.into()));
        }
        let mut len = meta.len();
        let bytes = if len <= self.max_file_bytes {
            let mut buf = Vec::with_capacity(len as usize);
            f.read_to_end(&mut buf).map_err(Refusal::Io)?;
            // A file written while we read it: serve what was read; the stamp
            // no longer matches, so the next revalidation reloads it.
            len = buf.len() as u64;
            Some(Bytes::from(buf))
        } else {
            None
        };
        let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        let modified = crate::conditional::epoch_secs(mtime);
        let suffix = match coding {
            Coding::Identity => "",
            Coding::Gzip => "-gz",
            Coding::Brotli => "-br",
        };
        let etag = format!("\"{modified:x}-{len:x}{suffix}\"");
        Ok(Representation {
            coding,
            path: path.to_path_buf(),
            real_path,
            stamp: Stamp::of(&meta),
            len,
            bytes,
            etag: HeaderValue::from_str(&etag).expect("hex etag is a valid header value"),
            last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(mtime))
                .expect("http date is a valid header value"),
            content_length: HeaderValue::from(len),
            modified,
        })
    }
}

enum Refusal {
    Outside,
    Io(std::io::Error),
}

fn refusal_of(e: &std::io::Error) -> Resolved {
    use std::io::ErrorKind::*;
    match e.kind() {
        PermissionDenied => Resolved::Forbidden,
        NotFound | NotADirectory => Resolved::NotFound,
        _ => {
            tracing::debug!("file lookup failed: {e}");
            Resolved::NotFound
        }
    }
}

/// `Content-Type` from the file name; text types get `charset=utf-8`.
pub fn content_type(path: &Path) -> HeaderValue {
    let mime = mime_guess::from_path(path).first_raw().unwrap_or("application/octet-stream");
    let texty = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "image/svg+xml"
                | "application/manifest+json"
        );
    if texty {
        HeaderValue::from_str(&format!("{mime}; charset=utf-8")).expect("mime is a valid header value")
    } else {
        HeaderValue::from_static(mime)
    }
}

/// The per-thread cache: URL key → entry. Bounded by the bytes it holds
/// and by [`MAX_ENTRIES`]; when full, arbitrary entries are evicted (cheap,
/// and a hot file comes back on its next request).
#[derive(Debug)]
pub struct FileCache {
    map: HashMap<Box<[u8]>, Rc<FileEntry>>,
    memory: u64,
    max_memory: u64,
}

impl FileCache {
    pub fn new(max_memory: u64) -> Self {
        FileCache { map: HashMap::new(), memory: 0, max_memory }
    }

    /// The cached entry for `key`, checked against the disk when its last
    /// check is older than `revalidate`; a changed entry is dropped.
    pub fn get(&mut self, key: &[u8], revalidate: std::time::Duration) -> Option<Rc<FileEntry>> {
        let e = self.map.get(key)?;
        let now = Instant::now();
        if now.duration_since(e.checked.get()) < revalidate {
            return Some(e.clone());
        }
        if e.unchanged_on_disk() {
            e.checked.set(now);
            return Some(e.clone());
        }
        self.remove(key);
        None
    }

    pub fn insert(&mut self, key: &[u8], entry: Rc<FileEntry>) {
        if entry.memory > self.max_memory {
            return;
        }
        self.remove(key);
        while (self.memory + entry.memory > self.max_memory || self.map.len() >= MAX_ENTRIES) && !self.map.is_empty() {
            let victim = self.map.keys().next().cloned().expect("not empty");
            self.remove(&victim);
        }
        self.memory += entry.memory;
        self.map.insert(key.into(), entry);
    }

    pub fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.memory -= old.memory;
        }
    }

    #[cfg(test)]
    fn memory(&self) -> u64 {
        self.memory
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::sanitize;
    use std::time::Duration;

    fn source(root: &Path, rules: &[CacheControl]) -> FileSource {
        let root = std::fs::canonicalize(root).unwrap();
        FileSource::new(root, vec!["index.html".into()], true, 1024, rules).unwrap()
    }

    fn resolve(s: &FileSource, url: &str) -> Resolved {
        s.resolve(&sanitize(url, false).unwrap())
    }

    #[test]
    fn resolves_files_indexes_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/index.html"), "<h1>docs</h1>").unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        std::fs::write(dir.path().join("a.css"), "body{}").unwrap();
        let s = source(dir.path(), &[]);
        let Resolved::File(e) = resolve(&s, "/a.css") else { panic!() };
        assert_eq!(e.content_type, "text/css; charset=utf-8");
        assert_eq!(e.identity.bytes.as_deref(), Some(&b"body{}"[..]));
        assert_eq!(e.identity.content_length, "6");
        let Resolved::File(e) = resolve(&s, "/docs/") else { panic!() };
        assert_eq!(e.content_type, "text/html; charset=utf-8");
        assert!(matches!(resolve(&s, "/docs"), Resolved::Directory));
        assert!(matches!(resolve(&s, "/empty/"), Resolved::Forbidden));
        assert!(matches!(resolve(&s, "/nope.txt"), Resolved::NotFound));
        assert!(matches!(resolve(&s, "/a.css/"), Resolved::NotFound));
        assert!(matches!(resolve(&s, "/a.css/x"), Resolved::NotFound));
    }

    #[test]
    fn refuses_symlinks_that_leave_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s3cret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real.txt"), "ok").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("leak.txt")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("leakdir")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real.txt"), dir.path().join("inside.txt")).unwrap();
        let s = source(dir.path(), &[]);
        assert!(matches!(resolve(&s, "/leak.txt"), Resolved::Forbidden));
        assert!(matches!(resolve(&s, "/leakdir/secret"), Resolved::Forbidden));
        let Resolved::File(e) = resolve(&s, "/inside.txt") else { panic!("symlink inside the root is served") };
        assert_eq!(e.identity.bytes.as_deref(), Some(&b"ok"[..]));
    }

    #[test]
    fn finds_precompressed_siblings_with_distinct_etags() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.js"), "x".repeat(100)).unwrap();
        std::fs::write(dir.path().join("app.js.gz"), "gz").unwrap();
        let s = source(dir.path(), &[]);
        let Resolved::File(e) = resolve(&s, "/app.js") else { panic!() };
        assert!(e.brotli.is_none());
        let gz = e.gzip.as_ref().unwrap();
        assert_eq!(gz.bytes.as_deref(), Some(&b"gz"[..]));
        assert_ne!(gz.etag, e.identity.etag);
        assert!(gz.etag.to_str().unwrap().ends_with("-gz\""));
        assert_eq!(e.content_type, "text/javascript; charset=utf-8");
        assert_eq!(e.missing_siblings.len(), 1);
    }

    #[test]
    fn large_files_are_not_held_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.bin"), vec![7u8; 4096]).unwrap();
        let s = source(dir.path(), &[]);
        let Resolved::File(e) = resolve(&s, "/big.bin") else { panic!() };
        assert!(e.identity.bytes.is_none());
        assert_eq!(e.identity.len, 4096);
        assert_eq!(e.content_type, "application/octet-stream");
    }

    #[test]
    fn cache_control_rules_first_match_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("assets/css")).unwrap();
        std::fs::write(dir.path().join("assets/css/a.css"), "a").unwrap();
        std::fs::write(dir.path().join("index.html"), "i").unwrap();
        std::fs::write(dir.path().join("b.txt"), "b").unwrap();
        let rules = [
            CacheControl { pattern: "/assets/".into(), value: "max-age=3600".into() },
            CacheControl { pattern: "/*.html".into(), value: "no-cache".into() },
        ];
        let s = source(dir.path(), &rules);
        let cc = |url: &str| match resolve(&s, url) {
            Resolved::File(e) => e.cache_control.map(|v| v.to_str().unwrap().to_string()),
            other => panic!("{other:?}"),
        };
        assert_eq!(cc("/assets/css/a.css").as_deref(), Some("max-age=3600"));
        assert_eq!(cc("/").as_deref(), Some("no-cache"));
        assert_eq!(cc("/b.txt"), None);
    }

    #[test]
    fn cache_revalidates_and_bounds_memory() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.txt");
        std::fs::write(&f, "one").unwrap();
        std::fs::write(dir.path().join("b.txt"), "x".repeat(600)).unwrap();
        let s = source(dir.path(), &[]);
        let mut cache = FileCache::new(1000);
        let Resolved::File(e) = resolve(&s, "/a.txt") else { panic!() };
        cache.insert(b"a.txt", Rc::new(*e));
        assert!(cache.get(b"a.txt", Duration::ZERO).is_some(), "unchanged file stays cached");
        std::fs::write(&f, "two!").unwrap();
        assert!(cache.get(b"a.txt", Duration::from_secs(3600)).is_some(), "not re-checked within the interval");
        assert!(cache.get(b"a.txt", Duration::ZERO).is_none(), "a changed file is dropped");
        // A sibling appearing later invalidates the entry too.
        let Resolved::File(e) = resolve(&s, "/a.txt") else { panic!() };
        cache.insert(b"a.txt", Rc::new(*e));
        std::fs::write(dir.path().join("a.txt.br"), "br").unwrap();
        assert!(cache.get(b"a.txt", Duration::ZERO).is_none());
        // Memory bound: two 600-byte files do not fit in 1000 bytes.
        let Resolved::File(b) = resolve(&s, "/b.txt") else { panic!() };
        cache.insert(b"b.txt", Rc::new(*b));
        let Resolved::File(b2) = resolve(&s, "/b.txt") else { panic!() };
        cache.insert(b"b2", Rc::new(*b2));
        assert!(cache.memory() <= 1000);
        assert_eq!(cache.map.len(), 1);
    }

    #[test]
    fn a_root_that_is_a_switched_link_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = (dir.path().join("v1"), dir.path().join("v2"));
        for (d, css) in [(&v1, "one"), (&v2, "two")] {
            std::fs::create_dir_all(d.join("static")).unwrap();
            std::fs::write(d.join("static/a.css"), css).unwrap();
        }
        std::fs::write(v1.join("static/old.css"), "old").unwrap();
        std::fs::write(v2.join("static/new.css"), "new").unwrap();
        let link = dir.path().join("current");
        std::os::unix::fs::symlink(&v1, &link).unwrap();
        let s = FileSource::new(link.clone(), vec![], true, 1024, &[]).unwrap();
        let body = |r: Resolved| match r {
            Resolved::File(e) => String::from_utf8(e.identity.bytes.clone().unwrap().to_vec()).unwrap(),
            other => format!("{other:?}"),
        };
        let mut cache = FileCache::new(1 << 20);
        let Resolved::File(e) = resolve(&s, "/static/a.css") else { panic!() };
        cache.insert(b"static/a.css", Rc::new(*e));
        assert_eq!(body(resolve(&s, "/static/old.css")), "old");
        assert_eq!(body(resolve(&s, "/static/new.css")), "NotFound");

        // Switched as a deploy does: a new link renamed over the old one.
        std::os::unix::fs::symlink(&v2, dir.path().join(".current.new")).unwrap();
        std::fs::rename(dir.path().join(".current.new"), &link).unwrap();
        assert!(cache.get(b"static/a.css", Duration::ZERO).is_none(), "the cached file of v1 is dropped");
        assert_eq!(body(resolve(&s, "/static/a.css")), "two");
        assert_eq!(body(resolve(&s, "/static/new.css")), "new");
        assert_eq!(body(resolve(&s, "/static/old.css")), "NotFound");
        // Still nothing outside where the link leads.
        std::os::unix::fs::symlink(v1.join("static/old.css"), v2.join("static/leak.css")).unwrap();
        assert!(matches!(resolve(&s, "/static/leak.css"), Resolved::Forbidden));
    }
}
