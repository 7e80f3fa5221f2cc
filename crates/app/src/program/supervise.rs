//! Running the user's program: start it on a fresh private address (a
//! loopback port, or a new socket file for each start), forward
//! its output into the role's log, probe its health path, restart it with
//! backoff when it ends, restart it at once when asked (a deploy switched
//! its release: each start runs the release `current` names), and stop it
//! (SIGTERM, then SIGKILL to its whole process group after `stop_grace`)
//! when the role stops.
//!
//! Every problem of the program (it cannot be started, it exits, it never
//! answers its health path) is reported through [`ProgramStatus`] and the
//! log and retried; none of them stops the role, so the rest of a topology
//! keeps running while one app's program is broken.
use super::client::ProgramClient;
use super::{
    arguments, lookup_user, problem, resolve_program, ProgramAddress, ProgramProblem, ProgramState, ProgramStatus,
};
use bulwark_config::app::{Program, ProgramSocket};
use bulwark_telemetry::process::describe_exit;
use bytes::Bytes;
use http_body_util::Empty;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// First wait before a start after a failure; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A program healthy this long starts its next restart from the initial backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Health probes: quickly while starting, then at this interval.
const PROBE_STARTING: Duration = Duration::from_millis(100);
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Consecutive failed probes that make a running program unhealthy.
const PROBE_FALL: u32 = 2;
/// Longest line of program output kept in one log record.
const MAX_LINE_BYTES: u64 = 16 * 1024;

/// What the program is started with, besides its `[program]` table.
pub(crate) struct Launch {
    pub program: Program,
    pub app_name: String,
    pub db_nodes: Vec<String>,
    /// Passed as `BULWARK_DB_SECRET_FILE`.
    pub db_secret_file: Option<PathBuf>,
    /// Passed as `BULWARK_DB_CA`, `BULWARK_DB_CERT`, `BULWARK_DB_KEY`:
    /// the client certificate towards the database under mutual TLS.
    pub db_tls: Option<bulwark_config::internal_tls::TlsFiles>,
    /// The releases of a deployable program: each start runs `current`.
    pub releases: Option<super::release::Releases>,
    /// Stop the running program and start it again at once.
    pub restart: std::sync::Arc<tokio::sync::Notify>,
    /// Where a program with `socket = "unix"` gets its socket files: a
    /// directory only the role and the program's user may enter.
    pub socket_dir: Option<PathBuf>,
    /// The user the program runs as: the only peer the role talks to over
    /// its socket.
    pub program_uid: u32,
}

type ProbeClient = ProgramClient<Empty<Bytes>>;

