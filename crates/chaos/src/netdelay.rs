//! Packet delay without `sch_netem`: the logic of the `chaos-netdelay`
//! program (`src/bin/chaos-netdelay.rs`).
//!
//! Some kernels (this project's machines among them) are built without
//! `CONFIG_NET_SCH_NETEM`, so `tc qdisc add … netem delay` fails. They do
//! have NFQUEUE (`CONFIG_NETFILTER_NETLINK_QUEUE`,
//! `CONFIG_NETFILTER_XT_TARGET_NFQUEUE`): an iptables rule hands each
//! matching packet to a userspace program over netlink, and the packet
//! stays in the kernel until that program issues a verdict for it. The
//! delayer holds every queued packet for `delay ± jitter` before its
//! ACCEPT verdict, and gives a DROP verdict to a `loss` fraction of them.
//!
//! NFQUEUE state belongs to a network namespace, so one delayer runs in
//! each degraded host's namespace (`ip netns exec HOST chaos-netdelay …`,
//! started by [`crate::net::degrade`], stopped by [`crate::net::restore`]).
//!
//! Order: jitter alone would reorder packets (netem with jitter does), and
//! TCP reads reordering as loss. Here a packet is never released before an
//! earlier packet of the same flow (protocol, addresses, ports): its
//! release time is the later of its own draw and its flow's previous
//! release. Each packet is still held for at least `delay - jitter` and, in
//! a steady stream, about `delay + jitter` at most (1 ms more: the delayer
//! polls the queue every millisecond).
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

/// How much worse [`crate::net::degrade`] makes the network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Mean one-way delay added to each packet.
    pub delay: Duration,
    /// Each packet's delay is drawn uniformly from `delay ± jitter`.
    pub jitter: Duration,
    /// Fraction of packets dropped, 0.0 to 1.0.
    pub loss: f64,
}

/// A bad `chaos-netdelay` command line ([`Impairment::from_args`]).
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("{flag} needs a value")]
    MissingValue { flag: String },
    /// A whole number (milliseconds, a queue number, a seed) that is not.
    #[error("{flag} {value}: {source}")]
    Number {
        flag: String,
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("--loss {value}: {source}")]
    Loss {
        value: String,
        #[source]
        source: std::num::ParseFloatError,
    },
    #[error("--loss {value}: not between 0 and 1")]
    LossRange { value: String },
    #[error("jitter {jitter:?} larger than delay {delay:?}")]
    JitterAboveDelay { jitter: Duration, delay: Duration },
    /// A flag neither [`Impairment::from_args`] nor the program knows.
    #[error("unknown option {flag}")]
    Unknown { flag: String },
}

impl ArgsError {
    /// [`ArgsError::Number`] of `flag value`.
    pub fn number(flag: &str, value: &str, source: std::num::ParseIntError) -> ArgsError {
        ArgsError::Number { flag: flag.to_string(), value: value.to_string(), source }
    }
}

impl Default for Impairment {
    /// 30 ms ± 10 ms and 2 % loss.
    fn default() -> Self {
        Impairment { delay: Duration::from_millis(30), jitter: Duration::from_millis(10), loss: 0.02 }
    }
}

impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ms ± {} ms delay, {}% loss",
            self.delay.as_millis(),
            self.jitter.as_millis(),
            fmt_percent(self.loss)
        )
    }
}

