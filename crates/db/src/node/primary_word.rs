//! What a follower knows of the primary's applied state, and from it how
//! stale its own reads are.
//!
//! The primary sends its applied index with every Raft request while its
//! word is the cluster's (`transport::AppliedHints`). A hint saying the
//! primary had applied index `i` covers every write the primary
//! acknowledged before it made the request (it acknowledges a write after
//! applying it). The hint is dated on this node's clock from the stamp of
//! this node's it echoes (`peer_clock`): the primary made it after it
//! received that answer of this node's, so the hint is at least that
//! recent, whatever time the request spent on the wire or in this node's
//! queue. So once this node has applied `i`, its database holds every
//! write acknowledged before that date, and a read served from it misses
//! only writes younger than `now - t`.
//!
//! The staleness of a read here is therefore the age of the newest hint
//! whose index this node has applied ([`PrimaryWord::lag`]), measured on
//! this node's own clock only. The primary's clock of its last applied
//! write (also sent, for older nodes) is not used: two writes stamped a
//! few milliseconds apart say nothing about how long ago the second was
//! acknowledged, and two primaries' clocks need not agree.
use bulwark_db_api::api::ReplicationLag;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One hint: the primary's applied index, and the moment (on this node's
/// clock) it is at least as recent as.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PrimaryHint {
    pub(super) index: u64,
    pub(super) at: Instant,
}

impl PrimaryHint {
    /// Whether this hint is newer than `kept`: a higher applied index
    /// (applied indexes only grow, and a later primary's exceed what an
    /// earlier one applied), or the same index heard later.
    pub(super) fn supersedes(&self, kept: &PrimaryHint) -> bool {
        (self.index, self.at) > (kept.index, kept.at)
    }
}

/// Hints not yet applied that are remembered: beyond this, the oldest are
/// forgotten, which only makes the lag read larger (a later hint stands in
/// for them once applied).
const PENDING_LIMIT: usize = 4096;

/// The hints this node heard, as far as its lag needs them.
#[derive(Debug, Default)]
pub(super) struct PrimaryWord {
    /// The newest hint heard.
    newest: Option<PrimaryHint>,
    /// Hints whose index this node had not applied when they arrived, in
    /// increasing index order.
    pending: VecDeque<PrimaryHint>,
    /// The date of the newest hint whose index this node has applied.
    caught_up: Option<Instant>,
}

impl PrimaryWord {
    /// The primary's applied index as last heard.
    pub(super) fn primary_applied(&self) -> Option<u64> {
        self.newest.map(|h| h.index)
    }

    /// A hint arrived (`applied`: this node's applied index now).
    pub(super) fn record(&mut self, hint: PrimaryHint, applied: u64) {
        if self.newest.is_none_or(|k| hint.supersedes(&k)) {
            self.newest = Some(hint);
        }
        if hint.index <= applied {
            self.caught_up_at(hint.at);
            return;
        }
        match self.pending.back_mut() {
            Some(last) if last.index == hint.index => last.at = last.at.max(hint.at),
            // Merged appends finish in any order: a late hint of a lower
            // index is dropped (a later one stands in for it).
            Some(last) if last.index > hint.index => {}
            _ => {
                if self.pending.len() == PENDING_LIMIT {
                    self.pending.pop_front();
                }
                self.pending.push_back(hint);
            }
        }
    }

    fn caught_up_at(&mut self, at: Instant) {
        self.caught_up = Some(self.caught_up.map_or(at, |c| c.max(at)));
    }

