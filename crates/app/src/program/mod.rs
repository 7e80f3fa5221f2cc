//! The user's program behind the app role: how it is checked, started,
//! watched and stopped (see `supervise`), and what the rest of the role
//! sees of it ([`ProgramStatus`]).
//!
//! The program listens on a private address the role picks for each start
//! ([`ProgramAddress`]: a loopback port, or a Unix socket in a directory
//! private to the role and the program); the role's front (`crate::front`)
//! proxies to it. It gets the address as `{listen}` in its arguments
//! (`127.0.0.1:PORT` or `unix:PATH`, gunicorn's `--bind` syntax), as
//! `{port}` or `{socket}`, and as `BULWARK_LISTEN` with `PORT` or
//! `BULWARK_SOCKET`, the database nodes as `BULWARK_DB_NODES`
//! (comma-separated `host:port`), the path of a file holding the app→db
//! credential as `BULWARK_DB_SECRET_FILE`, and the instance's name as
//! `BULWARK_APP_NAME`. Under mutual TLS (the role's `mutual_tls`) it also
//! gets the paths of the role's client certificate, its key and the
//! cluster CA as `BULWARK_DB_CERT`, `BULWARK_DB_KEY` and `BULWARK_DB_CA`
//! (copies readable by `user` when it runs as another user), and a
//! deployable program (`release_dir`) the id of the release it runs as
//! `BULWARK_RELEASE` (see [`release`]). It never gets the web tier's
//! credential: the front checks it and strips it.

pub(crate) mod client;
pub mod release;
pub(crate) mod supervise;

use bulwark_config::app::Program;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the program listens for the role's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramAddress {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ProgramAddress {
    /// As the program gets it in `{listen}`: `127.0.0.1:PORT` or `unix:PATH`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProgramAddress::Tcp(a) => write!(f, "{a}"),
            ProgramAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl serde::Serialize for ProgramAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl ProgramAddress {
    /// The URI of `path_and_query` on the program, for the role's HTTP
    /// clients (a Unix socket's path travels hex-encoded in the host, where
    /// [`client::ProgramSocket`] reads it).
    pub(crate) fn uri(&self, path_and_query: &str) -> Result<hyper::Uri, http::uri::InvalidUri> {
        match self {
            ProgramAddress::Tcp(a) => format!("http://{a}{path_and_query}").parse(),
            ProgramAddress::Unix(p) => {
                let host = hex::encode(p.as_os_str().as_encoded_bytes());
                format!("unix://{host}:0{path_and_query}").parse()
            }
        }
    }
}

/// What the program is doing, as the role's `/health` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProgramStatus {
    pub state: ProgramState,
    pub pid: Option<u32>,
    /// The private address the program listens on while it runs.
    pub listen: Option<ProgramAddress>,
    /// Starts after the first.
    pub restarts: u32,
    /// Why the last start failed or the program last ended.
    pub last_error: Option<String>,
    /// The program answered its health path at least once since the role
    /// started (a failure before that is a failed start: a bad `exec`).
    pub ever_healthy: bool,
    /// Runs that failed (could not start, ended, never became healthy).
    pub failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgramState {
    /// Started, not yet answering its health path.
    Starting,
    /// Answers its health path.
    Healthy,
    /// Runs, but its health path failed the last checks.
    Unhealthy,
    /// Not running: waiting to be started again.
    Backoff,
    /// Stopped with the role.
    Stopped,
}

impl ProgramStatus {
    pub(crate) fn new() -> ProgramStatus {
        ProgramStatus {
            state: ProgramState::Starting,
            pid: None,
            listen: None,
            restarts: 0,
            last_error: None,
            ever_healthy: false,
            failures: 0,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.state == ProgramState::Healthy
    }
}

/// A problem with `[program]` found before anything runs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ProgramProblem {
    /// The config key (`program.exec[0]`).
    pub key: String,
    pub message: String,
}

fn problem(key: &str, message: impl Into<String>) -> ProgramProblem {
    ProgramProblem { key: key.into(), message: message.into() }
}

