//! The app role's side of `bulwark deploy`: endpoints under
//! `/_bulwark/deploy/` on the role's listener, opened by the deploy token
//! (`Authorization: Bearer`, `deploy_token`), that take this app server
//! out of rotation, switch the release its program runs and put it back.
//!
//! - `GET  status`   the releases (current, previous), drain state, requests in flight, the program
//! - `POST prepare`  `{"path", "digest"}`: copy a release in (see [`crate::program::release`])
//! - `POST drain`    `/api/health` answers 503 `draining`: the web tier's checks take the server out
//! - `POST switch`   `{"release"}`: wait for the requests in flight, restart the program on that
//!   release, wait until it is healthy; when it never is, switch back and answer 409 with why
//! - `POST undrain`  `/api/health` answers for the program again: back in rotation
//! - `POST prune`    remove releases beyond `keep_releases`
//!
//! A request forwarded by the web tier (it carries `X-Bulwark-Cluster`)
//! never reaches these endpoints: it goes to the program like any other
//! path. Without a deploy token or a `release_dir` they answer 404.
//! A drain lapses on its own after [`DRAIN_LEASE`] plus the program's
//! stop and start times, so a `deploy` that dies half-way does not keep
//! the server out of rotation for ever.
use crate::program::release::Releases;
use crate::program::ProgramStatus;
use bulwark_config::app::AppConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// Path prefix of the deploy endpoints.
pub const PREFIX: &str = "/_bulwark/deploy/";
/// How long a drain lasts without being renewed, besides the program's
/// `stop_grace` and twice its `start_timeout`.
pub const DRAIN_LEASE: Duration = Duration::from_secs(60);
/// Longest wait for the requests in flight before the program is stopped
/// anyway (it then gets `stop_grace` to finish them).
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);
/// Failed starts of a new release before it is given up.
const FAILED_STARTS: u32 = 2;

pub(crate) struct DeployState {
    token: Option<String>,
    releases: Option<Releases>,
    restart: Arc<Notify>,
    lease: Duration,
    start_wait: Duration,
    drained_until: Mutex<Option<Instant>>,
    /// Requests handed to the program and not yet answered.
    in_flight: Arc<AtomicU64>,
    /// One switch at a time.
    switching: tokio::sync::Mutex<()>,
}