fn fmt_percent(p: f64) -> String {
    let s = format!("{:.2}", p * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl Impairment {
    /// The arguments of `tc qdisc add dev … root netem`.
    pub fn netem_args(&self) -> Vec<String> {
        vec![
            "delay".into(),
            format!("{}ms", self.delay.as_millis()),
            format!("{}ms", self.jitter.as_millis()),
            "loss".into(),
            format!("{}%", fmt_percent(self.loss)),
        ]
    }

    /// The command-line arguments of `chaos-netdelay` (see [`Impairment::from_args`]).
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--delay-ms".into(),
            self.delay.as_millis().to_string(),
            "--jitter-ms".into(),
            self.jitter.as_millis().to_string(),
            "--loss".into(),
            self.loss.to_string(),
        ]
    }

    /// Parse `--delay-ms N --jitter-ms N --loss P` (any order, each
    /// optional, defaults from [`Impairment::default`]); other flags are
    /// returned for the caller.
    pub fn from_args(args: &[String]) -> Result<(Impairment, Vec<(String, String)>), ArgsError> {
        let mut imp = Impairment::default();
        let mut rest = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| ArgsError::MissingValue { flag: flag.clone() })?;
            let ms = || value.parse::<u64>().map(Duration::from_millis).map_err(|e| ArgsError::number(flag, value, e));
            match flag.as_str() {
                "--delay-ms" => imp.delay = ms()?,
                "--jitter-ms" => imp.jitter = ms()?,
                "--loss" => {
                    imp.loss = value.parse().map_err(|source| ArgsError::Loss { value: value.clone(), source })?;
                    if !(0.0..=1.0).contains(&imp.loss) {
                        return Err(ArgsError::LossRange { value: value.clone() });
                    }
                }
                _ => rest.push((flag.clone(), value.clone())),
            }
        }
        if imp.jitter > imp.delay {
            return Err(ArgsError::JitterAboveDelay { jitter: imp.jitter, delay: imp.delay });
        }
        Ok((imp, rest))
    }
}

/// What identifies a flow in a packet: protocol, source and destination
/// addresses and, for TCP and UDP, ports. Other packets of one address pair
/// and protocol form one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
}

impl FlowKey {
    /// The flow of an IPv4 or IPv6 packet (its first bytes are enough);
    /// anything unparsable is one flow of its own.
    pub fn of_packet(p: &[u8]) -> FlowKey {
        let mut k = FlowKey::default();
        let l4 = match p.first().map(|b| b >> 4) {
            Some(4) if p.len() >= 20 => {
                k.proto = p[9];
                k.src[..4].copy_from_slice(&p[12..16]);
                k.dst[..4].copy_from_slice(&p[16..20]);
                // Only the first fragment carries the ports.
                let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
                (frag_offset == 0).then_some(((p[0] & 0x0f) as usize) * 4)
            }
            Some(6) if p.len() >= 40 => {
                k.proto = p[6];
                k.src.copy_from_slice(&p[8..24]);
                k.dst.copy_from_slice(&p[24..40]);
                Some(40)
            }
            _ => None,
        };
        if let Some(off) = l4 {
            if matches!(k.proto, 6 | 17) && p.len() >= off + 4 {
                k.sport = u16::from_be_bytes([p[off], p[off + 1]]);
                k.dport = u16::from_be_bytes([p[off + 2], p[off + 3]]);
            }
        }
        k
    }
}

struct Held<T> {
    release: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.release, self.seq) == (other.release, other.seq)
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Held<T> {
    /// Reversed: [`BinaryHeap`] is a max-heap, the earliest release must
    /// come out first, and of equal releases the earlier arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.release, other.seq).cmp(&(self.release, self.seq))
    }
}

/// Counters of a delayer run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Packets received from the queue.
    pub packets: u64,
    /// Of which dropped (the loss fraction).
    pub dropped: u64,
    /// Most packets held at once.
    pub max_held: usize,
    /// Sum of the hold times of the released packets, in microseconds.
    pub held_us: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let released = self.packets - self.dropped;
        let mean_ms = if released > 0 { self.held_us as f64 / released as f64 / 1000.0 } else { 0.0 };
        write!(
            f,
            "{} packets, {} dropped, mean hold {:.1} ms, at most {} held at once",
            self.packets, self.dropped, mean_ms, self.max_held
        )
    }
}

