//! The process supervisor behind `bulwark up`.
use crate::probe::http_get;
use bulwark_config::topology::RoleKind;
use bulwark_telemetry::process::describe_exit;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// How to run one role.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Instance name, unique in the topology (`web1`).
    pub name: String,
    /// Role kind: the subcommand (`web`).
    pub kind: RoleKind,
    /// Host it belongs to (`server1`).
    pub host: String,
    /// Start order: every child of stage N is ready before stage N+1 starts;
    /// shutdown goes in reverse.
    pub stage: u8,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// stderr of the child is appended here.
    pub log_path: PathBuf,
    pub readiness: Readiness,
}

/// When a started child counts as ready.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// As soon as it printed its ready line.
    ReadyLine,
    /// Ready line, then `GET path` on the named listener answers `expect`
    /// (over mutual TLS with `tls`, when the role requires it).
    Http {
        listener: String,
        path: String,
        expect: u16,
        token: Option<bulwark_config::Secret>,
        tls: Option<bulwark_mtls::MutualTls>,
    },
}

#[derive(Debug, Clone)]
pub struct RestartPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A child that ran this long before dying starts again from the
    /// initial backoff.
    pub reset_after: Duration,
    /// Time a child gets to exit after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// Longest wait for one stage to become ready.
    pub ready_timeout: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            reset_after: Duration::from_secs(30),
            stop_grace: Duration::from_secs(15),
            ready_timeout: Duration::from_secs(60),
        }
    }
}

/// What `status` reports about a child.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChildStatus {
    pub name: String,
    pub kind: RoleKind,
    pub host: String,
    /// starting | ready | failing | stopping | stopped | backoff
    /// (`failing`: it runs, but said it cannot serve yet, see
    /// [`SupervisorError::Failing`]).
    pub state: String,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub listeners: BTreeMap<String, String>,
    pub last_exit: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0} did not become ready within {1:?}; see its log at {2}")]
    NotReady(String, Duration, String),
    /// The child runs but printed a failed line (`{"failed":{"error":..}}`):
    /// it cannot serve yet (an app whose program does not start) and keeps
    /// trying on its own; it becomes ready when it can.
    #[error("{name} is failing: {error} (see its log at {log})")]
    Failing { name: String, error: String, log: String },
    #[error("no role named `{0}` in this topology")]
    NoSuchRole(String),
    #[error("control socket {0}: {1}")]
    Control(String, std::io::Error),
}

struct Slot {
    spec: ChildSpec,
    status: ChildStatus,
    /// False after `stop NAME`: the child stays down until `start NAME`.
    wanted: bool,
    /// Set by `kill NAME`: stop with SIGKILL at once instead of SIGTERM.
    kill: bool,
    /// Wakes the child's monitor task (stop/start requests).
    poke: Arc<Notify>,
}

/// Runs and watches a set of children. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Supervisor {
    slots: Arc<Mutex<Vec<Slot>>>,
    policy: RestartPolicy,
    changed: watch::Sender<u64>,
    shutting_down: CancellationToken,
}

impl Supervisor {
    pub fn new(specs: Vec<ChildSpec>, policy: RestartPolicy) -> Supervisor {
        let slots = specs
            .into_iter()
            .map(|spec| Slot {
                status: ChildStatus {
                    name: spec.name.clone(),
                    kind: spec.kind,
                    host: spec.host.clone(),
                    state: "stopped".into(),
                    pid: None,
                    restarts: 0,
                    listeners: BTreeMap::new(),
                    last_exit: None,
                },
                spec,
                wanted: false,
                kill: false,
                poke: Arc::new(Notify::new()),
            })
            .collect();
        Supervisor {
            slots: Arc::new(Mutex::new(slots)),
            policy,
            changed: watch::channel(0).0,
            shutting_down: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g += 1);
    }

    pub fn status(&self) -> Vec<ChildStatus> {
        self.lock().iter().map(|s| s.status.clone()).collect()
    }

