//! The balancing algorithms. Each picks one index out of `eligible`
//! (already filtered for health, backup tier, retries and caps).
use crate::server::ServerState;
use crate::upstream::smallvec_lite::Candidates;
use bulwark_config::lb::Backend;
use rand::Rng;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub(crate) enum Balancer {
    /// Smooth weighted round robin: per-server current weights.
    RoundRobin(Mutex<Vec<i64>>),
    /// Fewest in-flight per weight; the counter rotates the tie-break start.
    LeastConn(AtomicU64),
    Source(HashRing),
    Random,
    First,
    Ewma,
}

impl Balancer {
    pub fn pick(
        &self,
        servers: &[Arc<ServerState>],
        eligible: &Candidates,
        client: IpAddr,
        now: u64,
        cfg: &Backend,
    ) -> Option<usize> {
        let slice = eligible.as_slice();
        if slice.len() == 1 {
            return Some(slice[0]);
        }
        let weight = |i: usize| servers[i].effective_weight(now, cfg.slowstart);
        let load = |i: usize| servers[i].in_flight.load(Ordering::Relaxed) as u64;
        match self {
            Balancer::RoundRobin(current) => {
                let mut cur = current.lock().unwrap_or_else(|e| e.into_inner());
                if cur.len() != servers.len() {
                    cur.resize(servers.len(), 0);
                }
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for &i in slice {
                    let w = weight(i) as i64;
                    cur[i] += w;
                    total += w;
                    if best.is_none_or(|b| cur[i] > cur[b]) {
                        best = Some(i);
                    }
                }
                let b = best?;
                cur[b] -= total;
                Some(b)
            }
            Balancer::LeastConn(rotor) => {
                let start = rotor.fetch_add(1, Ordering::Relaxed) as usize % slice.len();
                let mut best = slice[start];
                for k in 1..slice.len() {
                    let i = slice[(start + k) % slice.len()];
                    // (load_i + 1) / w_i < (load_b + 1) / w_b
                    if (load(i) + 1) * weight(best) < (load(best) + 1) * weight(i) {
                        best = i;
                    }
                }
                Some(best)
            }
            Balancer::Random => {
                let (a, b) = two_distinct(slice);
                if (load(a) + 1) * weight(b) <= (load(b) + 1) * weight(a) {
                    Some(a)
                } else {
                    Some(b)
                }
            }
            Balancer::Ewma => {
                let (a, b) = two_distinct(slice);
                let cost = |i: usize| servers[i].ewma_us() * (load(i) + 1) as f64 / weight(i) as f64;
                if cost(a) <= cost(b) {
                    Some(a)
                } else {
                    Some(b)
                }
            }
            Balancer::First => {
                let cap = cfg.max_connections.unwrap_or(u32::MAX) as u64;
                slice
                    .iter()
                    .copied()
                    .find(|&i| load(i) < cap)
                    .or_else(|| slice.iter().copied().min_by_key(|&i| load(i) * 1024 / weight(i).max(1)))
            }
            Balancer::Source(ring) => {
                let total: u64 = slice.iter().map(|&i| load(i)).sum();
                // Bounded load: ceil(c × (total + 1) / n).
                let bound = (cfg.hash_balance_factor * (total + 1) as f64 / slice.len() as f64).ceil() as u64;
                ring.pick(client, slice, |i| load(i) < bound.max(1)).or_else(|| ring.pick(client, slice, |_| true))
            }
        }
    }
}

fn two_distinct(slice: &[usize]) -> (usize, usize) {
    let mut rng = rand::thread_rng();
    let a = rng.gen_range(0..slice.len());
    let mut b = rng.gen_range(0..slice.len() - 1);
    if b >= a {
        b += 1;
    }
    (slice[a], slice[b])
}

/// Consistent-hash ring: `40 × weight` points per server, hashed from the
/// server name so every lb instance builds the same ring.
#[derive(Debug)]
pub(crate) struct HashRing {
    points: Vec<(u64, usize)>,
}

