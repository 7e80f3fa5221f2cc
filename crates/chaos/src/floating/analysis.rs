//! A recording replayed: the switches of each address, and which failed
//! requests they excuse (see the module documentation of `floating`).
use super::{Change, Probe, Recording, State, TAKEOVER_TARGET_S};
use crate::workload::Attempt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// One address across one mark.
#[derive(Debug, Clone)]
pub struct Switch {
    pub label: String,
    /// A fault (an lb host goes down), else a repair.
    pub fault: bool,
    pub at: f64,
    pub address: Ipv4Addr,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Mark → settled (s); `None`: not before the next mark.
    pub settled: Option<f64>,
    /// Mark → end of the first successful probe started once settled (s).
    pub answered: Option<f64>,
    /// Time two live hosts held the address at once before it settled (s).
    pub both_held: f64,
    /// Probes started between the mark and the settling, and the failed
    /// ones among them.
    pub probes: u64,
    pub probes_failed: u64,
    /// The longest a probe started during the switch waited (s).
    pub longest_wait: Option<f64>,
    /// Failed workload requests in flight during the switch.
    pub requests_failed: u64,
}

impl Switch {
    pub fn moved(&self) -> bool {
        self.from != self.to
    }

    pub fn to_json(&self) -> Value {
        json!({
            "label": self.label, "fault": self.fault, "at": self.at, "address": self.address.to_string(),
            "from": self.from, "to": self.to, "moved": self.moved(), "settled": self.settled,
            "answered": self.answered, "both_held": self.both_held, "probes": self.probes,
            "probes_failed": self.probes_failed, "longest_wait": self.longest_wait,
            "requests_failed": self.requests_failed,
        })
    }
}