    /// How far this node, having applied `applied`, is behind the primary
    /// at `now`: the entries it lacks of the newest hint, and the age of
    /// the newest hint it has applied. Unknown (`known` false) without a
    /// hint within `2 × lease` or before this node applied any hint's
    /// index.
    pub(super) fn lag(&mut self, applied: u64, now: Instant, lease: Duration) -> ReplicationLag {
        while self.pending.front().is_some_and(|h| h.index <= applied) {
            let h = self.pending.pop_front().expect("a front hint");
            self.caught_up_at(h.at);
        }
        let Some(newest) = self.newest else {
            return ReplicationLag { entries: 0, seconds: 0.0, known: false };
        };
        let entries = newest.index.saturating_sub(applied);
        let heard = now.saturating_duration_since(newest.at) < lease * 2;
        match self.caught_up {
            Some(t) => {
                ReplicationLag { entries, seconds: now.saturating_duration_since(t).as_secs_f64(), known: heard }
            }
            None => ReplicationLag {
                entries,
                seconds: now.saturating_duration_since(newest.at).as_secs_f64(),
                known: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(480);

    fn hint(index: u64, at: Instant) -> PrimaryHint {
        PrimaryHint { index, at }
    }

    /// Merged appends finish in any order: the newest hint is the one of
    /// the highest applied index, and of the latest arrival for the same
    /// index.
    #[test]
    fn a_replica_keeps_the_newest_hint() {
        let t = Instant::now();
        let kept = hint(12, t);
        let older = hint(10, t + Duration::from_millis(5));
        assert!(!older.supersedes(&kept), "a lower index, even if it finished later");
        assert!(hint(13, t).supersedes(&kept));
        let heartbeat = hint(12, t + Duration::from_millis(100));
        assert!(heartbeat.supersedes(&kept), "the same index heard later");
        assert!(!kept.supersedes(&heartbeat));
        let mut w = PrimaryWord::default();
        w.record(kept, 0);
        w.record(older, 0);
        assert_eq!(w.primary_applied(), Some(12));
    }

    /// A replica that stopped applying is as stale as the last moment it
    /// was known to hold what the primary had applied, however close
    /// together the writes it lacks were made: a write the primary
    /// acknowledged 2 s ago and this node has not applied makes the lag at
    /// least 2 s.
    #[test]
    fn the_lag_is_the_age_of_the_newest_hint_this_node_has_applied() {
        let t0 = Instant::now();
        let mut w = PrimaryWord::default();
        w.record(hint(10, t0), 10);
        let lag = w.lag(10, t0 + Duration::from_millis(50), LEASE);
        assert_eq!((lag.entries, lag.known), (0, true));
        assert!((lag.seconds - 0.05).abs() < 1e-6, "caught up: the hint's age, {}", lag.seconds);
        // The primary applies two writes stamped 10 ms apart; this node
        // does not apply them. Heartbeats keep the primary's word fresh.
        w.record(hint(12, t0 + Duration::from_millis(100)), 10);
        for ms in [200, 300, 2000] {
            w.record(hint(12, t0 + Duration::from_millis(ms)), 10);
        }
        let lag = w.lag(10, t0 + Duration::from_millis(2050), LEASE);
        assert_eq!((lag.entries, lag.known), (2, true));
        assert!((lag.seconds - 2.05).abs() < 1e-6, "behind since the last hint it applied: {}", lag.seconds);
        // It applies them: stale only since the newest hint of index 12.
        let lag = w.lag(12, t0 + Duration::from_millis(2100), LEASE);
        assert_eq!((lag.entries, lag.known), (0, true));
        assert!((lag.seconds - 0.1).abs() < 1e-6, "{}", lag.seconds);
    }

    /// Without a fresh word from the primary, or before this node ever held
    /// what a hint named, the lag is unknown.
    #[test]
    fn no_recent_word_or_never_caught_up_is_unknown() {
        let t0 = Instant::now();
        let mut w = PrimaryWord::default();
        assert!(!w.lag(0, t0, LEASE).known, "no hint at all");
        w.record(hint(5, t0), 0);
        let lag = w.lag(0, t0 + Duration::from_millis(10), LEASE);
        assert!(!lag.known, "never held what the primary had applied");
        assert_eq!(lag.entries, 5);
        let lag = w.lag(5, t0 + Duration::from_millis(20), LEASE);
        assert!(lag.known);
        let lag = w.lag(5, t0 + LEASE * 2 + Duration::from_millis(1), LEASE);
        assert!(!lag.known, "the primary's word is older than twice the lease");
    }

    /// A late hint of a lower index (merged appends) neither replaces the
    /// newest nor makes the lag look smaller than the arrivals allow.
    #[test]
    fn a_late_lower_hint_changes_nothing() {
        let t0 = Instant::now();
        let mut w = PrimaryWord::default();
        w.record(hint(20, t0 + Duration::from_millis(100)), 10);
        w.record(hint(15, t0 + Duration::from_millis(200)), 10);
        let lag = w.lag(15, t0 + Duration::from_millis(300), LEASE);
        assert!(!lag.known, "index 15's hint was dropped, and 20 is not applied: {lag:?}");
        let lag = w.lag(20, t0 + Duration::from_millis(300), LEASE);
        assert!(lag.known && (lag.seconds - 0.2).abs() < 1e-6, "{lag:?}");
    }
}