fn hash_of(v: impl Hash) -> u64 {
    // DefaultHasher::new() uses fixed keys: stable across processes.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

impl HashRing {
    pub fn new(servers: &[Arc<ServerState>]) -> Self {
        let mut points = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            for k in 0..(40 * s.weight) {
                points.push((hash_of((&s.name, k)), i));
            }
        }
        points.sort_unstable();
        HashRing { points }
    }

    /// Walk clockwise from the client's hash to the first eligible server
    /// that `accept`s.
    pub fn pick(&self, client: IpAddr, eligible: &[usize], accept: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let h = hash_of(client);
        let start = self.points.partition_point(|p| p.0 < h);
        let n = self.points.len();
        for k in 0..n {
            let i = self.points[(start + k) % n].1;
            if eligible.contains(&i) && accept(i) {
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Upstream;
    use bulwark_config::lb::Backend;

    fn backend(balance: &str, servers: &[(&str, u32, bool)]) -> Backend {
        let mut t = format!("name = \"b\"\nbalance = \"{balance}\"\n");
        if balance == "first" {
            t.push_str("max_connections = 2\n");
        }
        for (i, (n, w, backup)) in servers.iter().enumerate() {
            t.push_str(&format!(
                "[[server]]\nname = \"{n}\"\naddress = \"127.0.0.1:{}\"\nweight = {w}\nbackup = {backup}\n",
                1000 + i
            ));
        }
        toml::from_str(&t).unwrap()
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn counts(up: &Upstream, n: usize) -> Vec<usize> {
        let mut c = vec![0; up.servers.len()];
        for k in 0..n {
            c[up.pick(ip(k as u8), &[]).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves() {
        let up =
            Upstream::new(backend("roundrobin", &[("a", 5, false), ("b", 1, false), ("c", 1, false)]), None).unwrap();
        let seq: Vec<usize> = (0..7).map(|_| up.pick(ip(1), &[]).unwrap()).collect();
        // nginx's documented sequence for weights 5,1,1: a a b a c a a
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&up, 700), [500, 100, 100]);
    }

    #[test]
    fn backup_only_when_all_active_down() {
        let up =
            Upstream::new(backend("roundrobin", &[("a", 1, false), ("b", 1, false), ("c", 1, true)]), None).unwrap();
        assert_eq!(counts(&up, 10)[2], 0);
        up.servers[0].set_up(false);
        assert_eq!(counts(&up, 10), [0, 10, 0]);
        up.servers[1].set_up(false);
        assert_eq!(counts(&up, 10), [0, 0, 10]);
        up.servers[0].set_up(true);
        assert_eq!(counts(&up, 10), [10, 0, 0]);
    }

    #[test]
    fn retries_skip_tried_servers() {
        let up = Upstream::new(backend("roundrobin", &[("a", 1, false), ("b", 1, false)]), None).unwrap();
        for _ in 0..10 {
            assert_eq!(up.pick(ip(1), &[0]), Some(1));
        }
        assert_eq!(up.pick(ip(1), &[0, 1]), None);
    }

    #[test]
    fn leastconn_prefers_idle_servers() {
        let up = Upstream::new(backend("leastconn", &[("a", 1, false), ("b", 1, false)]), None).unwrap();
        up.servers[0].in_flight.store(1, Ordering::Relaxed);
        for _ in 0..10 {
            assert_eq!(up.pick(ip(1), &[]), Some(1));
        }
        up.servers[0].in_flight.store(0, Ordering::Relaxed);
        let c = counts(&up, 100);
        assert_eq!(c, [50, 50], "ties rotate");
    }

    #[test]
    fn source_hash_is_sticky_and_bounded() {
        let up = Upstream::new(backend("source", &[("a", 1, false), ("b", 1, false), ("c", 1, false)]), None).unwrap();
        let first = up.pick(ip(7), &[]).unwrap();
        for _ in 0..20 {
            assert_eq!(up.pick(ip(7), &[]), Some(first));
        }
        // Overloaded home server: bounded load moves the client on.
        up.servers[first].in_flight.store(50, Ordering::Relaxed);
        assert_ne!(up.pick(ip(7), &[]), Some(first));
        up.servers[first].in_flight.store(0, Ordering::Relaxed);
        // Removing one server only moves the clients that were on it.
        let before: Vec<usize> =
            (0..200).map(|k| up.pick(IpAddr::from([10, 1, (k / 256) as u8, k as u8]), &[]).unwrap()).collect();
        up.servers[2].set_up(false);
        for (k, b) in before.iter().enumerate() {
            let now = up.pick(IpAddr::from([10, 1, (k / 256) as u8, k as u8]), &[]).unwrap();
            if *b != 2 {
                assert_eq!(now, *b);
            }
        }
        let spread = counts(&up, 200);
        assert!(spread.iter().filter(|&&c| c > 0).count() == 2, "{spread:?}");
    }

    #[test]
    fn random_two_choices_avoids_loaded_server() {
        let up = Upstream::new(backend("random", &[("a", 1, false), ("b", 1, false)]), None).unwrap();
        up.servers[0].in_flight.store(10, Ordering::Relaxed);
        for _ in 0..20 {
            assert_eq!(up.pick(ip(1), &[]), Some(1));
        }
    }

    #[test]
    fn first_fills_in_order() {
        let up = Upstream::new(backend("first", &[("a", 1, false), ("b", 1, false)]), None).unwrap();
        assert_eq!(up.pick(ip(1), &[]), Some(0));
        up.servers[0].in_flight.store(2, Ordering::Relaxed);
        assert_eq!(up.pick(ip(1), &[]), Some(1));
    }

    #[test]
    fn ewma_prefers_fast_server() {
        let up = Upstream::new(backend("ewma", &[("a", 1, false), ("b", 1, false)]), None).unwrap();
        up.servers[0].observe_latency(std::time::Duration::from_millis(100));
        up.servers[1].observe_latency(std::time::Duration::from_micros(500));
        for _ in 0..20 {
            assert_eq!(up.pick(ip(1), &[]), Some(1));
        }
    }
}