/// Run the program until `shutdown`, then stop it. Returns once it is gone.
pub(crate) async fn run(launch: Launch, status: watch::Sender<ProgramStatus>, shutdown: CancellationToken) {
    let probe: ProbeClient = ProgramClient::new(false, launch.program_uid);
    let mut backoff = INITIAL_BACKOFF;
    let mut first = true;
    let mut starts = 0u64;
    loop {
        starts += 1;
        if !first {
            status.send_modify(|s| {
                s.restarts += 1;
                s.state = ProgramState::Starting;
                s.pid = None;
                s.listen = None;
            });
        }
        first = false;
        let outcome = run_once(&launch, &status, &probe, &shutdown, starts).await;
        let (error, stable) = match outcome {
            RunOutcome::Restart => {
                backoff = INITIAL_BACKOFF;
                continue;
            }
            RunOutcome::Stopped => {
                status.send_modify(|s| {
                    s.state = ProgramState::Stopped;
                    s.pid = None;
                    s.listen = None;
                });
                return;
            }
            RunOutcome::Failed { error, healthy_for } => (error, healthy_for >= STABLE_AFTER),
        };
        if stable {
            backoff = INITIAL_BACKOFF;
        }
        tracing::warn!(app = %launch.app_name, "program: {error}; starting it again in {backoff:?}");
        status.send_modify(|s| {
            s.state = ProgramState::Backoff;
            s.pid = None;
            s.listen = None;
            s.last_error = Some(error);
            s.failures += 1;
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = launch.restart.notified() => {}
            _ = shutdown.cancelled() => {
                status.send_modify(|s| s.state = ProgramState::Stopped);
                return;
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum RunOutcome {
    /// Stopped because the role is stopping.
    Stopped,
    /// Stopped to be started again at once (see [`Launch::restart`]).
    Restart,
    /// Could not start, ended, or never became healthy.
    Failed { error: String, healthy_for: Duration },
}

/// Where the program's `start`-th run listens. A port: a free one on the
/// loopback interface; the probe socket is closed before the program
/// starts, so another process could take the port first: the program then
/// fails to bind, exits, and the next start picks another port. A socket:
/// a new file name for each start, so that a program still exiting cannot
/// remove its successor's socket, and nothing else can take it.
fn pick_address(launch: &Launch, start: u64) -> std::io::Result<ProgramAddress> {
    match (launch.program.socket, &launch.socket_dir) {
        (ProgramSocket::Unix, Some(dir)) => {
            let path = dir.join(format!("program-{start}.sock"));
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            Ok(ProgramAddress::Unix(path))
        }
        (ProgramSocket::Unix, None) => Err(std::io::Error::other("no directory for the program's socket")),
        (ProgramSocket::Tcp, _) => {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
            l.local_addr().map(ProgramAddress::Tcp)
        }
    }
}

/// The command that starts the program, and the program's path as found.
fn command(
    launch: &Launch,
    p: &Program,
    listen: &ProgramAddress,
) -> Result<(tokio::process::Command, PathBuf), ProgramProblem> {
    let path = resolve_program(p, p.workdir.as_deref())?;
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(arguments(p, listen))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(w) = &p.workdir {
        cmd.current_dir(w);
    }
    match listen {
        ProgramAddress::Tcp(a) => cmd.env("PORT", a.port().to_string()).env_remove("BULWARK_SOCKET"),
        ProgramAddress::Unix(path) => cmd.env("BULWARK_SOCKET", path).env_remove("PORT"),
    };
    cmd.envs(&p.env)
        .env("BULWARK_LISTEN", listen.to_string())
        .env("BULWARK_DB_NODES", launch.db_nodes.join(","))
        .env("BULWARK_APP_NAME", &launch.app_name);
    match &launch.db_secret_file {
        Some(f) => cmd.env("BULWARK_DB_SECRET_FILE", f),
        None => cmd.env_remove("BULWARK_DB_SECRET_FILE"),
    };
    match &launch.db_tls {
        Some(t) => cmd.env("BULWARK_DB_CA", &t.ca).env("BULWARK_DB_CERT", &t.cert).env("BULWARK_DB_KEY", &t.key),
        None => cmd.env_remove("BULWARK_DB_CA").env_remove("BULWARK_DB_CERT").env_remove("BULWARK_DB_KEY"),
    };
    match &launch.releases {
        Some(r) => cmd.env("BULWARK_RELEASE", r.current()),
        None => cmd.env_remove("BULWARK_RELEASE"),
    };
    if let Some(user) = &p.user {
        let (uid, gid, home) = lookup_user(user)?;
        let me = nix::unistd::geteuid().as_raw();
        if me == 0 {
            // std drops the supplementary groups when it switches to uid.
            cmd.uid(uid).gid(gid).env("HOME", home).env("USER", user).env("LOGNAME", user);
        } else if me != uid {
            return Err(problem(
                "user",
                format!("running as `{user}` needs bulwark to run as root (it runs as uid {me})"),
            ));
        }
        if let Err(why) = super::user_may(&path, uid, gid, super::Access::Execute) {
            return Err(problem("exec[0]", format!("cannot start {} as user `{user}`: {why}", path.display())));
        }
        if let Some(w) = &p.workdir {
            if let Err(why) = super::user_may(w, uid, gid, super::Access::Read) {
                let message = format!("cannot start {} as user `{user}` in {}: {why}", path.display(), w.display());
                return Err(problem("workdir", message));
            }
        }
    }
    // Its own process group, so that a stop reaches the workers a program
    // forked too; and if the role dies without stopping it, the kernel
    // sends it SIGTERM (set after the switch of user, which clears it).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))
                .map_err(std::io::Error::from)?;
            nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGTERM)).map_err(std::io::Error::from)
        });
    }
    Ok((cmd, path))
}

