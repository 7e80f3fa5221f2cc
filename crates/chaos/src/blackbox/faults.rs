//! The nemesis: the three nodes and the faults done to them on a schedule.
//! Each round picks the next fault of a list shuffled once per cycle (so
//! even a short run does every kind), lets the writers run for a random
//! quiet time, finds the primary through `GET /v1/status` and does the
//! fault. The seed fixes the order and the durations, not the timing.
use super::api::Api;
use super::nodes::{Node, NodeState, StartError, Timing};
use super::writer::History;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Fault {
    /// kill -9 of the primary, started again at once (back within the
    /// others' election timeout when it starts fast enough).
    KillPrimaryRestartAtOnce,
    /// kill -9 of the primary, down for 1-3 s (another node takes over).
    KillPrimaryRestartLater,
    /// SIGSTOP of the primary for a quarter to half the election timeout.
    PausePrimaryShort,
    /// SIGSTOP of the primary for 1-3 s (longer than the election timeout).
    PausePrimaryLong,
    /// kill -9 of a replica, down for 0-3 s.
    KillReplica,
}

pub const ALL: [Fault; 5] = [
    Fault::KillPrimaryRestartAtOnce,
    Fault::KillPrimaryRestartLater,
    Fault::PausePrimaryShort,
    Fault::PausePrimaryLong,
    Fault::KillReplica,
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillPrimaryRestartAtOnce => "kill -9 primary, restart at once",
            Fault::KillPrimaryRestartLater => "kill -9 primary, restart later",
            Fault::PausePrimaryShort => "SIGSTOP primary < election timeout",
            Fault::PausePrimaryLong => "SIGSTOP primary > election timeout",
            Fault::KillReplica => "kill -9 replica",
        }
    }
}

/// The nodes and how to start them.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub bin: PathBuf,
    pub secret: String,
    pub timing: Timing,
    pub api: Api,
    /// Problems seen while faulting: a node that exited by itself, no
    /// primary for a long time.
    pub problems: Vec<String>,
}

/// The longest the nemesis waits for a primary before it notes a problem.
const PRIMARY_WITHIN: Duration = Duration::from_secs(30);