    /// The distinct stages, in start order.
    pub fn stages(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self.lock().iter().map(|s| s.spec.stage).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Start every child stage by stage; `progress` is told each step.
    /// Returns once all are ready, or the first readiness failure.
    pub async fn start_all(&self, mut progress: impl FnMut(&str)) -> Result<Vec<String>, SupervisorError> {
        let mut failing = Vec::new();
        for stage in self.stages() {
            failing.extend(self.start_stage(stage, &mut progress).await?);
        }
        Ok(failing)
    }

    /// Start the children of one stage and wait until each is ready. A
    /// child that reports itself failing ([`SupervisorError::Failing`]) does
    /// not stop the start: `progress` names it and its reason, it keeps
    /// running (and trying), and its name is returned.
    pub async fn start_stage(
        &self,
        stage: u8,
        progress: &mut impl FnMut(&str),
    ) -> Result<Vec<String>, SupervisorError> {
        let names: Vec<String> =
            self.lock().iter().filter(|s| s.spec.stage == stage).map(|s| s.spec.name.clone()).collect();
        progress(&format!("starting {}", names.join(", ")));
        for n in &names {
            self.set_wanted(n, true)?;
        }
        let mut failing = Vec::new();
        for n in &names {
            match self.wait_ready(n).await {
                Ok(()) => {}
                Err(SupervisorError::Failing { name, error, log }) => {
                    progress(&format!("  {name} FAILING: {error}\n    (it keeps trying; its log: {log})"));
                    failing.push(name);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let st = self.child(n).expect("known child");
            let addrs: Vec<String> = st.listeners.iter().map(|(k, v)| format!("{k}={v}")).collect();
            progress(&format!("  {n} ready (pid {}, {})", st.pid.unwrap_or(0), addrs.join(" ")));
        }
        Ok(failing)
    }

    pub fn child(&self, name: &str) -> Option<ChildStatus> {
        self.lock().iter().find(|s| s.spec.name == name).map(|s| s.status.clone())
    }

    /// Wait until `name` is ready (bounded by the policy's ready timeout).
    pub async fn wait_ready(&self, name: &str) -> Result<(), SupervisorError> {
        let mut rx = self.changed.subscribe();
        let deadline = Instant::now() + self.policy.ready_timeout;
        loop {
            let (state, error, log) = {
                let slots = self.lock();
                let s = slots
                    .iter()
                    .find(|s| s.spec.name == name)
                    .ok_or_else(|| SupervisorError::NoSuchRole(name.into()))?;
                (s.status.state.clone(), s.status.last_exit.clone(), s.spec.log_path.display().to_string())
            };
            match state.as_str() {
                "ready" => return Ok(()),
                "failing" => {
                    let error = error.unwrap_or_default();
                    return Err(SupervisorError::Failing { name: name.into(), error, log });
                }
                _ => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return Err(SupervisorError::NotReady(name.into(), self.policy.ready_timeout, log));
            }
        }
    }

    /// `start NAME` / `stop NAME`: mark wanted or not and wake its monitor.
    pub fn set_wanted(&self, name: &str, wanted: bool) -> Result<(), SupervisorError> {
        let spawn = {
            let mut slots = self.lock();
            let s = slots
                .iter_mut()
                .find(|s| s.spec.name == name)
                .ok_or_else(|| SupervisorError::NoSuchRole(name.into()))?;
            let first = !s.wanted
                && s.status.state == "stopped"
                && s.status.pid.is_none()
                && s.status.restarts == 0
                && s.status.last_exit.is_none();
            s.wanted = wanted;
            if wanted {
                s.kill = false;
            }
            s.poke.notify_one();
            first && wanted
        };
        if spawn {
            let me = self.clone();
            let name = name.to_string();
            tokio::spawn(async move { me.monitor(name).await });
        }
        Ok(())
    }

    /// Stop every child, highest stage first, and wait for them to exit.
    pub async fn shutdown(&self) {
        self.shutting_down.cancel();
        let mut stages: Vec<u8> = self.lock().iter().map(|s| s.spec.stage).collect();
        stages.sort_unstable();
        stages.dedup();
        for stage in stages.into_iter().rev() {
            let names: Vec<String> =
                self.lock().iter().filter(|s| s.spec.stage == stage).map(|s| s.spec.name.clone()).collect();
            for n in &names {
                let _ = self.set_wanted_quiet(n, false);
            }
            for n in &names {
                self.wait_state(n, "stopped", self.policy.stop_grace + Duration::from_secs(5)).await;
            }
        }
    }

    /// `kill NAME`: SIGKILL the child now and keep it down until `start
    /// NAME` (a `kill -9` that the supervisor does not undo: with a signal
    /// sent from outside, the supervisor may restart the child before a
    /// `stop` arrives, and that `stop` then stops the new process).
    pub fn kill_and_hold(&self, name: &str) -> Result<(), SupervisorError> {
        let mut slots = self.lock();
        let s =
            slots.iter_mut().find(|s| s.spec.name == name).ok_or_else(|| SupervisorError::NoSuchRole(name.into()))?;
        s.wanted = false;
        s.kill = true;
        s.poke.notify_one();
        Ok(())
    }

    fn kill_requested(&self, name: &str) -> bool {
        self.lock().iter().any(|s| s.spec.name == name && s.kill)
    }

    fn set_wanted_quiet(&self, name: &str, wanted: bool) -> Result<(), SupervisorError> {
        let mut slots = self.lock();
        let s =
            slots.iter_mut().find(|s| s.spec.name == name).ok_or_else(|| SupervisorError::NoSuchRole(name.into()))?;
        s.wanted = wanted;
        s.poke.notify_one();
        Ok(())
    }

    pub async fn wait_state(&self, name: &str, state: &str, limit: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        let deadline = Instant::now() + limit;
        loop {
            if self.child(name).map(|c| c.state == state).unwrap_or(true) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return false;
            }
        }
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut ChildStatus)) {
        {
            let mut slots = self.lock();
            if let Some(s) = slots.iter_mut().find(|s| s.spec.name == name) {
                f(&mut s.status);
            }
        }
        self.bump();
    }

    fn wanted(&self, name: &str) -> (bool, Arc<Notify>, ChildSpec) {
        let slots = self.lock();
        let s = slots.iter().find(|s| s.spec.name == name).expect("monitor of a known child");
        (s.wanted, s.poke.clone(), s.spec.clone())
    }

    /// One task per child for the supervisor's lifetime: start it while
    /// wanted, restart it with backoff when it dies, stop it when unwanted.
    async fn monitor(self, name: String) {
        let mut backoff = self.policy.initial_backoff;
        // A crash whose restart is still to come (counted when it comes: a
        // stop during the backoff is no restart).
        let mut restart_due = false;
        loop {
            let (wanted, poke, spec) = self.wanted(&name);
            if !wanted {
                restart_due = false;
                // Also a stop that came during the backoff: down, not
                // "backoff", from now on.
                if self.child(&name).is_some_and(|c| c.state != "stopped") {
                    self.update(&name, |s| s.state = "stopped".into());
                }
                if self.shutting_down.is_cancelled() {
                    return;
                }
                poke.notified().await;
                continue;
            }
            self.update(&name, |s| {
                s.state = "starting".into();
                s.listeners.clear();
                if std::mem::take(&mut restart_due) {
                    s.restarts += 1;
                }
            });
            let started = Instant::now();
            let exit = self.run_once(&spec, &poke).await;
            let (wanted, _, _) = self.wanted(&name);
            // During shutdown nothing is restarted, whatever stopped it.
            let stopped_on_purpose = !wanted || self.shutting_down.is_cancelled();
            self.update(&name, |s| {
                s.pid = None;
                s.last_exit = Some(exit.clone());
                s.state = if stopped_on_purpose { "stopped".into() } else { "backoff".into() };
            });
            if stopped_on_purpose {
                tracing::info!(role = %name, "stopped ({exit})");
                backoff = self.policy.initial_backoff;
                continue;
            }
            if started.elapsed() >= self.policy.reset_after {
                backoff = self.policy.initial_backoff;
            }
            tracing::warn!(role = %name, "exited unexpectedly ({exit}); restarting in {:?}", backoff);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = poke.notified() => {}
            }
            backoff = (backoff * 2).min(self.policy.max_backoff);
            restart_due = true;
        }
    }

