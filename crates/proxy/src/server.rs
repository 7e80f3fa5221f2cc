use bulwark_telemetry::clock::monotonic_ms;
pub use bulwark_telemetry::{LatencyHistogram, LATENCY_BUCKETS_US};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Live state of one server of an upstream, shared by every worker thread
/// and kept across reloads when the server's identity (backend, name,
/// address) is unchanged.
#[derive(Debug)]
pub struct ServerState {
    /// Process-unique id; keys the per-thread connection pools.
    pub id: u64,
    pub backend: String,
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    /// Administratively disabled (drain).
    pub disabled: AtomicBool,
    /// Verdict of the active health check (true until a check says otherwise).
    up: AtomicBool,
    /// Passive ejection deadline (monotonic ms); 0 = not ejected.
    ejected_until: AtomicU64,
    /// When the last passive ejection began.
    ejected_at: AtomicU64,
    consecutive_errors: AtomicU32,
    /// When the server last became available (monotonic ms), for slow start.
    available_since: AtomicU64,
    pub in_flight: AtomicU32,
    /// Peak-EWMA latency in microseconds (f64 bits) and its last update.
    ewma_us: AtomicU64,
    ewma_stamp: AtomicU64,
    pub stats: ServerStats,
    /// Woken when the health check marks the server down.
    pub marked_down: tokio::sync::Notify,
}

/// Counters per server, exported by the admin listener.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub requests: AtomicU64,
    /// Responses by status class: index 1..=5 for 1xx..5xx, 0 for other.
    pub responses: [AtomicU64; 6],
    pub connect_errors: AtomicU64,
    pub response_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub retries: AtomicU64,
    pub connections_opened: AtomicU64,
    /// Tunnels opened (the server answered an upgrade with 101).
    pub tunnels: AtomicU64,
    /// Tunnels open now.
    pub tunnels_open: AtomicU64,
    pub check_failures: AtomicU64,
    pub transitions: AtomicU64,
    /// Time-to-response-head histogram (see [`LATENCY_BUCKETS_US`]).
    pub latency: LatencyHistogram,
}

/// EWMA decay time constant.
const EWMA_TAU_MS: f64 = 10_000.0;
/// Initial latency guess so fresh servers are neither starved nor flooded.
const EWMA_INITIAL_US: f64 = 1_000.0;