impl Cluster {
    pub fn peers(&self) -> Vec<super::nodes::Peer> {
        self.nodes.iter().map(|n| (n.id, n.addr, n.raft_addr)).collect()
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    pub fn start(&mut self, i: usize) -> Result<(), StartError> {
        let peers = self.peers();
        let (bin, secret, t) = (self.bin.clone(), self.secret.clone(), self.timing);
        self.nodes[i].start(&bin, &secret, &peers, t)
    }

    /// The running node that says it is primary with a majority, and its
    /// term.
    pub fn primary(&self) -> Option<(usize, u64)> {
        self.nodes.iter().enumerate().filter(|(_, n)| n.state == NodeState::Running).find_map(|(i, n)| {
            let s = self.api.status(n.addr, Duration::from_millis(500))?;
            (s["role"] == "primary" && s["quorum"] == true).then(|| (i, s["term"].as_u64().unwrap_or(0)))
        })
    }

    pub fn wait_primary(&self, within: Duration) -> Option<(usize, u64)> {
        let t = Instant::now();
        loop {
            if let Some(p) = self.primary() {
                return Some(p);
            }
            if t.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Note (and reap) any node that exited without being killed.
    fn crashed(&mut self, hist: &History) {
        for n in &mut self.nodes {
            if let Some(status) = n.exited() {
                let p = format!("node {} exited by itself ({status}); see {}", n.id, n.log_path().display());
                hist.event(&p);
                self.problems.push(p);
            }
        }
    }

    /// SIGCONT every paused node and start every node that is down.
    pub fn heal(&mut self, hist: &History) -> Result<(), StartError> {
        self.crashed(hist);
        for i in 0..self.nodes.len() {
            match self.nodes[i].state {
                NodeState::Paused => {
                    self.nodes[i].resume();
                    hist.event(&format!("heal: SIGCONT node {}", self.nodes[i].id));
                }
                NodeState::Down => {
                    self.start(i)?;
                    hist.event(&format!("heal: node {} started", self.nodes[i].id));
                }
                NodeState::Running => {}
            }
        }
        Ok(())
    }
}

fn secs(rng: &mut StdRng, lo: f64, hi: f64) -> Duration {
    Duration::from_secs_f64(rng.gen_range(lo..hi))
}

/// Fault the cluster with `kinds` (each once per cycle, in a shuffled
/// order) until `until`; returns how many of each fault ran.
/// A node that cannot be started again ends the faults early (Err).
pub fn run(
    c: &mut Cluster,
    kinds: &[Fault],
    until: Instant,
    rng: &mut StdRng,
    hist: &History,
) -> Result<BTreeMap<Fault, u32>, StartError> {
    let mut done: BTreeMap<Fault, u32> = BTreeMap::new();
    let mut order: Vec<Fault> = Vec::new();
    let election = c.timing.election_timeout.as_secs_f64();
    let mut resumed_same_term = 0u32;
    loop {
        std::thread::sleep(secs(rng, 0.5, 2.0));
        if Instant::now() >= until {
            break;
        }
        c.crashed(hist);
        // A node that crashed by itself comes back before the next fault.
        c.heal(hist)?;
        if order.is_empty() {
            order = kinds.to_vec();
            order.shuffle(rng);
        }
        let fault = order.pop().expect("refilled above");
        let Some((p, term)) = c.wait_primary(PRIMARY_WITHIN) else {
            let p = format!("no primary with a majority within {PRIMARY_WITHIN:?} (all nodes up)");
            hist.event(&p);
            c.problems.push(p);
            continue;
        };
        let pid = c.nodes[p].id;
        match fault {
            Fault::KillPrimaryRestartAtOnce => {
                hist.event(&format!("kill -9 node {pid} (primary, term {term}); restart at once"));
                c.nodes[p].kill();
                let t = Instant::now();
                c.start(p)?;
                let ready = t.elapsed().as_secs_f64();
                let after = c.wait_primary(PRIMARY_WITHIN);
                let same = after == Some((p, term));
                resumed_same_term += u32::from(same);
                hist.event(&format!(
                    "node {pid} ready again after {ready:.3} s; primary now: {}",
                    match after {
                        Some((q, t)) if same => format!("node {} again, same term {t}", c.nodes[q].id),
                        Some((q, t)) => format!("node {} in term {t}", c.nodes[q].id),
                        None => "none".into(),
                    }
                ));
            }
            Fault::KillPrimaryRestartLater => {
                let down = secs(rng, 1.0, 3.0);
                hist.event(&format!("kill -9 node {pid} (primary, term {term}) for {:.1} s", down.as_secs_f64()));
                c.nodes[p].kill();
                std::thread::sleep(down);
                c.start(p)?;
                hist.event(&format!("node {pid} started again"));
            }
            Fault::PausePrimaryShort | Fault::PausePrimaryLong => {
                let pause = if fault == Fault::PausePrimaryShort {
                    secs(rng, election / 4.0, election / 2.0)
                } else {
                    secs(rng, 1.0, 3.0)
                };
                hist.event(&format!("SIGSTOP node {pid} (primary, term {term}) for {:.3} s", pause.as_secs_f64()));
                c.nodes[p].pause();
                std::thread::sleep(pause);
                c.nodes[p].resume();
                hist.event(&format!("SIGCONT node {pid}"));
            }
            Fault::KillReplica => {
                let replicas: Vec<usize> = (0..c.nodes.len()).filter(|i| *i != p).collect();
                let r = *replicas.choose(rng).expect("three nodes");
                let down = secs(rng, 0.0, 3.0);
                let rid = c.nodes[r].id;
                hist.event(&format!("kill -9 node {rid} (replica) for {:.1} s", down.as_secs_f64()));
                c.nodes[r].kill();
                std::thread::sleep(down);
                c.start(r)?;
                hist.event(&format!("node {rid} started again"));
            }
        }
        *done.entry(fault).or_default() += 1;
    }
    hist.event(&format!(
        "faults done; after {} immediate restarts of the primary, it was primary again in the same term {resumed_same_term} times",
        done.get(&Fault::KillPrimaryRestartAtOnce).copied().unwrap_or(0)
    ));
    Ok(done)
}
