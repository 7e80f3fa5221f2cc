use crate::balance::{Balancer, HashRing};
use crate::server::ServerState;
use crate::sticky::StickyCookie;
use bulwark_config::lb::{Backend, Balance, Sticky};
use bulwark_config::Secret;
use bulwark_telemetry::clock::monotonic_ms;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A pool of servers that requests are balanced over (HAProxy's backend,
/// nginx's upstream). Cheap to share: everything mutable is atomic or
/// behind a short lock.
#[derive(Debug)]
pub struct Upstream {
    pub config: Backend,
    pub servers: Vec<Arc<ServerState>>,
    /// Mutual TLS to the servers (the backend's `tls_*` keys): every new
    /// connection and health check presents this role's certificate and
    /// checks the server's against the CA and the server's IP address.
    pub tls: Option<bulwark_mtls::MutualTls>,
    balancer: Balancer,
    pub retry_budget: RetryBudget,
    /// The signed cookie of `sticky = "cookie"`.
    pub sticky: Option<StickyCookie>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("backend `{backend}` server `{server}`: cannot resolve `{address}`: {source}")]
    Resolve { backend: String, server: String, address: String, source: std::io::Error },
    #[error("backend `{backend}`: {source}")]
    Tls { backend: String, source: bulwark_mtls::MtlsError },
    #[error("backend `{backend}`: sticky cookie key: {reason}")]
    Sticky { backend: String, reason: String },
}