impl ServerState {
    pub fn new(backend: &str, name: &str, addr: SocketAddr, weight: u32, backup: bool, disabled: bool) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ServerState {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            backend: backend.to_string(),
            name: name.to_string(),
            addr,
            weight,
            backup,
            disabled: AtomicBool::new(disabled),
            up: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            ejected_at: AtomicU64::new(0),
            consecutive_errors: AtomicU32::new(0),
            available_since: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            ewma_us: AtomicU64::new(EWMA_INITIAL_US.to_bits()),
            ewma_stamp: AtomicU64::new(monotonic_ms()),
            stats: ServerStats::default(),
            marked_down: tokio::sync::Notify::new(),
        }
    }

    /// Health-check verdict.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Set the health-check verdict; returns true if it changed.
    pub fn set_up(&self, up: bool) -> bool {
        let was = self.up.swap(up, Ordering::SeqCst);
        if was != up {
            self.stats.transitions.fetch_add(1, Ordering::Relaxed);
            if up {
                self.consecutive_errors.store(0, Ordering::Relaxed);
                self.ejected_until.store(0, Ordering::Relaxed);
                self.available_since.store(monotonic_ms(), Ordering::Relaxed);
            } else {
                self.marked_down.notify_waiters();
            }
        }
        was != up
    }

    /// End a passive ejection early (an active health check vouched for the
    /// server again). Returns true if it was ejected.
    pub fn clear_ejection(&self, now: u64) -> bool {
        if self.is_ejected(now) {
            self.ejected_until.store(0, Ordering::SeqCst);
            self.available_since.store(now, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// When the current passive ejection began (monotonic ms), if any.
    pub fn ejected_since(&self, now: u64) -> Option<u64> {
        self.is_ejected(now).then(|| self.ejected_at.load(Ordering::Relaxed))
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// Whether the balancer may send new requests here.
    pub fn is_available(&self, now: u64) -> bool {
        self.is_up() && !self.is_ejected(now) && !self.disabled.load(Ordering::Relaxed)
    }

    /// Weight after slow start: ramps from 1/10 to full over `slowstart`.
    pub fn effective_weight(&self, now: u64, slowstart: Option<Duration>) -> u64 {
        let w = self.weight as u64 * 16;
        let Some(ss) = slowstart else { return w };
        let since = self.available_since.load(Ordering::Relaxed);
        if since == 0 {
            return w;
        }
        let ss = ss.as_millis() as u64;
        let elapsed = now.saturating_sub(since);
        if ss == 0 || elapsed >= ss {
            return w;
        }
        (w * (ss / 10 + elapsed) / (ss + ss / 10)).max(1)
    }

    /// Record a success seen on real traffic.
    pub fn record_success(&self) {
        if self.consecutive_errors.load(Ordering::Relaxed) != 0 {
            self.consecutive_errors.store(0, Ordering::Relaxed);
        }
    }

    /// Record a failure seen on real traffic; ejects the server after
    /// `threshold` consecutive failures (0 = never). Returns true when this
    /// call ejected it.
    pub fn record_failure(&self, threshold: u32, eject_for: Duration) -> bool {
        let n = self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if threshold == 0 || n < threshold {
            return false;
        }
        let now = monotonic_ms();
        if self.is_ejected(now) {
            return false;
        }
        self.consecutive_errors.store(0, Ordering::Relaxed);
        let until = now + eject_for.as_millis() as u64;
        self.ejected_at.store(now, Ordering::Relaxed);
        self.ejected_until.store(until, Ordering::SeqCst);
        self.available_since.store(until, Ordering::Relaxed);
        self.stats.transitions.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Fold a response latency into the peak-EWMA estimate.
    pub fn observe_latency(&self, sample: Duration) {
        let sample = sample.as_micros() as f64;
        let now = monotonic_ms();
        let last = self.ewma_stamp.swap(now, Ordering::Relaxed);
        let cur = f64::from_bits(self.ewma_us.load(Ordering::Relaxed));
        let next = if sample > cur {
            sample
        } else {
            let w = (-((now.saturating_sub(last)) as f64) / EWMA_TAU_MS).exp();
            cur * w + sample * (1.0 - w)
        };
        self.ewma_us.store(next.to_bits(), Ordering::Relaxed);
    }

    /// Current peak-EWMA latency estimate in microseconds, decayed by the
    /// time since the last sample so an idle server's estimate falls and it
    /// gets probed again (as linkerd's peak-EWMA does).
    pub fn ewma_us(&self) -> f64 {
        let cur = f64::from_bits(self.ewma_us.load(Ordering::Relaxed));
        let idle = monotonic_ms().saturating_sub(self.ewma_stamp.load(Ordering::Relaxed));
        cur * (-(idle as f64) / EWMA_TAU_MS).exp()
    }

    pub fn count_response(&self, status: u16) {
        // (latency is recorded separately by the forwarder)
        let class = (status / 100) as usize;
        let i = if (1..=5).contains(&class) { class } else { 0 };
        self.stats.responses[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Copy the health/ejection state of `old` (used when a reload keeps
    /// the same server).
    pub fn inherit(&self, old: &ServerState) {
        self.up.store(old.is_up(), Ordering::SeqCst);
        self.ejected_until.store(old.ejected_until.load(Ordering::Relaxed), Ordering::Relaxed);
        self.available_since.store(old.available_since.load(Ordering::Relaxed), Ordering::Relaxed);
        self.ewma_us.store(old.ewma_us.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Human summary of why the server is not taking traffic, if it isn't.
    pub fn state_name(&self, now: u64) -> &'static str {
        if self.disabled.load(Ordering::Relaxed) {
            "maint"
        } else if !self.is_up() {
            "down"
        } else if self.is_ejected(now) {
            "ejected"
        } else {
            "up"
        }
    }
}

/// Decrements `in_flight` when dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a ServerState);

impl<'a> InFlight<'a> {
    pub fn enter(s: &'a ServerState) -> Self {
        s.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> ServerState {
        ServerState::new("b", "s", "127.0.0.1:1".parse().unwrap(), 2, false, false)
    }

    #[test]
    fn ejects_after_threshold_and_success_resets() {
        let s = s();
        assert!(!s.record_failure(3, Duration::from_secs(10)));
        assert!(!s.record_failure(3, Duration::from_secs(10)));
        s.record_success();
        assert!(!s.record_failure(3, Duration::from_secs(10)));
        assert!(!s.record_failure(3, Duration::from_secs(10)));
        assert!(s.record_failure(3, Duration::from_secs(10)));
        assert!(!s.is_available(monotonic_ms()));
        assert_eq!(s.state_name(monotonic_ms()), "ejected");
    }

    #[test]
    fn slowstart_ramps_weight() {
        let s = s();
        s.set_up(false);
        s.set_up(true);
        let now = monotonic_ms();
        let ss = Some(Duration::from_secs(100));
        let w0 = s.effective_weight(now, ss);
        assert!(w0 < 32 / 5, "{w0}");
        assert_eq!(s.effective_weight(now + 200_000, ss), 32);
        assert_eq!(s.effective_weight(now, None), 32);
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays() {
        let s = s();
        s.observe_latency(Duration::from_millis(50));
        assert!((s.ewma_us() - 50_000.0).abs() < 1.0);
        s.observe_latency(Duration::from_millis(1));
        assert!(s.ewma_us() <= 50_000.0);
    }
}