/// The delay line: packets in, each out at its release time.
pub struct Scheduler<T> {
    imp: Impairment,
    rng: StdRng,
    heap: BinaryHeap<Held<T>>,
    /// Each flow's latest release time (pruned once past).
    last: HashMap<FlowKey, Instant>,
    arrivals: HashMap<u64, Instant>,
    seq: u64,
    pub stats: Stats,
}

impl<T> Scheduler<T> {
    pub fn new(imp: Impairment, seed: u64) -> Self {
        Scheduler {
            imp,
            rng: StdRng::seed_from_u64(seed),
            heap: BinaryHeap::new(),
            last: HashMap::new(),
            arrivals: HashMap::new(),
            seq: 0,
            stats: Stats::default(),
        }
    }

    /// A packet of `flow` arrived at `now`: hold it, or hand it back to be
    /// dropped (the loss fraction).
    pub fn push(&mut self, now: Instant, flow: FlowKey, item: T) -> Option<T> {
        self.stats.packets += 1;
        if self.imp.loss > 0.0 && self.rng.gen_bool(self.imp.loss) {
            self.stats.dropped += 1;
            return Some(item);
        }
        let j = self.imp.jitter.as_micros() as i64;
        let us = self.imp.delay.as_micros() as i64 + if j > 0 { self.rng.gen_range(-j..=j) } else { 0 };
        let mut release = now + Duration::from_micros(us.max(0) as u64);
        let last = self.last.entry(flow).or_insert(release);
        if *last > release {
            release = *last;
        }
        *last = release;
        self.seq += 1;
        self.arrivals.insert(self.seq, now);
        self.heap.push(Held { release, seq: self.seq, item });
        self.stats.max_held = self.stats.max_held.max(self.heap.len());
        if self.last.len() > 4096 {
            self.last.retain(|_, t| *t > now);
        }
        None
    }

