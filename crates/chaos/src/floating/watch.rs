//! The instruments of a running floating address scenario: address and
//! neighbour monitors, the prober, the marks and the live wait.
use super::{Change, Probe, Recording, State, PROBE_EVERY, PROBE_PATH, PROBE_TIMEOUT, SETTLE_WITHIN};
use crate::cluster::Cluster;
use crate::net;
use crate::topology::FloatingGroup;
use crate::workload::Recorder;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Shared {
    log: Vec<(f64, Change)>,
    state: State,
    probes: Vec<Probe>,
}

/// The records stay usable after a panic elsewhere.
fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn push(&mut self, at: f64, c: Change) {
        self.state.apply(&c);
        self.log.push((at, c));
    }
}

/// The running instruments of a floating address scenario.
pub struct FloatingWatch {
    groups: Vec<FloatingGroup>,
    /// Hardware address of each lb host's eth0.
    macs: BTreeMap<String, String>,
    rec: Arc<Recorder>,
    shared: Arc<Mutex<Shared>>,
    monitors: Mutex<Vec<Child>>,
    stop: Arc<AtomicBool>,
    probes_in_flight: Arc<AtomicUsize>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn mac_of(host: &str) -> String {
    let out = net::in_ns(host, "ip", &["-o", "link", "show", "eth0"]).unwrap_or_else(|e| panic!("{e}"));
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no hardware address for {host}'s eth0: {out}"))
        .to_string()
}

/// The floating addresses in one `ip -o addr` / `ip -o monitor address`
/// line: (address, deleted).
fn parse_address_line(line: &str, addresses: &[Ipv4Addr]) -> Option<(Ipv4Addr, bool)> {
    let ip = line.split_whitespace().skip_while(|w| *w != "inet").nth(1)?.split('/').next()?.parse().ok()?;
    addresses.contains(&ip).then_some((ip, line.starts_with("Deleted")))
}

/// One `ip -o neigh` / `ip -o monitor neigh` line: (address, hardware
/// address if resolved).
fn parse_neighbour_line(line: &str, addresses: &[Ipv4Addr]) -> Option<(Ipv4Addr, Option<String>)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let words = if words.first() == Some(&"Deleted") { &words[1..] } else { &words[..] };
    let ip: Ipv4Addr = words.first()?.parse().ok()?;
    if !addresses.contains(&ip) {
        return None;
    }
    let deleted = line.starts_with("Deleted");
    let mac = words.iter().skip_while(|w| **w != "lladdr").nth(1).map(|m| m.to_string());
    Some((ip, if deleted { None } else { mac }))
}

