//! How the lb judges its servers and retries on them: the active check
//! (`health_check`), passive ejection (`passive`) and `retries`. The web
//! role's `[[proxy]]` routes use the same three tables.
use crate::{Validate, Validator};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    #[default]
    Tcp,
    Http,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// HTTP checks: path requested with GET.
    pub path: String,
    /// HTTP checks: the status that means healthy.
    pub expect_status: u16,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes to mark a down server up.
    pub rise: u32,
    /// Consecutive failures to mark an up server down.
    pub fall: u32,
    /// What happens to requests still waiting for a response head from a
    /// server when its check marks it down: `shutdown-sessions` (default,
    /// HAProxy's `on-marked-down shutdown-sessions`) ends the wait at once,
    /// so a replayable request (bodiless idempotent, or with an
    /// `Idempotency-Key`) goes to another server and any other gets 502
    /// instead of hanging on a dead or cut-off server until `timeouts.server`;
    /// `keep` lets them wait.
    pub on_marked_down: OnMarkedDown,
}

/// See [`HealthCheck::on_marked_down`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMarkedDown {
    #[default]
    ShutdownSessions,
    Keep,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            kind: CheckKind::Tcp,
            path: "/".into(),
            expect_status: 200,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            on_marked_down: OnMarkedDown::default(),
        }
    }
}

impl Validate for HealthCheck {
    fn validate(&self, v: &mut Validator) {
        if self.interval < Duration::from_millis(10) {
            v.error("interval", "must be at least 10ms");
        }
        if self.timeout.is_zero() {
            v.error("timeout", "must be greater than 0");
        }
        if self.rise == 0 {
            v.error("rise", "must be at least 1");
        }
        if self.fall == 0 {
            v.error("fall", "must be at least 1");
        }
        if !(100..=599).contains(&self.expect_status) {
            v.error("expect_status", "must be an HTTP status between 100 and 599");
        }
        if !self.path.starts_with('/') {
            v.error("path", "must start with /");
        }
    }
}

/// Passive health: eject a server after consecutive failures seen on real
/// traffic, for `eject_for`, without waiting for the active check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveHealth {
    /// Consecutive connection errors (and 5xx if `on_5xx`) before ejection;
    /// 0 disables passive ejection.
    pub consecutive_errors: u32,
    pub on_5xx: bool,
    #[serde(with = "humantime_serde")]
    pub eject_for: Duration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth { consecutive_errors: 5, on_5xx: true, eject_for: Duration::from_secs(10) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retries {
    /// Extra attempts after the first (each on another server when possible).
    pub attempts: u32,
    /// Retries may add at most this fraction of the request rate...
    pub budget_ratio: f64,
    /// ...plus this many retries per second, so low traffic can still retry.
    pub budget_min_per_sec: u32,
    /// A request carrying an `Idempotency-Key` header has its body read
    /// ahead into memory up to this many bytes, so that it can be replayed
    /// on another server when the first one fails before answering. A
    /// larger body is streamed and not replayed; 0 turns keyed replays of
    /// requests with a body off.
    pub max_replay_body_bytes: u64,
}

impl Default for Retries {
    fn default() -> Self {
        Retries { attempts: 2, budget_ratio: 0.2, budget_min_per_sec: 10, max_replay_body_bytes: 64 * 1024 }
    }
}

/// Upper bound of `retries.max_replay_body_bytes`: every keyed request in
/// flight may hold this much memory.
const MAX_REPLAY_BODY_BYTES: u64 = 16 * 1024 * 1024;

impl Validate for Retries {
    fn validate(&self, v: &mut Validator) {
        if self.attempts > 10 {
            v.error("attempts", "must be at most 10");
        }
        if !(0.0..=1.0).contains(&self.budget_ratio) {
            v.error("budget_ratio", "must be between 0.0 and 1.0");
        }
        if self.max_replay_body_bytes > MAX_REPLAY_BODY_BYTES {
            v.error("max_replay_body_bytes", format!("must be at most {MAX_REPLAY_BODY_BYTES} (it is held in memory)"));
        }
    }
}