impl Upstream {
    /// Build from config, resolving server addresses. `previous` servers with
    /// the same name and address keep their live state (health, counters).
    pub fn new(config: Backend, previous: Option<&Upstream>) -> Result<Upstream, UpstreamError> {
        let tls = bulwark_mtls::MutualTls::load_optional(config.mutual_tls.as_ref())
            .map_err(|source| UpstreamError::Tls { backend: config.name.clone(), source })?;
        let mut servers = Vec::with_capacity(config.servers.len());
        for s in &config.servers {
            let addr = s.address.resolve().map_err(|source| UpstreamError::Resolve {
                backend: config.name.clone(),
                server: s.name.clone(),
                address: s.address.to_string(),
                source,
            })?;
            let old = previous.and_then(|p| p.servers.iter().find(|o| o.name == s.name && o.addr == addr));
            let state = match old {
                Some(o) if o.weight == s.weight && o.backup == s.backup => {
                    o.disabled.store(s.disabled, Ordering::Relaxed);
                    o.clone()
                }
                Some(o) => {
                    let n = ServerState::new(&config.name, &s.name, addr, s.weight, s.backup, s.disabled);
                    n.inherit(o);
                    Arc::new(n)
                }
                None => Arc::new(ServerState::new(&config.name, &s.name, addr, s.weight, s.backup, s.disabled)),
            };
            servers.push(state);
        }
        let balancer = match config.balance {
            Balance::Roundrobin => Balancer::RoundRobin(Mutex::new(vec![0; servers.len()])),
            Balance::Source => Balancer::Source(HashRing::new(&servers)),
            Balance::Leastconn => Balancer::LeastConn(AtomicU64::new(0)),
            Balance::Random => Balancer::Random,
            Balance::First => Balancer::First,
            Balance::Ewma => Balancer::Ewma,
        };
        let retry_budget = RetryBudget::new(config.retries.budget_ratio, config.retries.budget_min_per_sec);
        let sticky = match config.sticky {
            Sticky::Off => None,
            Sticky::Cookie => Some(sticky_cookie(&config, previous.and_then(|p| p.sticky.as_ref()))?),
        };
        Ok(Upstream { config, servers, tls, balancer, retry_budget, sticky })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether server `idx` may take a request now: enabled, available,
    /// and under the backend's connection cap (a sticky client's server).
    pub fn is_pickable(&self, idx: usize, now: u64) -> bool {
        let s = &self.servers[idx];
        !s.disabled.load(Ordering::Relaxed)
            && s.is_available(now)
            && self.config.max_connections.is_none_or(|cap| s.in_flight.load(Ordering::Relaxed) < cap)
    }

    /// Choose a server for a request from `client`, skipping the indexes in
    /// `tried`. Backup servers are used only when no active server is
    /// available, or, in panic (see [`Upstream::in_panic`]), alongside the
    /// available active ones; in panic without an available backup, every
    /// enabled active server is a candidate whatever its health. Returns an
    /// index into `servers`.
    pub fn pick(&self, client: IpAddr, tried: &[usize]) -> Option<usize> {
        self.pick_at(client, tried, monotonic_ms())
    }

    /// [`Upstream::pick`] with the caller's monotonic clock reading in ms.
    pub fn pick_at(&self, client: IpAddr, tried: &[usize], now: u64) -> Option<usize> {
        let cap = self.config.max_connections;
        let mut eligible: smallvec_lite::Candidates = smallvec_lite::Candidates::new();
        let candidate = |i: usize, s: &ServerState| !tried.contains(&i) && !s.disabled.load(Ordering::Relaxed);
        if self.in_panic(now) {
            for (i, s) in self.servers.iter().enumerate() {
                if candidate(i, s) && s.is_available(now) {
                    eligible.push(i);
                }
            }
            if !eligible.as_slice().iter().any(|&i| self.servers[i].backup) {
                // Envoy's panic routing: too few servers pass their checks
                // for them to carry the load (or the checks are wrong):
                // balance over every enabled active server.
                eligible = self
                    .servers
                    .iter()
                    .enumerate()
                    .filter(|&(i, s)| !s.backup && candidate(i, s))
                    .map(|(i, _)| i)
                    .collect();
            }
        } else {
            for backup in [false, true] {
                for (i, s) in self.servers.iter().enumerate() {
                    if s.backup == backup && s.is_available(now) && !tried.contains(&i) {
                        eligible.push(i);
                    }
                }
                if !eligible.is_empty() {
                    break;
                }
            }
        }
        if eligible.is_empty() {
            return None;
        }
        if let (Some(cap), false) = (cap, self.config.balance == Balance::First) {
            let below: smallvec_lite::Candidates =
                eligible.iter().copied().filter(|&i| self.servers[i].in_flight.load(Ordering::Relaxed) < cap).collect();
            if below.is_empty() {
                return None;
            }
            eligible = below;
        }
        self.balancer.pick(&self.servers, &eligible, client, now, &self.config)
    }

    /// True when fewer than `panic_threshold_percent` of the enabled
    /// active servers are available (up by their check and not ejected):
    /// the health verdicts then no longer decide alone, so a wrong check
    /// or a wave of ejections never takes the last servers out.
    pub fn in_panic(&self, now: u64) -> bool {
        let threshold = u64::from(self.config.panic_threshold_percent);
        if threshold == 0 {
            return false;
        }
        let (mut enabled, mut available) = (0u64, 0u64);
        for s in self.servers.iter().filter(|s| !s.backup && !s.disabled.load(Ordering::Relaxed)) {
            enabled += 1;
            available += u64::from(s.is_available(now));
        }
        enabled > 0 && available * 100 < threshold * enabled
    }

    /// True when at least one server could take a request.
    pub fn has_available(&self) -> bool {
        let now = monotonic_ms();
        self.servers.iter().any(|s| s.is_available(now))
    }
}

/// The sticky cookie of a backend, signed with `sticky_secret`, else a
/// key derived from `cluster_secret`, else a random key kept across
/// reloads.
fn sticky_cookie(config: &Backend, previous: Option<&StickyCookie>) -> Result<StickyCookie, UpstreamError> {
    let error = |reason: String| UpstreamError::Sticky { backend: config.name.clone(), reason };
    let own = Secret::resolve(config.sticky_secret.as_ref(), config.sticky_secret_file.as_deref(), "sticky_secret")
        .map_err(|e| error(e.to_string()))?;
    let secret = match own {
        Some(s) => Some(s),
        None => {
            Secret::resolve(config.cluster_secret.as_ref(), config.cluster_secret_file.as_deref(), "cluster_secret")
                .map_err(|e| error(e.to_string()))?
        }
    };
    Ok(StickyCookie::new(&config.sticky_cookie, secret.as_ref().map(|s| s.expose().as_bytes()), previous))
}

/// Caps retries at `ratio` × requests + `min_per_sec` per one-second
/// window, so a failing backend does not get its load multiplied by
/// retries. Lock-free; the window reset is approximate under races, which
/// only matters at the second boundary.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: u32,
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_sec: u32) -> Self {
        RetryBudget {
            ratio,
            min_per_sec,
            second: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    fn roll(&self, now_ms: u64) {
        let sec = now_ms / 1000;
        let seen = self.second.load(Ordering::Relaxed);
        if seen != sec && self.second.compare_exchange(seen, sec, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.requests.store(0, Ordering::Relaxed);
            self.retries.store(0, Ordering::Relaxed);
        }
    }

    /// Count one request.
    pub fn deposit(&self, now_ms: u64) {
        self.roll(now_ms);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Take one retry from the budget; false when it is spent.
    pub fn try_withdraw(&self, now_ms: u64) -> bool {
        self.roll(now_ms);
        let allowed = self.min_per_sec as f64 + self.ratio * self.requests.load(Ordering::Relaxed) as f64;
        let taken = self.retries.fetch_add(1, Ordering::Relaxed);
        if (taken as f64) < allowed {
            true
        } else {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }
}

/// A tiny inline vector of candidate indexes (no heap for ≤ 16 servers).
pub(crate) mod smallvec_lite {
    #[derive(Debug, Clone)]
    pub struct Candidates {
        inline: [usize; 16],
        len: usize,
        spill: Vec<usize>,
    }

    impl Candidates {
        pub fn new() -> Self {
            Candidates { inline: [0; 16], len: 0, spill: Vec::new() }
        }
        pub fn push(&mut self, v: usize) {
            if self.len < 16 {
                self.inline[self.len] = v;
            } else {
                if self.spill.is_empty() {
                    self.spill.extend_from_slice(&self.inline);
                }
                self.spill.push(v);
            }
            self.len += 1;
        }
        pub fn as_slice(&self) -> &[usize] {
            if self.len <= 16 {
                &self.inline[..self.len]
            } else {
                &self.spill
            }
        }
        pub fn iter(&self) -> std::slice::Iter<'_, usize> {
            self.as_slice().iter()
        }
        pub fn is_empty(&self) -> bool {
            self.len == 0
        }
    }

    impl FromIterator<usize> for Candidates {
        fn from_iter<T: IntoIterator<Item = usize>>(iter: T) -> Self {
            let mut c = Candidates::new();
            for v in iter {
                c.push(v);
            }
            c
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(servers: &[(&str, bool)], panic_threshold: u8) -> Upstream {
        let mut t = format!("name = \"b\"\npanic_threshold_percent = {panic_threshold}\n");
        for (i, (n, backup)) in servers.iter().enumerate() {
            t.push_str(&format!(
                "[[server]]\nname = \"{n}\"\naddress = \"127.0.0.1:{}\"\nbackup = {backup}\n",
                1000 + i
            ));
        }
        Upstream::new(toml::from_str(&t).unwrap(), None).unwrap()
    }

    fn picked(up: &Upstream) -> std::collections::BTreeSet<usize> {
        let client = IpAddr::from([10, 0, 0, 1]);
        (0..40).filter_map(|_| up.pick(client, &[])).collect()
    }

    #[test]
    fn health_decides_while_enough_servers_are_healthy() {
        let up = upstream(&[("a", false), ("b", false), ("c", false), ("d", false)], 50);
        up.servers[0].set_up(false);
        assert!(up.servers[1].record_failure(1, std::time::Duration::from_secs(60)));
        assert!(!up.in_panic(monotonic_ms()), "2 of 4 available is not below 50 %");
        assert_eq!(picked(&up), [2, 3].into());
    }

    #[test]
    fn below_the_panic_threshold_every_enabled_server_takes_traffic() {
        let up = upstream(&[("a", false), ("b", false), ("c", false), ("d", false)], 50);
        up.servers[0].set_up(false);
        up.servers[1].set_up(false);
        assert!(up.servers[2].record_failure(1, std::time::Duration::from_secs(60)));
        up.servers[3].disabled.store(true, Ordering::Relaxed);
        assert!(up.in_panic(monotonic_ms()), "0 of 3 enabled servers available");
        assert_eq!(picked(&up), [0, 1, 2].into(), "a disabled server stays out");
        // Every server down: still balanced over all, never "no server".
        up.servers[3].disabled.store(false, Ordering::Relaxed);
        up.servers[3].set_up(false);
        assert_eq!(picked(&up), [0, 1, 2, 3].into());
        // Threshold 0: health decides alone.
        let off = upstream(&[("a", false), ("b", false)], 0);
        off.servers[0].set_up(false);
        off.servers[1].set_up(false);
        assert!(picked(&off).is_empty());
    }

    #[test]
    fn in_panic_available_backups_join_the_healthy_actives() {
        let up = upstream(&[("a", false), ("b", false), ("c", false), ("spare", true)], 50);
        up.servers[0].set_up(false);
        up.servers[1].set_up(false);
        assert_eq!(picked(&up), [2, 3].into());
        up.servers[2].set_up(false);
        assert_eq!(picked(&up), [3].into(), "every active down: the backup serves");
        up.servers[3].set_up(false);
        assert_eq!(picked(&up), [0, 1, 2].into(), "nothing available: every active");
    }

    #[test]
    fn retry_budget_allows_min_plus_ratio() {
        let b = RetryBudget::new(0.5, 2);
        for _ in 0..10 {
            b.deposit(5_000);
        }
        let granted = (0..20).filter(|_| b.try_withdraw(5_500)).count();
        assert_eq!(granted, 7, "2 + 0.5 × 10");
        // A new second starts a new window.
        assert!(b.try_withdraw(6_000));
    }
}