impl FloatingWatch {
    /// Start the monitors and the prober for `cluster`'s floating addresses.
    pub fn start(cluster: &Cluster, rec: Arc<Recorder>) -> FloatingWatch {
        let groups = cluster.stack.floating();
        let addresses: Vec<Ipv4Addr> = groups.iter().map(|g| g.address).collect();
        let lbs: BTreeSet<String> = groups.iter().flat_map(|g| g.hosts.clone()).collect();
        let macs: BTreeMap<String, String> = lbs.iter().map(|h| (h.clone(), mac_of(h))).collect();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut monitors = Vec::new();
        let mut threads = Vec::new();
        // Who holds the addresses: one monitor per lb host, then its
        // current addresses (nothing moves while the watch starts).
        for host in &lbs {
            let mut child = Command::new("ip")
                .args(["-n", host, "-o", "monitor", "address"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("ip monitor address");
            let out = BufReader::new(child.stdout.take().unwrap());
            monitors.push(child);
            let (host, shared, rec, addresses) = (host.clone(), shared.clone(), rec.clone(), addresses.clone());
            threads.push(std::thread::spawn(move || {
                for line in out.lines().map_while(Result::ok) {
                    if let Some((address, deleted)) = parse_address_line(&line, &addresses) {
                        let c = Change::Held { host: host.clone(), address, held: !deleted };
                        lock(&shared).push(rec.now(), c);
                    }
                }
            }));
        }
        for host in &lbs {
            let now = net::in_ns(host, "ip", &["-4", "-o", "addr", "show", "dev", "eth0"]).unwrap();
            let mut s = lock(&shared);
            for (address, _) in now.lines().filter_map(|l| parse_address_line(l, &addresses)) {
                s.push(rec.now(), Change::Held { host: host.clone(), address, held: true });
            }
        }
        // Where the client's packets for each address go.
        let mut child = Command::new("ip")
            .args(["-o", "monitor", "neigh"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip monitor neigh");
        let out = BufReader::new(child.stdout.take().unwrap());
        monitors.push(child);
        {
            let (shared, rec, addresses) = (shared.clone(), rec.clone(), addresses.clone());
            threads.push(std::thread::spawn(move || {
                for line in out.lines().map_while(Result::ok) {
                    if let Some((address, mac)) = parse_neighbour_line(&line, &addresses) {
                        lock(&shared).push(rec.now(), Change::Neighbour { address, mac });
                    }
                }
            }));
        }
        let now = net::sh("ip", &["-4", "-o", "neigh", "show", "dev", net::BRIDGE]);
        for (address, mac) in now.lines().filter_map(|l| parse_neighbour_line(l, &addresses)) {
            lock(&shared).push(rec.now(), Change::Neighbour { address, mac });
        }
        // The prober: one short-lived thread per probe, so a probe stuck on
        // a dead host does not delay the next.
        let in_flight = Arc::new(AtomicUsize::new(0));
        {
            let (shared, rec, stop, in_flight, groups) =
                (shared.clone(), rec.clone(), stop.clone(), in_flight.clone(), groups.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    for g in &groups {
                        let (shared, rec, in_flight, address) =
                            (shared.clone(), rec.clone(), in_flight.clone(), g.address);
                        let to = g.socket_addr();
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || {
                            let started = rec.now();
                            let r = crate::http(to, "GET", PROBE_PATH, &[], b"", PROBE_TIMEOUT);
                            let error = match r {
                                Ok(r) if r.status == 200 => None,
                                Ok(r) => Some(format!("HTTP {}", r.status)),
                                Err(e) => Some(format!("io: {e}")),
                            };
                            let p = Probe { address, started, ended: rec.now(), error };
                            lock(&shared).probes.push(p);
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    std::thread::sleep(PROBE_EVERY);
                }
            }));
        }
        FloatingWatch {
            groups,
            macs,
            rec,
            shared,
            monitors: Mutex::new(monitors),
            stop,
            probes_in_flight: in_flight,
            threads: Mutex::new(threads),
        }
    }

    pub fn groups(&self) -> &[FloatingGroup] {
        &self.groups
    }

    /// The monitors running in lb hosts' namespaces (spared by
    /// [`Cluster::kill_host`]).
    pub fn monitor_pids(&self) -> Vec<u32> {
        self.monitors.lock().unwrap().iter().map(Child::id).collect()
    }

    /// Lb host `host` is down (`true`: faulted, it will not serve) or back
    /// (`false`) from `at` on.
    pub fn mark(&self, at: f64, host: &str, down: bool, label: &str) {
        let c = Change::Mark { host: host.to_string(), down, label: label.to_string() };
        lock(&self.shared).push(at, c);
    }

    /// Wait (bounded by [`SETTLE_WITHIN`]) until every floating address is
    /// held by the lb that should hold it, alone among the live hosts, and
    /// the client's neighbour entry points to it. Panics with the state of
    /// every address otherwise.
    pub fn wait_settled(&self) -> f64 {
        let t = Instant::now();
        loop {
            let states = {
                let s = lock(&self.shared);
                if self.groups.iter().all(|g| s.state.settled(g, &self.macs)) {
                    return self.rec.now();
                }
                self.groups.iter().map(|g| s.state.describe(g, &self.macs)).collect::<Vec<_>>()
            };
            assert!(
                t.elapsed() < SETTLE_WITHIN,
                "floating addresses not settled within {SETTLE_WITHIN:?} (hosts' hardware addresses {:?}):\n  {}",
                self.macs,
                states.join("\n  ")
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stop the prober (waiting for its probes) and the monitors.
    pub fn stop(self) -> Recording {
        self.stop.store(true, Ordering::SeqCst);
        let t = Instant::now();
        while self.probes_in_flight.load(Ordering::SeqCst) > 0 && t.elapsed() < PROBE_TIMEOUT * 3 {
            std::thread::sleep(Duration::from_millis(10));
        }
        for mut m in self.monitors.lock().unwrap().drain(..) {
            let _ = m.kill();
            let _ = m.wait();
        }
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
        let mut s = lock(&self.shared);
        let mut probes = std::mem::take(&mut s.probes);
        probes.sort_by(|a, b| a.started.total_cmp(&b.started));
        let mut log = std::mem::take(&mut s.log);
        log.sort_by(|a, b| a.0.total_cmp(&b.0));
        Recording { groups: self.groups.clone(), macs: self.macs.clone(), log, probes }
    }
}

impl Drop for FloatingWatch {
    /// On a failed scenario too: no monitor outlives the test.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for mut m in self.monitors.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

    #[test]
    fn monitor_lines_parse() {
        let add = "3: eth0    inet 198.18.0.100/24 scope global secondary eth0\\       valid_lft forever";
        let del = "Deleted 3: eth0    inet 198.18.0.100/24 scope global secondary eth0\\       valid_lft forever";
        let own = "3: eth0    inet 198.18.0.10/24 brd 198.18.0.255 scope global eth0\\       valid_lft forever";
        assert_eq!(parse_address_line(add, &[A]), Some((A, false)));
        assert_eq!(parse_address_line(del, &[A]), Some((A, true)));
        assert_eq!(parse_address_line(own, &[A]), None);
        let n = "198.18.0.100 dev chaosbr0 lladdr 02:00:00:00:00:07 REACHABLE ";
        assert_eq!(parse_neighbour_line(n, &[A]), Some((A, Some("02:00:00:00:00:07".into()))));
        assert_eq!(parse_neighbour_line("198.18.0.100 dev chaosbr0 FAILED", &[A]), Some((A, None)));
        let gone = "Deleted 198.18.0.100 dev chaosbr0 lladdr 02:00:00:00:00:07 STALE";
        assert_eq!(parse_neighbour_line(gone, &[A]), Some((A, None)));
        assert_eq!(parse_neighbour_line("198.18.0.11 dev chaosbr0 lladdr 02:00:00:00:00:01 REACHABLE", &[A]), None);
    }
}
