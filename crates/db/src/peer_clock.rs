//! What a node says of its own clock and lease in its answers to Raft
//! requests, and what the primary sends back: the headers by which the
//! quorum clock and a replica's lag depend on each node's own clock only.
//!
//! - **Lease** ([`LEASE_HEADER`]): a replica answers every Raft request
//!   with its leader lease, the time it refuses votes after it last heard
//!   the primary (openraft 0.9: its own `election_timeout_max`). The
//!   primary's quorum clock trusts a replica's acceptance for that long at
//!   most (`leader_acks`), so nodes configured with different election
//!   timeouts cannot make a primary count a quorum longer than its peers
//!   refuse to elect another.
//! - **Clock** ([`CLOCK_HEADER`], [`ECHO_HEADER`]): a replica stamps every
//!   answer with a moment of its own monotonic clock ([`ClockStamp`]), and
//!   the primary sends the newest stamp it has received back with its
//!   applied hint. The hint was built after the primary received that
//!   answer, so it is at least as recent as the stamp, whatever time the
//!   request then spent on the wire: the replica dates the hint from the
//!   stamp, on its own clock, and never takes a word delayed in transit
//!   for a fresh one.
//!
//! A stamp carries the id of the process that made it ([`LocalClock`]): a
//! stamp of a previous run of the replica is never read as one of this run.
use http::HeaderMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A replica's leader lease in milliseconds, on its answers.
pub const LEASE_HEADER: &str = "x-bulwark-lease-ms";
/// A moment of the answering node's clock (`<run>.<microseconds>`).
pub const CLOCK_HEADER: &str = "x-bulwark-clock";
/// The newest [`CLOCK_HEADER`] the primary had received from this peer
/// when it built the request (with the applied hint).
pub const ECHO_HEADER: &str = "x-bulwark-echo";

/// A moment of one run of one node's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockStamp {
    /// Random id of the process run whose clock this is.
    run: u64,
    /// Microseconds since that run's clock base.
    micros: u64,
}

impl ClockStamp {
    pub fn header_value(&self) -> String {
        format!("{:x}.{}", self.run, self.micros)
    }

    pub fn parse(value: &str) -> Option<ClockStamp> {
        let (run, micros) = value.split_once('.')?;
        Some(ClockStamp { run: u64::from_str_radix(run, 16).ok()?, micros: micros.parse().ok()? })
    }

    fn from_headers(h: &HeaderMap, name: &str) -> Option<ClockStamp> {
        ClockStamp::parse(h.get(name)?.to_str().ok()?)
    }
}

/// This node's clock as it appears in [`ClockStamp`]s.
#[derive(Debug)]
pub struct LocalClock {
    run: u64,
    base: Instant,
}

impl Default for LocalClock {
    fn default() -> Self {
        let mut id = [0u8; 8];
        // A failing system random source leaves a zero id: then a previous
        // run's stamp could be taken for one of this run only if both runs
        // failed alike, and only until the next answer.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id);
        LocalClock { run: u64::from_le_bytes(id), base: Instant::now() }
    }
}

impl LocalClock {
    /// Now, as a stamp.
    pub fn now(&self) -> ClockStamp {
        ClockStamp { run: self.run, micros: self.base.elapsed().as_micros() as u64 }
    }

    /// The moment of `stamp`, if it is a moment of this run of this node's
    /// clock that has come (a stamp from elsewhere, or a forged one from
    /// the future, says nothing).
    pub fn moment(&self, stamp: ClockStamp) -> Option<Instant> {
        if stamp.run != self.run {
            return None;
        }
        let at = self.base.checked_add(Duration::from_micros(stamp.micros))?;
        (at <= Instant::now()).then_some(at)
    }

    /// The moment the primary's request says it was built after (its
    /// [`ECHO_HEADER`]), if it is one of this run.
    pub fn echoed(&self, request: &HeaderMap) -> Option<Instant> {
        self.moment(ClockStamp::from_headers(request, ECHO_HEADER)?)
    }

    /// The headers of an answer to a Raft request: now, and `lease`.
    pub fn answer_headers(&self, lease: Duration) -> [(&'static str, String); 2] {
        [(CLOCK_HEADER, self.now().header_value()), (LEASE_HEADER, lease.as_millis().to_string())]
    }
}

/// What the primary knows of one peer's clock: the newest stamp it has
/// received (to echo), kept per connection to that peer.
#[derive(Debug, Default)]
pub struct PeerClock {
    newest: Mutex<Option<ClockStamp>>,
}

impl PeerClock {
    /// An answer of the peer arrived with these headers: keep its stamp if
    /// it is newer, and return the lease it reported.
    pub fn heard(&self, answer: &HeaderMap) -> Option<Duration> {
        if let Some(stamp) = ClockStamp::from_headers(answer, CLOCK_HEADER) {
            let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
            match *newest {
                // Answers of one run arrive in any order: keep the newest.
                Some(kept) if kept.run == stamp.run && kept.micros >= stamp.micros => {}
                // A new run (the peer restarted) replaces the old one's.
                _ => *newest = Some(stamp),
            }
        }
        let ms = answer.get(LEASE_HEADER)?.to_str().ok()?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ms))
    }

    /// The header to send back with an applied hint, once the peer has
    /// answered.
    pub fn echo(&self) -> Option<(&'static str, String)> {
        let newest = *self.newest.lock().unwrap_or_else(|p| p.into_inner());
        newest.map(|s| (ECHO_HEADER, s.header_value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn a_stamp_travels_and_means_a_moment_of_its_own_run_only() {
        let clock = LocalClock::default();
        let before = Instant::now();
        let stamp = clock.now();
        let after = Instant::now();
        let back = ClockStamp::parse(&stamp.header_value()).unwrap();
        assert_eq!(back, stamp);
        let at = clock.moment(back).unwrap();
        // Microsecond precision: within a microsecond of when it was taken.
        assert!(at + Duration::from_micros(1) >= before && at <= after);

        let other_run = LocalClock::default();
        assert_eq!(other_run.moment(stamp), None, "a stamp of another run says nothing");
        let future = ClockStamp { micros: stamp.micros + 3_600_000_000, ..stamp };
        assert_eq!(clock.moment(future), None, "nor does one from the future");
        for bad in ["", "12", "zz.1", "1.x", "1.2.3"] {
            assert_eq!(ClockStamp::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_primary_echoes_the_newest_stamp_of_the_peers_current_run() {
        let peer = PeerClock::default();
        assert_eq!(peer.echo(), None, "nothing heard, nothing to echo");
        let replica = LocalClock::default();
        let first = replica.answer_headers(Duration::from_millis(480));
        let second = replica.answer_headers(Duration::from_millis(480));
        assert_eq!(peer.heard(&headers(&second)), Some(Duration::from_millis(480)));
        peer.heard(&headers(&first));
        let echoed = headers(&[peer.echo().unwrap()]);
        assert_eq!(replica.echoed(&echoed), replica.moment(ClockStamp::parse(&second[0].1).unwrap()));

        // The replica restarts: its new run's stamps replace the old ones.
        let restarted = LocalClock::default();
        peer.heard(&headers(&restarted.answer_headers(Duration::from_millis(60))));
        let echoed = headers(&[peer.echo().unwrap()]);
        assert!(restarted.echoed(&echoed).is_some());
        assert_eq!(replica.echoed(&echoed), None);
        assert_eq!(peer.heard(&HeaderMap::new()), None, "an answer without a lease reports none");
    }
}