async fn run_once(
    launch: &Launch,
    status: &watch::Sender<ProgramStatus>,
    probe: &ProbeClient,
    shutdown: &CancellationToken,
    start: u64,
) -> RunOutcome {
    let failed = |error: String| RunOutcome::Failed { error, healthy_for: Duration::ZERO };
    let listen = match pick_address(launch, start) {
        Ok(a) => a,
        Err(e) => return failed(format!("no private address for the program: {e}")),
    };
    let outcome = run_at(launch, status, probe, shutdown, &listen).await;
    if let ProgramAddress::Unix(path) = &listen {
        let _ = std::fs::remove_file(path);
    }
    outcome
}

/// Start the program at `listen`, watch it until it ends or is stopped.
async fn run_at(
    launch: &Launch,
    status: &watch::Sender<ProgramStatus>,
    probe: &ProbeClient,
    shutdown: &CancellationToken,
    listen: &ProgramAddress,
) -> RunOutcome {
    let failed = |error: String| RunOutcome::Failed { error, healthy_for: Duration::ZERO };
    // A deployable program runs its current release.
    let mut program = launch.program.clone();
    if let Some(r) = &launch.releases {
        program.workdir = r.current_dir();
    }
    let (mut cmd, path) = match command(launch, &program, listen) {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let user = program.user.as_deref().map(|u| format!(" as user `{u}`")).unwrap_or_default();
            let dir = program.workdir.as_ref().map(|w| format!(" in {}", w.display())).unwrap_or_default();
            return failed(format!("cannot start {}{user}{dir}: {e}", path.display()));
        }
    };
    let pid = child.id();
    let release = launch.releases.as_ref().map(|r| r.current()).unwrap_or_default();
    tracing::info!(app = %launch.app_name, pid, %listen, release, "program started: {}", launch.program.exec.join(" "));
    status.send_modify(|s| {
        s.state = ProgramState::Starting;
        s.pid = pid;
        s.listen = Some(listen.clone());
    });
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(out, "stdout"));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(err, "stderr"));
    }
    let started = Instant::now();
    let mut healthy_since: Option<Instant> = None;
    // Answered its health path at least once in this run.
    let mut run_healthy = false;
    let mut failures = 0u32;
    let health_url = match listen.uri(&launch.program.health_path) {
        Ok(u) => u,
        Err(e) => return failed(format!("health_path: {e}")),
    };
    let outcome = loop {
        let wait = if run_healthy { PROBE_INTERVAL } else { PROBE_STARTING };
        tokio::select! {
            exit = child.wait() => {
                let how = match exit {
                    Ok(st) => describe_exit(st),
                    Err(e) => format!("waiting for it failed: {e}"),
                };
                let healthy_for = healthy_since.map(|t| t.elapsed()).unwrap_or_default();
                let error = if run_healthy {
                    format!("ended ({how})")
                } else {
                    format!("exited before it answered GET {} ({how}); see its output above", launch.program.health_path)
                };
                break RunOutcome::Failed { error, healthy_for };
            }
            _ = shutdown.cancelled() => {
                stop(&mut child, launch).await;
                break RunOutcome::Stopped;
            }
            _ = launch.restart.notified() => {
                tracing::info!(app = %launch.app_name, pid, "program: restarting it (its release changed)");
                stop(&mut child, launch).await;
                break RunOutcome::Restart;
            }
            _ = tokio::time::sleep(wait) => {
                let ok = probe_once(probe, listen, health_url.clone()).await;
                match ok {
                    Ok(()) => {
                        failures = 0;
                        run_healthy = true;
                        if healthy_since.is_none() {
                            healthy_since = Some(Instant::now());
                            tracing::info!(app = %launch.app_name, pid, "program is healthy (GET {} on {listen})", launch.program.health_path);
                        }
                        status.send_if_modified(|s| {
                            let was = (s.state, s.ever_healthy);
                            s.state = ProgramState::Healthy;
                            s.ever_healthy = true;
                            was != (ProgramState::Healthy, true)
                        });
                    }
                    Err(why) => {
                        failures += 1;
                        if healthy_since.is_some() && failures >= PROBE_FALL {
                            if status.borrow().state == ProgramState::Healthy {
                                tracing::warn!(app = %launch.app_name, pid, "program is unhealthy: GET {}: {why}", launch.program.health_path);
                            }
                            healthy_since = None;
                            status.send_modify(|s| {
                                s.state = ProgramState::Unhealthy;
                                s.last_error = Some(format!("GET {}: {why}", launch.program.health_path));
                            });
                        } else if !run_healthy && started.elapsed() > launch.program.start_timeout {
                            stop(&mut child, launch).await;
                            break failed(format!(
                                "did not answer GET {} on {listen} within start_timeout ({:?}): {why}; it was stopped",
                                launch.program.health_path, launch.program.start_timeout
                            ));
                        }
                    }
                }
            }
        }
    };
    // Whatever it forked and left behind goes with it.
    if let Some(pid) = pid {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
    outcome
}