/// What [`analyze`] found.
#[derive(Debug, Default)]
pub struct Analysis {
    pub switches: Vec<Switch>,
    /// Failures outside every switch of their address, and addresses that
    /// did not settle.
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// Replay a recording against the workload's attempts (see the module
/// documentation); `load_end`: when the workload stopped.
pub fn analyze(r: &Recording, attempts: &[Attempt], load_end: f64) -> Analysis {
    let mut a = Analysis::default();
    let marks: Vec<(usize, f64)> = r
        .log
        .iter()
        .enumerate()
        .filter(|(_, (_, c))| matches!(c, Change::Mark { .. }))
        .map(|(i, (t, _))| (i, *t))
        .collect();
    // The state just before the first mark.
    let mut state = State::default();
    let first = marks.first().map_or(r.log.len(), |m| m.0);
    for (_, c) in &r.log[..first] {
        state.apply(c);
    }
    for (k, &(i, at)) in marks.iter().enumerate() {
        let Change::Mark { label, down, .. } = &r.log[i].1 else { unreachable!() };
        let next = marks.get(k + 1).map_or((r.log.len(), load_end), |m| *m);
        let before = state.clone();
        let mut switches: Vec<Switch> = r
            .groups
            .iter()
            .map(|g| Switch {
                label: label.clone(),
                fault: *down,
                at,
                address: g.address,
                from: before.expected(g).map(String::from),
                to: None,
                settled: None,
                answered: None,
                both_held: 0.0,
                probes: 0,
                probes_failed: 0,
                longest_wait: None,
                requests_failed: 0,
            })
            .collect();
        let mut last_t = at;
        let mut done = vec![false; r.groups.len()];
        for (t, c) in &r.log[i..next.0] {
            // Split brain over [last_t, t] in the state before this change.
            for (g, s) in r.groups.iter().zip(switches.iter_mut()) {
                if s.settled.is_none() && state.live_holders(g).len() > 1 {
                    s.both_held += t - last_t;
                }
            }
            state.apply(c);
            last_t = *t;
            for ((g, s), done) in r.groups.iter().zip(switches.iter_mut()).zip(done.iter_mut()) {
                s.to = state.expected(g).map(String::from);
                if !*done && state.settled(g, &r.macs) {
                    s.settled = Some(t - at);
                    *done = true;
                }
            }
        }
        for s in switches.iter_mut() {
            let end = s.settled.map_or(next.1, |d| at + d);
            let during: Vec<&Probe> =
                r.probes.iter().filter(|p| p.address == s.address && p.started >= at && p.started <= end).collect();
            s.probes = during.len() as u64;
            s.probes_failed = during.iter().filter(|p| p.error.is_some()).count() as u64;
            s.longest_wait = during.iter().map(|p| p.ended - p.started).reduce(f64::max);
            s.answered = r
                .probes
                .iter()
                .filter(|p| p.address == s.address && p.started >= end && p.error.is_none())
                .map(|p| p.ended - at)
                .reduce(f64::min);
            if s.settled.is_none() {
                a.problems.push(format!(
                    "{} did not settle on {:?} after `{}` (before the next event)",
                    s.address, s.to, s.label
                ));
            }
        }
        a.switches.extend(switches);
    }
    // Windows in which a failure of a request to an address is excused.
    let windows = |address: Ipv4Addr| -> Vec<(usize, f64, f64)> {
        a.switches
            .iter()
            .enumerate()
            .filter(|(_, s)| s.address == address && s.moved())
            .map(|(i, s)| {
                let next = a.switches.iter().find(|n| n.at > s.at).map_or(load_end, |n| n.at);
                (i, s.at, s.settled.map_or(next, |d| s.at + d))
            })
            .collect()
    };
    let within = |w: &[(usize, f64, f64)], started: f64, ended: f64| {
        w.iter().find(|(_, from, to)| started <= *to && ended >= *from).map(|(i, _, _)| *i)
    };
    let mut outside: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
    let mut excused = vec![0u64; a.switches.len()];
    for g in &r.groups {
        let w = windows(g.address);
        let to = g.socket_addr();
        for at in attempts.iter().filter(|x| x.to == Some(to)) {
            let Some(e) = &at.error else { continue };
            match within(&w, at.started, at.ended) {
                Some(i) => excused[i] += 1,
                None => outside.entry(g.address).or_default().push(format!(
                    "{:?} {:.3}-{:.3}s {}",
                    at.op,
                    at.started,
                    at.ended,
                    e.chars().take(100).collect::<String>()
                )),
            }
        }
        for p in r.probes.iter().filter(|p| p.address == g.address) {
            let Some(e) = &p.error else { continue };
            if within(&w, p.started, p.ended).is_none() {
                outside.entry(g.address).or_default().push(format!("probe {:.3}-{:.3}s {e}", p.started, p.ended));
            }
        }
        let probes = r.probes.iter().filter(|p| p.address == g.address).count();
        let failed = r.probes.iter().filter(|p| p.address == g.address && p.error.is_some()).count();
        a.notes.push(format!("{}: {probes} probes, {failed} failed", g.address));
    }
    for (s, n) in a.switches.iter_mut().zip(excused) {
        s.requests_failed = n;
    }
    for s in a.switches.iter().filter(|s| s.fault && s.moved() && s.answered.is_some_and(|t| t > TAKEOVER_TARGET_S)) {
        a.notes.push(format!(
            "{} answered {:.2} s after `{}`: over the {TAKEOVER_TARGET_S} s target",
            s.address,
            s.answered.unwrap_or_default(),
            s.label
        ));
    }
    for (address, fails) in outside {
        a.problems.push(format!(
            "{} requests to {address} failed outside a switch of that address (started after the takeover, or while \
             its holder was untouched), e.g. {:?}",
            fails.len(),
            &fails[..fails.len().min(5)]
        ));
    }
    a
}

fn secs(v: &Value) -> String {
    v.as_f64().map(|s| format!("{s:.2} s")).unwrap_or_else(|| "–".into())
}

/// The report's table of floating address switches (empty without any).
pub fn render(all: &[Value]) -> String {
    let rows: Vec<(&str, &Value)> = all
        .iter()
        .flat_map(|v| {
            let name = v["name"].as_str().unwrap_or("?");
            v["floating"].as_array().into_iter().flatten().map(move |s| (name, s))
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\nFloating addresses, per fault or repair of an lb host and per address: the lb that holds it before → \
         after; settled: the new holder alone has it and the clients' ARP entry points to it; answers: end of the \
         first probe started once settled; both held: two live lb hosts held it at once (after a heal); probes \
         (a new GET every 25 ms): failed / started during the switch, and the longest a probe waited; requests: \
         workload requests in flight during the switch that failed (any other failure fails the scenario).\n\n\
         | scenario | event | address | holder | settled | answers | both held | probes failed (longest wait) | requests failed |\n\
         |---|---|---|---|--:|--:|--:|--:|--:|\n",
    );
    for (name, v) in rows {
        let host = |k: &str| v[k].as_str().unwrap_or("none").to_string();
        let moved = v["moved"] == true;
        let holder =
            if moved { format!("{} → {}", host("from"), host("to")) } else { format!("{} (kept)", host("to")) };
        let probes = format!(
            "{}/{} ({})",
            v["probes_failed"].as_u64().unwrap_or(0),
            v["probes"].as_u64().unwrap_or(0),
            secs(&v["longest_wait"])
        );
        s.push_str(&format!(
            "| {name} | {} ({:.1}s) | {} | {holder} | {} | {} | {} | {probes} | {} |\n",
            v["label"].as_str().unwrap_or("?"),
            v["at"].as_f64().unwrap_or(0.0),
            v["address"].as_str().unwrap_or("?"),
            secs(&v["settled"]),
            if moved { secs(&v["answered"]) } else { "–".into() },
            secs(&v["both_held"]),
            v["requests_failed"].as_u64().unwrap_or(0),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::FloatingGroup;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

    fn held(host: &str, held: bool) -> Change {
        Change::Held { host: host.into(), address: A, held }
    }
    fn neigh(mac: &str) -> Change {
        Change::Neighbour { address: A, mac: Some(mac.into()) }
    }
    fn mark(host: &str, down: bool) -> Change {
        Change::Mark { host: host.into(), down, label: format!("{host} {}", if down { "down" } else { "up" }) }
    }

    /// A link cut of the master and its heal: the switch over, the split
    /// brain after the heal, which failures are excused.
    #[test]
    fn switches_split_brain_and_excused_failures() {
        let group = FloatingGroup { name: "www".into(), vrid: 51, address: A, hosts: vec!["lb1".into(), "lb2".into()] };
        let macs: BTreeMap<String, String> = [("lb1", "m1"), ("lb2", "m2")].map(|(h, m)| (h.into(), m.into())).into();
        let log = vec![
            (0.0, held("lb1", true)),
            (0.0, neigh("m1")),
            (1.0, mark("lb1", true)),
            (1.4, held("lb2", true)),
            (1.41, neigh("m2")),
            (3.0, mark("lb1", false)),
            (3.08, held("lb2", false)),
            (3.09, neigh("m1")),
        ];
        let to = group.socket_addr();
        let probe = |started: f64, ended: f64, ok: bool| Probe {
            address: A,
            started,
            ended,
            error: (!ok).then(|| "io: timed out".to_string()),
        };
        let probes =
            vec![probe(0.5, 0.51, true), probe(1.2, 3.2, false), probe(1.45, 1.46, true), probe(3.5, 3.51, true)];
        let r = Recording { groups: vec![group], macs, log, probes };
        let attempt = |started: f64, ended: f64| Attempt {
            op: crate::workload::Op::Write,
            started,
            ended,
            error: Some("io: reset".into()),
            to: Some(to),
        };
        let a = analyze(&r, &[attempt(0.9, 1.1), attempt(3.05, 3.06)], 5.0);
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        let [cut, heal] = &a.switches[..] else { panic!("{:?}", a.switches) };
        assert_eq!((cut.from.as_deref(), cut.to.as_deref()), (Some("lb1"), Some("lb2")));
        assert!((cut.settled.unwrap() - 0.41).abs() < 1e-9, "{cut:?}");
        assert!((cut.answered.unwrap() - 0.46).abs() < 1e-9, "{cut:?}");
        assert_eq!((cut.probes, cut.probes_failed, cut.requests_failed), (1, 1, 1));
        assert_eq!(cut.both_held, 0.0, "lb1 is down: its copy does not count");
        assert!((heal.both_held - 0.08).abs() < 1e-9, "{heal:?}");
        assert!((heal.settled.unwrap() - 0.09).abs() < 1e-9, "{heal:?}");
        assert_eq!(heal.requests_failed, 1);

        // A failure after the settling is a problem.
        let a = analyze(&r, &[attempt(1.5, 1.6)], 5.0);
        assert_eq!(a.problems.len(), 1, "{:?}", a.problems);
    }
}