    /// Run the child once; returns a description of how it ended.
    async fn run_once(&self, spec: &ChildSpec, poke: &Notify) -> String {
        let log = crate::private::open_log(&spec.log_path);
        let stderr = match log {
            Ok(f) => Stdio::from(f),
            Err(e) => {
                tracing::error!(role = %spec.name, "cannot open log {}: {e}", spec.log_path.display());
                Stdio::null()
            }
        };
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).kill_on_drop(true);
        // If the supervisor dies without cleaning up, the kernel stops the
        // child too: no orphaned roles. Each child gets its own process
        // group, so a Ctrl-C in the terminal reaches only the supervisor,
        // which then stops the roles in order (instead of all at once, and
        // mistaking their exits for crashes).
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))
                    .map_err(std::io::Error::from)?;
                nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGTERM)).map_err(std::io::Error::from)
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return format!("spawn failed: {e}"),
        };
        let pid = child.id();
        self.update(&spec.name, |s| s.pid = pid);
        tracing::info!(role = %spec.name, pid, "started");
        // Read the ready line; keep draining stdout afterwards.
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<BTreeMap<String, String>>(1);
        let me = self.clone();
        let name = spec.name.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(map) = v["ready"]["listeners"].as_object() {
                        let l = map.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect();
                        let _ = ready_tx.send(l).await;
                    } else if let Some(error) = v["failed"]["error"].as_str() {
                        // Until it is ready: a started role that cannot serve yet.
                        tracing::error!(role = %name, "failing: {error}");
                        me.update(&name, |s| {
                            if s.state == "starting" || s.state == "failing" {
                                s.state = "failing".into();
                                s.last_exit = Some(error.to_string());
                            }
                        });
                    }
                }
            }
        });
        let me = self.clone();
        let name = spec.name.clone();
        let readiness = spec.readiness.clone();
        let readiness_task = tokio::spawn(async move {
            let Some(listeners) = ready_rx.recv().await else { return };
            me.update(&name, |s| s.listeners = listeners.clone());
            if let Readiness::Http { listener, path, expect, token, tls } = &readiness {
                let Some(addr) = listeners.get(listener).and_then(|a| a.parse::<SocketAddr>().ok()) else {
                    tracing::error!(role = %name, "no listener `{listener}` on the ready line");
                    return;
                };
                loop {
                    let token = token.as_ref().map(|t| t.expose());
                    match http_get(addr, path, token, tls.as_ref(), Duration::from_secs(2)).await {
                        Ok((s, _)) if s == *expect => break,
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
            me.update(&name, |s| s.state = "ready".into());
            tracing::info!(role = %name, "ready");
        });
        let status = loop {
            tokio::select! {
                st = child.wait() => break st,
                _ = poke.notified() => {
                    let (wanted, _, _) = self.wanted(&spec.name);
                    if !wanted && self.kill_requested(&spec.name) {
                        self.update(&spec.name, |s| s.state = "stopping".into());
                        let _ = child.start_kill();
                        break child.wait().await;
                    }
                    if !wanted {
                        self.update(&spec.name, |s| s.state = "stopping".into());
                        if let Some(pid) = pid {
                            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
                        }
                        match tokio::time::timeout(self.policy.stop_grace, child.wait()).await {
                            Ok(st) => break st,
                            Err(_) => {
                                tracing::warn!(role = %spec.name, "did not exit within {:?} of SIGTERM; killing", self.policy.stop_grace);
                                let _ = child.kill().await;
                                break child.wait().await;
                            }
                        }
                    }
                }
            }
        };
        readiness_task.abort();
        match status {
            Ok(st) => describe_exit(st),
            Err(e) => format!("wait failed: {e}"),
        }
    }
}
