//! The floating address scenarios' instruments and their analysis.
//!
//! While a scenario runs, [`FloatingWatch`] records, with the recorder's
//! clock:
//! - which lb host holds each floating address: an `ip -o monitor address`
//!   in each lb host's namespace (the kernel's own events, no polling);
//! - where the client's neighbour (ARP) entry for each address points: an
//!   `ip -o monitor neigh` on the bridge, where the workload runs; a
//!   takeover is complete for clients only once a gratuitous ARP moved it;
//! - a probe: a fresh `GET /health` to each address every 25 ms, each with
//!   a 2 s timeout, so the time until an address answers again is measured
//!   even while every workload client waits on a dead host;
//! - the script's marks: an lb host goes down (a fault: it will not serve)
//!   or comes back (a repair).
//!
//! [`analyze`] then replays the records. After each mark, the lb that
//! should hold an address is the first of its group's hosts that is not
//! down; the address has *settled* once that lb is the only live host
//! holding it and the client's neighbour entry carries that lb's hardware
//! address. A mark that changes the expected holder opens a *switch* of
//! that address, from the mark to the settling; per switch it reports the
//! time to settle, the time until a probe started after the settling
//! answered, how long two live hosts held the address at once (split
//! brain after a heal), and the failed requests. A failed request (workload
//! or probe) is excused only if it was in flight during a switch of its
//! address; any other failure is a problem: every request started after a
//! takeover must succeed, and an address whose holder was not touched must
//! not fail at all (active-active).
//!
//! Layout: `watch.rs` records (monitors, prober, the live wait for the
//! settling), `analysis.rs` replays a recording into the report's rows.
mod analysis;
mod watch;

pub use analysis::{analyze, render, Analysis, Switch};
pub use watch::FloatingWatch;

use crate::topology::FloatingGroup;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

/// A new probe to each floating address this often.
pub const PROBE_EVERY: Duration = Duration::from_millis(25);
/// A probe that has no answer by then failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// What a probe asks (the web servers' own health page, through the lb).
pub const PROBE_PATH: &str = "/health";
/// Takeover target with 100 ms advertisements: the address answers again
/// within this (a figure of the report, not an assertion).
pub const TAKEOVER_TARGET_S: f64 = 1.0;
/// Bound of [`FloatingWatch::wait_settled`].
pub const SETTLE_WITHIN: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub(crate) enum Change {
    Held {
        host: String,
        address: Ipv4Addr,
        held: bool,
    },
    /// The client's neighbour entry for `address` (`None`: unresolved).
    Neighbour {
        address: Ipv4Addr,
        mac: Option<String>,
    },
    Mark {
        host: String,
        down: bool,
        label: String,
    },
}

/// One probe of a floating address (seconds on the recorder's clock).
#[derive(Debug, Clone)]
pub struct Probe {
    pub address: Ipv4Addr,
    pub started: f64,
    pub ended: f64,
    pub error: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct State {
    held: BTreeSet<(String, Ipv4Addr)>,
    neighbour: BTreeMap<Ipv4Addr, String>,
    down: BTreeSet<String>,
}

impl State {
    pub(crate) fn apply(&mut self, c: &Change) {
        match c {
            Change::Held { host, address, held: true } => {
                self.held.insert((host.clone(), *address));
            }
            Change::Held { host, address, held: false } => {
                self.held.remove(&(host.clone(), *address));
            }
            Change::Neighbour { address, mac: Some(m) } => {
                self.neighbour.insert(*address, m.clone());
            }
            Change::Neighbour { address, mac: None } => {
                self.neighbour.remove(address);
            }
            Change::Mark { host, down: true, .. } => {
                self.down.insert(host.clone());
            }
            Change::Mark { host, down: false, .. } => {
                self.down.remove(host);
            }
        }
    }

    /// The lb that should hold `g`'s address: its first host not down.
    pub(crate) fn expected<'g>(&self, g: &'g FloatingGroup) -> Option<&'g str> {
        g.hosts.iter().find(|h| !self.down.contains(*h)).map(String::as_str)
    }

    /// Hosts of `g` that are not down and hold its address.
    pub(crate) fn live_holders<'g>(&self, g: &'g FloatingGroup) -> Vec<&'g str> {
        g.hosts
            .iter()
            .filter(|h| !self.down.contains(*h) && self.held.contains(&((*h).clone(), g.address)))
            .map(String::as_str)
            .collect()
    }

    pub(crate) fn settled(&self, g: &FloatingGroup, macs: &BTreeMap<String, String>) -> bool {
        let Some(e) = self.expected(g) else { return false };
        self.live_holders(g) == [e] && self.neighbour.get(&g.address) == macs.get(e)
    }

    pub(crate) fn describe(&self, g: &FloatingGroup, macs: &BTreeMap<String, String>) -> String {
        let owner = |mac: &String| macs.iter().find(|(_, m)| *m == mac).map(|(h, _)| h.clone());
        format!(
            "{}: expected on {:?}; held by {:?} (down: {:?}); client's neighbour entry: {:?} ({:?})",
            g.address,
            self.expected(g),
            g.hosts.iter().filter(|h| self.held.contains(&((*h).clone(), g.address))).collect::<Vec<_>>(),
            self.down,
            self.neighbour.get(&g.address),
            self.neighbour.get(&g.address).and_then(owner),
        )
    }
}

/// What a watch recorded, for [`analyze`].
pub struct Recording {
    pub(crate) groups: Vec<FloatingGroup>,
    pub(crate) macs: BTreeMap<String, String>,
    pub(crate) log: Vec<(f64, Change)>,
    pub probes: Vec<Probe>,
}