    /// The next packet due at `now`, in release order.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.heap.peek()?.release > now {
            return None;
        }
        self.pop(now)
    }

    /// The next packet whatever its release time (stopping: release all).
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        let h = self.heap.pop()?;
        if let Some(at) = self.arrivals.remove(&h.seq) {
            self.stats.held_us += now.saturating_duration_since(at).as_micros() as u64;
        }
        Some(h.item)
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|h| h.release)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn flow_key_tells_ports_and_addresses_apart() {
        let a = FlowKey::of_packet(&ipv4_udp([198, 18, 0, 11], [198, 18, 0, 12], 5000, 7000));
        let b = FlowKey::of_packet(&ipv4_udp([198, 18, 0, 11], [198, 18, 0, 12], 5001, 7000));
        let c = FlowKey::of_packet(&ipv4_udp([198, 18, 0, 11], [198, 18, 0, 13], 5000, 7000));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, FlowKey::of_packet(&ipv4_udp([198, 18, 0, 11], [198, 18, 0, 12], 5000, 7000)));
        assert_eq!(a.sport, 5000);
        assert_eq!(a.dport, 7000);
        // Truncated or not IP: one catch-all flow, no panic.
        assert_eq!(FlowKey::of_packet(&[0x45, 0, 0]), FlowKey::default());
        assert_eq!(FlowKey::of_packet(&[]), FlowKey::default());
    }

    #[test]
    fn delays_within_bounds_and_keeps_flow_order() {
        let imp = Impairment { delay: Duration::from_millis(30), jitter: Duration::from_millis(10), loss: 0.0 };
        let mut s = Scheduler::new(imp, 7);
        let t0 = Instant::now();
        let flows = [
            FlowKey::of_packet(&ipv4_udp([1, 1, 1, 1], [2, 2, 2, 2], 1, 2)),
            FlowKey::of_packet(&ipv4_udp([1, 1, 1, 1], [2, 2, 2, 2], 3, 4)),
        ];
        // 1000 packets, one every 100 µs, alternating between two flows.
        for i in 0..1000u64 {
            let at = t0 + Duration::from_micros(i * 100);
            assert!(s.push(at, flows[(i % 2) as usize], (i, at)).is_none());
        }
        let mut last_seen = [None::<u64>; 2];
        let mut out = 0;
        let mut now = t0;
        while !s.is_empty() {
            now += Duration::from_micros(50);
            while let Some((i, at)) = s.pop_due(now) {
                out += 1;
                let held = now - at;
                assert!(held >= Duration::from_millis(20), "packet {i} held only {held:?}");
                assert!(held <= Duration::from_millis(41), "packet {i} held {held:?}");
                let f = (i % 2) as usize;
                assert!(!matches!(last_seen[f], Some(p) if p >= i), "flow {f}: {i} after {last_seen:?}");
                last_seen[f] = Some(i);
            }
        }
        assert_eq!(out, 1000);
        assert_eq!(s.stats.packets, 1000);
        assert_eq!(s.stats.dropped, 0);
    }

    #[test]
    fn single_packets_spread_over_the_jitter() {
        let imp = Impairment { delay: Duration::from_millis(30), jitter: Duration::from_millis(10), loss: 0.0 };
        let mut s = Scheduler::new(imp, 1);
        let t0 = Instant::now();
        let mut holds = Vec::new();
        for i in 0..400u64 {
            // Packets of a flow 100 ms apart: no ordering constraint.
            let at = t0 + Duration::from_millis(i * 100);
            s.push(at, FlowKey::default(), ());
            let due = s.next_due().unwrap();
            holds.push((due - at).as_secs_f64() * 1000.0);
            s.pop(due);
        }
        let mean = holds.iter().sum::<f64>() / holds.len() as f64;
        let (min, max) = holds.iter().fold((f64::MAX, 0f64), |(a, b), h| (a.min(*h), b.max(*h)));
        assert!((28.0..32.0).contains(&mean), "mean {mean}");
        assert!((20.0..22.0).contains(&min), "min {min}");
        assert!(max <= 40.0 && max > 38.0, "max {max}");
    }

    #[test]
    fn drops_about_the_loss_fraction() {
        let imp = Impairment { delay: Duration::from_millis(1), jitter: Duration::ZERO, loss: 0.1 };
        let mut s = Scheduler::new(imp, 3);
        let now = Instant::now();
        let dropped = (0..10_000).filter(|i| s.push(now, FlowKey::default(), *i).is_some()).count();
        assert!((800..1200).contains(&dropped), "dropped {dropped} of 10000");
        assert_eq!(s.stats.dropped as usize, dropped);
        assert_eq!(s.len(), 10_000 - dropped);
    }

    #[test]
    fn args_round_trip() {
        let imp = Impairment { delay: Duration::from_millis(25), jitter: Duration::from_millis(5), loss: 0.015 };
        let mut args = imp.to_args();
        args.extend(["--queue".to_string(), "3".to_string()]);
        let (back, rest) = Impairment::from_args(&args).unwrap();
        assert_eq!(back, imp);
        assert_eq!(rest, vec![("--queue".to_string(), "3".to_string())]);
        assert_eq!(Impairment::default().netem_args().join(" "), "delay 30ms 10ms loss 2%");
        assert_eq!(imp.netem_args().join(" "), "delay 25ms 5ms loss 1.5%");
        assert_eq!(Impairment::default().to_string(), "30 ms ± 10 ms delay, 2% loss");
        let err = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            Impairment::from_args(&args).expect_err("a bad command line").to_string()
        };
        assert_eq!(err(&["--loss", "1.5"]), "--loss 1.5: not between 0 and 1");
        assert_eq!(err(&["--loss", "x"]), "--loss x: invalid float literal");
        assert_eq!(err(&["--delay-ms", "5", "--jitter-ms", "6"]), "jitter 6ms larger than delay 5ms");
        assert_eq!(err(&["--delay-ms", "-1"]), "--delay-ms -1: invalid digit found in string");
        assert_eq!(err(&["--delay-ms"]), "--delay-ms needs a value");
    }
}