/// Where `exec[0]` is: a name with a `/` relative to the working directory
/// (when relative), a bare name looked up on `PATH` (the program's: the
/// `env` one if set, else the role's).
pub fn resolve_program(p: &Program, workdir: Option<&Path>) -> Result<PathBuf, ProgramProblem> {
    let name = p.exec.first().map(String::as_str).unwrap_or_default();
    if name.is_empty() {
        return Err(problem("exec", "no program to run"));
    }
    if name.contains('/') {
        let path = match workdir {
            Some(w) if Path::new(name).is_relative() => w.join(name),
            _ => PathBuf::from(name),
        };
        return check_executable(&path).map(|()| path);
    }
    let path_var = p.env.get("PATH").cloned().or_else(|| std::env::var("PATH").ok()).unwrap_or_default();
    let mut found_not_executable = None;
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            match check_executable(&candidate) {
                Ok(()) => return Ok(candidate),
                Err(e) => found_not_executable = Some(e),
            }
        }
    }
    Err(found_not_executable
        .unwrap_or_else(|| problem("exec[0]", format!("program `{name}` not found on PATH ({path_var})"))))
}

fn check_executable(path: &Path) -> Result<(), ProgramProblem> {
    let meta = std::fs::metadata(path).map_err(|e| problem("exec[0]", format!("program {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(problem("exec[0]", format!("program {} is not a file", path.display())));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(problem("exec[0]", format!("program {} is not executable (chmod +x it)", path.display())));
    }
    Ok(())
}

/// The user `user` names: (uid, gid, home).
pub fn lookup_user(name: &str) -> Result<(u32, u32, PathBuf), ProgramProblem> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw(), u.dir)),
        Ok(None) => Err(problem("user", format!("no user `{name}` on this host"))),
        Err(e) => Err(problem("user", format!("looking up user `{name}`: {e}"))),
    }
}

/// What a user may do with a file, as its mode bits say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read a file, or list and enter a directory.
    Read,
    /// Run a program.
    Execute,
}

/// Why a user cannot reach a path ([`user_may`]).
#[derive(Debug, thiserror::Error)]
pub enum AccessDenied {
    #[error("{}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{} is mode {mode:04o}, owner uid {uid} gid {gid}", path.display())]
    Mode { path: PathBuf, mode: u32, uid: u32, gid: u32 },
}

/// Whether the user `uid` with primary group `gid` (a program started as
/// `user` has no other group) can reach `path` (search permission on every
/// directory above it) and `access` it, by the mode bits. Err says which
/// path stops it, with its mode and owner.
pub fn user_may(path: &Path, uid: u32, gid: u32, access: Access) -> Result<(), AccessDenied> {
    use std::os::unix::fs::MetadataExt;
    if uid == 0 {
        return Ok(());
    }
    let allowed = |m: &std::fs::Metadata, bits: u32| {
        let class = if m.uid() == uid {
            m.mode() >> 6
        } else if m.gid() == gid {
            m.mode() >> 3
        } else {
            m.mode()
        };
        class & bits == bits
    };
    let describe = |p: &Path, m: &std::fs::Metadata| AccessDenied::Mode {
        path: p.to_path_buf(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
    };
    let unreadable = |p: &Path| {
        let path = p.to_path_buf();
        move |source| AccessDenied::Unreadable { path, source }
    };
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    for dir in path.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(unreadable(dir))?;
        if !allowed(&m, 0o1) {
            return Err(describe(dir, &m));
        }
    }
    let m = std::fs::metadata(&path).map_err(unreadable(&path))?;
    let bits = match (access, m.is_dir()) {
        (Access::Read, true) => 0o5,
        (Access::Read, false) => 0o4,
        (Access::Execute, _) => 0o1,
    };
    if allowed(&m, bits) {
        Ok(())
    } else {
        Err(describe(&path, &m))
    }
}