/// SIGTERM to the program; after `stop_grace`, SIGKILL to its process group.
async fn stop(child: &mut tokio::process::Child, launch: &Launch) {
    let Some(pid) = child.id() else { return };
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    match tokio::time::timeout(launch.program.stop_grace, child.wait()).await {
        Ok(st) => {
            let how = st.map(describe_exit).unwrap_or_else(|e| e.to_string());
            tracing::info!(app = %launch.app_name, "program stopped ({how})");
        }
        Err(_) => {
            tracing::warn!(
                app = %launch.app_name,
                "program did not exit within stop_grace ({:?}) of SIGTERM; killing it",
                launch.program.stop_grace
            );
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
}

/// Why one health probe of the program failed.
#[derive(Debug, thiserror::Error)]
enum ProbeFailure {
    #[error("{0}")]
    Request(#[from] http::Error),
    #[error("no answer within {PROBE_TIMEOUT:?}")]
    Timeout,
    #[error("{}", bulwark_db_api::http_client::with_causes(.0))]
    Connection(#[from] hyper_util::client::legacy::Error),
    #[error("answered {0}")]
    Status(http::StatusCode),
}

async fn probe_once(probe: &ProbeClient, to: &ProgramAddress, url: hyper::Uri) -> Result<(), ProbeFailure> {
    let mut req = hyper::Request::get(url).header("user-agent", "bulwark-app-health");
    if let ProgramAddress::Unix(_) = to {
        // A socket has no host name (the client would send the URI's
        // encoded path); on a port the client sends `127.0.0.1:PORT`.
        req = req.header("host", "localhost");
    }
    let req = req.body(Empty::new())?;
    match tokio::time::timeout(PROBE_TIMEOUT, probe.request(to, req)).await {
        Err(_) => Err(ProbeFailure::Timeout),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(r)) if r.status().is_success() || r.status().is_redirection() => Ok(()),
        Ok(Ok(r)) => Err(ProbeFailure::Status(r.status())),
    }
}

/// Each line the program writes, as one record of the role's log (target
/// `program`, prefixed with the stream).
async fn forward_lines(r: impl AsyncRead + Unpin, stream: &'static str) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut r).take(MAX_LINE_BYTES).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        tracing::info!(target: "program", "{stream} | {line}");
    }
}
