//! The process's two clocks, each named for what it measures.
//!
//! - The **monotonic** clock ([`monotonic_us`], [`monotonic_ms`]) counts
//!   from a fixed instant early in this process and never goes backwards,
//!   whatever happens to the system clock. Use it for deadlines, durations
//!   and rate windows (passive ejection, slow start, retry budgets, stall
//!   deadlines). Its readings mean nothing outside this process. They fit in
//!   an `AtomicU64` and are never 0 (the clock starts at 1 ms), so 0 can
//!   stand for "never" in a stored reading.
//! - The **wall** clock ([`unix_ms`]) is the system's time since the Unix
//!   epoch. It can jump when the clock is set. Use it for timestamps that a
//!   person reads, that go into files, or that other machines must agree on
//!   (replicated SQL time, backup ages, event logs).
//!
//! Keeping both here, under names that say which is which, stops a value
//! read from one clock from being compared with a value read from the other.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Microseconds on the monotonic clock (at least 1,000).
pub fn monotonic_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1000
}

/// Milliseconds on the monotonic clock: [`monotonic_us`] / 1000 (at least 1).
pub fn monotonic_ms() -> u64 {
    monotonic_us() / 1000
}

/// Milliseconds since the Unix epoch on the wall clock (0 if the system
/// clock is set before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_readings_are_never_zero_and_never_go_back() {
        let first = monotonic_us();
        assert!(first >= 1000, "0 is kept free to mean never");
        assert!(monotonic_ms() >= 1);
        let mut last = first;
        for _ in 0..1000 {
            let now = monotonic_us();
            assert!(now >= last);
            last = now;
        }
        assert!(monotonic_ms() * 1000 <= monotonic_us(), "ms and us are one clock");
    }

    #[test]
    fn wall_clock_is_unix_time() {
        let from_std = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let ours = unix_ms();
        // 2020-01-01 in ms: far above anything the monotonic clock reads in
        // a test, so mixing the two up shows.
        assert!(ours > 1_577_836_800_000);
        assert!(ours.abs_diff(from_std) < 60_000);
        assert!(monotonic_ms() < 1_577_836_800_000);
    }
}