/// Everything about `[program]` that can be checked before starting it:
/// the working directory, the program (found on the role's `PATH` or the
/// one of `env`, a file, executable), the user (exists; switching to it
/// needs root; it can reach and run the program and read the working
/// directory). `bulwark check` and `up` report these naming the role; the
/// role reports the rest (a program that exits at once or never answers
/// its health path) when it runs.
pub fn check(p: &Program) -> Vec<ProgramProblem> {
    let mut out = Vec::new();
    if let Some(w) = &p.workdir {
        if !w.is_dir() {
            out.push(problem("workdir", format!("{} is not a directory", w.display())));
        }
    }
    let program = resolve_program(p, p.workdir.as_deref());
    if let Err(e) = &program {
        out.push(e.clone());
    }
    if let Some(u) = &p.user {
        match lookup_user(u) {
            Ok((uid, gid, _)) => {
                let me = nix::unistd::geteuid().as_raw();
                if me != 0 && me != uid {
                    out.push(problem(
                        "user",
                        format!("running as `{u}` needs bulwark to run as root (it runs as uid {me})"),
                    ));
                }
                if let Ok(path) = &program {
                    if let Err(why) = user_may(path, uid, gid, Access::Execute) {
                        out.push(problem(
                            "exec[0]",
                            format!("program {} cannot be run as user `{u}`: {why}", path.display()),
                        ));
                    }
                }
                if let Some(w) = p.workdir.as_ref().filter(|w| w.is_dir()) {
                    if let Err(why) = user_may(w, uid, gid, Access::Read) {
                        out.push(problem("workdir", format!("{} cannot be read by user `{u}`: {why}", w.display())));
                    }
                }
            }
            Err(e) => out.push(e),
        }
    }
    out
}

/// `exec` with `{listen}` and `{port}` or `{socket}` replaced.
pub fn arguments(p: &Program, listen: &ProgramAddress) -> Vec<String> {
    let (key, value) = match listen {
        ProgramAddress::Tcp(a) => ("{port}", a.port().to_string()),
        ProgramAddress::Unix(path) => ("{socket}", path.display().to_string()),
    };
    p.exec.iter().skip(1).map(|a| a.replace("{listen}", &listen.to_string()).replace(key, &value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(exec: &str, workdir: &Path, user: &str) -> Program {
        Program {
            exec: vec![exec.into()],
            socket: Default::default(),
            workdir: Some(workdir.to_path_buf()),
            env: Default::default(),
            user: Some(user.into()),
            health_path: "/health".into(),
            stop_grace: std::time::Duration::from_secs(1),
            start_timeout: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn a_program_its_user_cannot_reach_is_named_with_the_user() {
        assert!(nix::unistd::geteuid().is_root(), "this test checks another user's access: run it as root");
        let (uid, gid, _) = lookup_user("nobody").unwrap();
        let base = tempfile::tempdir().unwrap();
        let open = base.path().join("open");
        let closed = base.path().join("closed");
        for (d, mode) in [(base.path(), 0o755), (open.as_path(), 0o755), (closed.as_path(), 0o700)] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        for d in [&open, &closed] {
            std::fs::write(d.join("run"), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(d.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert!(user_may(&open.join("run"), uid, gid, Access::Execute).is_ok());
        assert!(user_may(&open, uid, gid, Access::Read).is_ok());
        // Root may run it; nobody cannot reach it.
        assert_eq!(check(&program(closed.join("run").to_str().unwrap(), &open, "root")), vec![]);
        let problems = check(&program(closed.join("run").to_str().unwrap(), &closed, "nobody"));
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with(&format!(
                "exec[0]: program {} cannot be run as user `nobody`: ",
                closed.join("run").display()
            )) && text[0].contains(&format!("{} is mode 0700", closed.display())),
            "{text:?}"
        );
        assert!(
            text[1].starts_with(&format!("workdir: {} cannot be read by user `nobody`", closed.display())),
            "{text:?}"
        );
        // Found on PATH: the resolved path is named.
        let mut on_path = program("run", &open, "nobody");
        on_path.env.insert("PATH".into(), closed.display().to_string());
        let text = check(&on_path).iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        assert!(
            text.contains(&format!("program {} cannot be run as user `nobody`", closed.join("run").display())),
            "{text}"
        );
        // A file only its owner may run.
        std::fs::set_permissions(open.join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let why = user_may(&open.join("run"), uid, gid, Access::Execute).unwrap_err().to_string();
        assert!(why.contains("is mode 0700, owner uid 0"), "{why}");
    }
}