/// Counts one request in flight while it lives.
pub(crate) struct InFlight(Arc<AtomicU64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer of a deploy endpoint: status and JSON body.
pub(crate) type Answer = (http::StatusCode, serde_json::Value);

fn error(status: http::StatusCode, message: impl Into<String>) -> Answer {
    (status, serde_json::json!({ "error": message.into() }))
}

impl DeployState {
    pub(crate) fn new(
        config: &AppConfig,
        token: Option<String>,
        releases: Option<Releases>,
        restart: Arc<Notify>,
    ) -> DeployState {
        let (grace, start) = config.program.as_ref().map(|p| (p.stop_grace, p.start_timeout)).unwrap_or_default();
        DeployState {
            token,
            releases,
            restart,
            lease: DRAIN_LEASE + grace + 2 * start,
            start_wait: grace + start + Duration::from_secs(5),
            drained_until: Mutex::new(None),
            in_flight: Arc::new(AtomicU64::new(0)),
            switching: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.drained_until.lock().unwrap().is_some_and(|t| Instant::now() < t)
    }

    pub(crate) fn track(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.in_flight.clone())
    }

    fn drain(&self, on: bool) {
        *self.drained_until.lock().unwrap() = on.then(|| Instant::now() + self.lease);
    }

    /// Whether the request is for these endpoints: their path, and not
    /// forwarded by the web tier.
    pub(crate) fn wants(&self, req: &http::Request<hyper::body::Incoming>) -> bool {
        req.uri().path().starts_with(PREFIX) && !req.headers().contains_key("x-bulwark-cluster")
    }

    pub(crate) async fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        status: &watch::Receiver<ProgramStatus>,
        app: &str,
    ) -> Answer {
        use http::StatusCode as S;
        let (Some(token), Some(releases)) = (&self.token, &self.releases) else {
            return error(S::NOT_FOUND, "this app server takes no deploys (no deploy_token or release_dir)");
        };
        if !bulwark_firewall::bearer_matches(req.headers(), token) {
            return error(S::UNAUTHORIZED, "the deploy endpoints need the deploy token as `Authorization: Bearer`");
        }
        let (parts, body) = req.into_parts();
        let action = parts.uri.path()[PREFIX.len()..].to_string();
        let get = parts.method == http::Method::GET;
        let post = parts.method == http::Method::POST;
        let body: serde_json::Value = if post {
            use http_body_util::BodyExt;
            let limited = http_body_util::Limited::new(body, 64 << 10);
            match tokio::time::timeout(Duration::from_secs(10), limited.collect()).await {
                Ok(Ok(b)) => {
                    let bytes = b.to_bytes();
                    if bytes.is_empty() {
                        serde_json::json!({})
                    } else {
                        match serde_json::from_slice(&bytes) {
                            Ok(v) => v,
                            Err(e) => return error(S::BAD_REQUEST, format!("the body is not JSON: {e}")),
                        }
                    }
                }
                _ => return error(S::BAD_REQUEST, "the body could not be read (at most 64 KiB, within 10 s)"),
            }
        } else {
            serde_json::Value::Null
        };
        match (action.as_str(), get, post) {
            ("status", true, _) => (S::OK, self.status(releases, status, app)),
            ("prepare", _, true) => {
                let (Some(path), Some(digest)) = (body["path"].as_str(), body["digest"].as_str()) else {
                    return error(S::BAD_REQUEST, "expected {\"path\": DIR, \"digest\": HEX}");
                };
                let (r, path, digest) = (releases.clone(), std::path::PathBuf::from(path), digest.to_string());
                match tokio::task::spawn_blocking(move || r.import(&path, &digest)).await {
                    Ok(Ok(id)) => (S::OK, serde_json::json!({ "app": app, "release": id })),
                    Ok(Err(e)) => error(S::UNPROCESSABLE_ENTITY, format!("{app}: {e}")),
                    Err(e) => error(S::INTERNAL_SERVER_ERROR, format!("{app}: copying the release failed: {e}")),
                }
            }
            ("drain" | "undrain", _, true) => {
                self.drain(action == "drain");
                (S::OK, self.status(releases, status, app))
            }
            ("switch", _, true) => {
                let Some(id) = body["release"].as_str() else {
                    return error(S::BAD_REQUEST, "expected {\"release\": ID}");
                };
                self.switch(releases, id, status.clone(), app).await
            }
            ("prune", _, true) => {
                let r = releases.clone();
                let removed = tokio::task::spawn_blocking(move || r.prune()).await.unwrap_or_default();
                (S::OK, serde_json::json!({ "app": app, "removed": removed }))
            }
            _ => error(S::NOT_FOUND, format!("no deploy endpoint {} {}", parts.method, parts.uri.path())),
        }
    }

    fn status(&self, releases: &Releases, status: &watch::Receiver<ProgramStatus>, app: &str) -> serde_json::Value {
        serde_json::json!({
            "app": app,
            "current": releases.current(),
            "previous": releases.previous(),
            "draining": self.is_draining(),
            "in_flight": self.in_flight.load(Ordering::Acquire),
            "program": *status.borrow(),
        })
    }

    /// Switch to release `id`: wait for the requests in flight, restart
    /// the program there, wait until it is healthy; when it never is,
    /// switch back the same way and answer 409.
    async fn switch(
        &self,
        releases: &Releases,
        id: &str,
        mut status: watch::Receiver<ProgramStatus>,
        app: &str,
    ) -> Answer {
        use http::StatusCode as S;
        let _one = self.switching.lock().await;
        let (was, was_previous) = (releases.current(), releases.previous());
        if was == id && status.borrow().is_healthy() {
            return (S::OK, serde_json::json!({ "app": app, "current": id, "previous": was_previous }));
        }
        // The drain lasts while the switch does.
        if self.is_draining() {
            self.drain(true);
        }
        let deadline = Instant::now() + IN_FLIGHT_WAIT;
        while self.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            // Requests in flight end on their own; poll at a short interval.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = releases.switch(id) {
            return error(S::UNPROCESSABLE_ENTITY, format!("{app}: {e}"));
        }
        tracing::info!(app, from = %was, to = %id, "deploy: switching the program's release");
        let why = match self.restart_until_healthy(&mut status).await {
            Ok(()) => {
                tracing::info!(app, release = %id, "deploy: the program is healthy on its new release");
                return (S::OK, serde_json::json!({ "app": app, "current": id, "previous": releases.previous() }));
            }
            Err(why) => why,
        };
        tracing::error!(app, release = %id, "deploy: release {id} never became healthy ({why}); going back to {was}");
        if let Err(e) = releases.restore(&was, was_previous.as_deref()) {
            return error(S::INTERNAL_SERVER_ERROR, format!("{app}: release {id} failed ({why}); going back: {e}"));
        }
        let back = match self.restart_until_healthy(&mut status).await {
            Ok(()) => format!("{app} is back on release {was}"),
            Err(e) => format!("{app} did not become healthy on release {was} either: {e}"),
        };
        (
            S::CONFLICT,
            serde_json::json!({
                "app": app,
                "error": format!("release {id} never became healthy on {app}: {why}; {back}"),
                "current": releases.current(),
            }),
        )
    }

    /// Restart the program and wait until a new run is healthy; fails
    /// after [`FAILED_STARTS`] failed runs or the start wait.
    async fn restart_until_healthy(&self, status: &mut watch::Receiver<ProgramStatus>) -> Result<(), NotHealthy> {
        let (restarts, failures) = {
            let st = status.borrow_and_update();
            (st.restarts, st.failures)
        };
        self.restart.notify_one();
        let deadline = tokio::time::Instant::now() + self.start_wait;
        loop {
            {
                let st = status.borrow_and_update();
                if st.restarts > restarts && st.is_healthy() {
                    return Ok(());
                }
                if st.failures >= failures + FAILED_STARTS {
                    return Err(NotHealthy::FailedStarts(st.last_error.clone()));
                }
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(NotHealthy::SupervisionEnded),
                Err(_) => {
                    let st = status.borrow();
                    let why = st.last_error.clone().unwrap_or_else(|| format!("{:?}", st.state).to_lowercase());
                    return Err(NotHealthy::Timeout(self.start_wait, why));
                }
            }
        }
    }
}

/// Why a program did not come back healthy after a release switch.
#[derive(Debug, thiserror::Error)]
enum NotHealthy {
    /// It failed [`FAILED_STARTS`] times; the last error, if any.
    #[error("{}", .0.as_deref().unwrap_or("it failed to start"))]
    FailedStarts(Option<String>),
    #[error("the program's supervision ended")]
    SupervisionEnded,
    /// Not healthy within the start wait; its last error or state.
    #[error("not healthy within {0:?} ({1})")]
    Timeout(Duration, String),
}
