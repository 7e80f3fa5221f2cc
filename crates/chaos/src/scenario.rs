//! One scenario: start the stack, run the workload and the primary monitor,
//! let the script inject its faults, stop, check, report.
use crate::cluster::{Cluster, SECRET};
use crate::convergence::{converge, query};
use crate::floating::FloatingWatch;
use crate::report::{write_report, Outcome};
use crate::topology::{Stack, LB};
use crate::workload::{Op, Recorder, Target, Workload, DB_TABLE};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Client threads of the workload ([`run_scenario`]).
pub const CLIENTS: usize = 4;
/// Client threads of the heavy workload (as bench/db.sh drives it).
pub const HEAVY_CLIENTS: usize = 16;
/// Load before the first fault.
pub const WARMUP: Duration = Duration::from_secs(2);
/// Load after the script's last action, to see the site recover.
pub const COOLDOWN: Duration = Duration::from_secs(3);
/// Failover target: writes accepted again within this.
pub const FAILOVER_TARGET_S: f64 = 2.0;

/// What a scenario must show beyond the invariants every scenario checks
/// (no acknowledged write lost, no duplicate, at most one primary per term,
/// identical replicas, read-your-writes, writes accepted after the faults).
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    /// No client-visible error at all, requests in flight at a `kill -9`
    /// of a web or app node ([`Ctx::kill_fault`]) included: every POST of
    /// the workload carries an `Idempotency-Key`, so the lb and web proxies
    /// replay it on another server and the database stores it once.
    pub zero_errors: bool,
}

#[derive(Debug, Clone)]
struct Event {
    label: String,
    at: f64,
    /// A fault of the database primary: measure the failover time.
    primary: bool,
    /// A kill -9: the report counts the errors of requests in flight at
    /// this instant separately.
    kill: bool,
}

/// Requests in flight within this much of a kill count as hit by it.
const KILL_WINDOW_S: f64 = 0.1;

/// What a script sees: the running cluster and the recorder's clock.
pub struct Ctx<'a> {
    pub cluster: &'a Cluster,
    pub rec: Arc<Recorder>,
    /// The floating address instruments (floating stacks only).
    pub floating: Option<&'a FloatingWatch>,
    events: Vec<Event>,
    notes: Vec<String>,
}

impl Ctx<'_> {
    /// Record a fault injected now (the label goes into the report).
    pub fn fault(&mut self, label: impl Into<String>) {
        self.event(label.into(), false);
    }
    /// Record a kill -9 happening now (call just before sending it).
    pub fn kill_fault(&mut self, label: impl Into<String>) {
        self.event(label.into(), false);
        self.events.last_mut().unwrap().kill = true;
    }
    /// Record a fault of the database primary (failover time is measured
    /// from here to the first acknowledged write that started after it).
    pub fn primary_fault(&mut self, label: impl Into<String>) {
        self.event(label.into(), true);
    }
    /// Record a repair (heal, resume, restart).
    pub fn repair(&mut self, label: impl Into<String>) {
        self.event(label.into(), false);
    }
    fn event(&mut self, label: String, primary: bool) {
        let at = self.rec.now();
        eprintln!("chaos: {at:7.3}s {label}");
        self.events.push(Event { label, at, primary, kill: false });
    }
    /// A fault of lb host `host` (call just before injecting it): from now
    /// on it will not serve, and its floating addresses belong to the next
    /// lb of their groups. `kill`: a kill -9 (see [`Ctx::kill_fault`]).
    pub fn lb_host_fault(&mut self, host: &str, label: impl Into<String>, kill: bool) {
        let label = label.into();
        self.event(label.clone(), false);
        self.events.last_mut().unwrap().kill = kill;
        let at = self.events.last().unwrap().at;
        self.watch().mark(at, host, true, &label);
    }
    /// The repair of lb host `host` (call just before it): its floating
    /// addresses go back to it where it is preferred.
    pub fn lb_host_repair(&mut self, host: &str, label: impl Into<String>) {
        let label = label.into();
        self.event(label.clone(), false);
        let at = self.events.last().unwrap().at;
        self.watch().mark(at, host, false, &label);
    }
    /// Wait (bounded) until every floating address is where it should be,
    /// for the clients too; returns the seconds since the last event.
    pub fn wait_floating_settled(&mut self) -> f64 {
        let at = self.watch().wait_settled();
        at - self.events.last().map_or(0.0, |e| e.at)
    }
    fn watch(&self) -> &FloatingWatch {
        self.floating.expect("not a floating address stack")
    }
    pub fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        eprintln!("chaos: note: {n}");
        self.notes.push(n);
    }
    pub fn sleep(&self, secs: f64) {
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
}

/// (seconds since start, node id, term, role) as seen by the monitor.
type Sighting = (f64, u64, u64, String);

/// Polls every database node's `/v1/status` (one thread per node, so a
/// paused node does not blind the others) and remembers who said it was
/// primary in which term.
struct Monitor {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// (seconds, node id, term, role)
    seen: Arc<Mutex<Vec<Sighting>>>,
}

impl Monitor {
    fn start(cluster: &Cluster, rec: &Arc<Recorder>) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let threads = cluster
            .dbs
            .iter()
            .map(|d| {
                let (d, stop, seen, rec) = (d.clone(), stop.clone(), seen.clone(), rec.clone());
                std::thread::spawn(move || {
                    let auth = format!("Bearer {SECRET}");
                    let mut last: Option<(u64, String)> = None;
                    while !stop.load(Ordering::SeqCst) {
                        let r = crate::http(
                            d.addr,
                            "GET",
                            "/v1/status",
                            &[("Authorization", &auth)],
                            b"",
                            Duration::from_millis(300),
                        );
                        if let Some(s) = r
                            .ok()
                            .filter(|r| r.status == 200)
                            .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
                        {
                            let cur = (s["term"].as_u64().unwrap_or(0), s["role"].as_str().unwrap_or("?").to_string());
                            if last.as_ref() != Some(&cur) {
                                seen.lock().unwrap().push((rec.now(), d.id, cur.0, cur.1.clone()));
                                last = Some(cur);
                            }
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
            })
            .collect();
        Monitor { stop, threads, seen }
    }

    fn stop(self) -> Vec<Sighting> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let mut v = self.seen.lock().unwrap().clone();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }
}

/// Run one scenario end to end with [`CLIENTS`] client threads and assert
/// its checks. `report_dir` gets `chaos-results/<name>.json` and the
/// regenerated `chaos-report.md`.
pub fn run_scenario(
    name: &str,
    stack: Stack,
    expect: Expect,
    report_dir: &Path,
    script: impl FnOnce(&mut Ctx),
) -> Outcome {
    run_scenario_with_clients(name, stack, expect, CLIENTS, report_dir, script)
}

/// [`run_scenario`] with `clients` client threads.
pub fn run_scenario_with_clients(
    name: &str,
    stack: Stack,
    expect: Expect,
    clients: usize,
    report_dir: &Path,
    script: impl FnOnce(&mut Ctx),
) -> Outcome {
    let began = Instant::now();
    let cluster = Cluster::start(stack);
    let primary = cluster.wait_primary(Duration::from_secs(30));
    eprintln!("chaos: primary is {}", primary.name);
    let target = match stack {
        Stack::Db => {
            let nodes: Vec<_> = cluster.dbs.iter().map(|d| d.addr).collect();
            crate::workload::create_db_table(&nodes);
            Target::Db(nodes)
        }
        Stack::Full => {
            wait_site(LB);
            Target::Lb(LB)
        }
        Stack::Floating | Stack::FloatingActiveActive => {
            // Through every floating address (each lb took its own).
            let addrs: Vec<_> = stack.floating().iter().map(|g| g.socket_addr()).collect();
            for a in &addrs {
                wait_site(*a);
            }
            Target::Floating(addrs)
        }
    };
    let rec = Recorder::new();
    let monitor = Monitor::start(&cluster, &rec);
    let watch = stack.has_floating().then(|| FloatingWatch::start(&cluster, rec.clone()));
    if let Some(w) = &watch {
        w.wait_settled();
    }
    let workload = Workload::start(target, clients, 100_000, rec.clone());
    std::thread::sleep(WARMUP);
    let mut ctx =
        Ctx { cluster: &cluster, rec: rec.clone(), floating: watch.as_ref(), events: Vec::new(), notes: Vec::new() };
    script(&mut ctx);
    std::thread::sleep(COOLDOWN);
    let load_end = rec.now();
    workload.stop();
    let seen = monitor.stop();
    let Ctx { events, mut notes, .. } = ctx;
    notes.extend(cluster.notes.iter().cloned());
    let recording = watch.map(FloatingWatch::stop);

    let mut o = Outcome {
        name: name.to_string(),
        stack: stack.name().to_string(),
        faults: events.iter().map(|e| format!("{:.1}s {}", e.at, e.label)).collect::<Vec<_>>().join("; "),
        ..Default::default()
    };
    // Primaries per term.
    let mut per_term: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (_, id, term, role) in &seen {
        if role == "primary" {
            per_term.entry(*term).or_default().insert(*id);
        }
    }
    o.split_brain_terms = per_term.values().filter(|s| s.len() > 1).count() as u64;
    for (term, ids) in per_term.iter().filter(|(_, s)| s.len() > 1) {
        o.problems.push(format!("term {term} had {} primaries: {ids:?}", ids.len()));
    }
    o.terms = per_term
        .iter()
        .map(|(t, ids)| format!("t{t}:{}", ids.iter().map(|i| format!("db{i}")).collect::<Vec<_>>().join("+")))
        .collect::<Vec<_>>()
        .join(" ");

    let (converged, checksum, primary) = converge(&cluster, &mut o.problems);
    o.converged = converged;
    o.checksum = checksum;

    // Acknowledged writes against the primary's table.
    let log = rec.log.lock().unwrap();
    let sql = match stack {
        Stack::Db => format!("SELECT id, payload FROM {DB_TABLE} ORDER BY id"),
        Stack::Full | Stack::Floating | Stack::FloatingActiveActive => {
            "SELECT id, text FROM messages ORDER BY id".to_string()
        }
    };
    let rows: Vec<(i64, String)> = match primary.as_ref().map(|p| query(p.addr, &sql)) {
        Some(Ok(v)) => v["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| (r[0].as_i64().unwrap_or(-1), r[1].as_str().unwrap_or("").to_string()))
            .collect(),
        Some(Err(e)) => {
            o.problems.push(format!("reading the written rows: {e}"));
            Vec::new()
        }
        None => {
            o.problems.push("no primary to read the written rows from".into());
            Vec::new()
        }
    };
    let by_id: HashMap<i64, &str> = rows.iter().map(|(i, p)| (*i, p.as_str())).collect();
    let mut lost = Vec::new();
    for a in &log.acks {
        if by_id.get(&a.id) != Some(&a.payload.as_str()) {
            lost.push(format!("id {} ({}) acked at {:.3}s: found {:?}", a.id, a.payload, a.ended, by_id.get(&a.id)));
        }
    }
    o.lost = lost.len() as u64;
    if !lost.is_empty() {
        o.problems.push(format!("{} acknowledged writes missing, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]));
    }
    let mut count: HashMap<&str, u32> = HashMap::new();
    for (_, p) in &rows {
        let ours = p
            .strip_prefix('c')
            .and_then(|r| r.split_once('-'))
            .is_some_and(|(a, b)| a.chars().all(|c| c.is_ascii_digit()) && b.chars().all(|c| c.is_ascii_digit()));
        if ours {
            *count.entry(p.as_str()).or_default() += 1;
        }
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    o.duplicates = dups.iter().map(|(_, n)| (**n - 1) as u64).sum();
    if !dups.is_empty() {
        o.problems.push(format!("duplicate writes: {:?}", &dups[..dups.len().min(5)]));
    }
    o.ryw_violations = log.ryw_violations.len() as u64;
    for v in log.ryw_violations.iter().take(5) {
        o.problems.push(format!("read-your-writes violated: {v}"));
    }

    o.requests = log.attempts.len() as u64;
    o.errors = log.attempts.iter().filter(|a| a.error.is_some()).count() as u64;
    o.write_errors = log.attempts.iter().filter(|a| a.error.is_some() && a.op == Op::Write).count() as u64;
    o.acked = log.acks.len() as u64;
    let mut samples: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for a in log.attempts.iter().filter(|a| a.error.is_some()) {
        let e = a.error.as_ref().unwrap();
        let e: String = e.chars().take(100).map(|c| if c.is_control() { ' ' } else { c }).collect();
        let key = format!("{:?} {}", a.op, e.trim_end());
        samples.entry(key).or_insert((0, a.ended)).0 += 1;
    }
    o.error_samples = samples.into_iter().map(|(k, (n, at))| format!("{n}× {k} (first at {at:.1}s)")).collect();

    // Failover: from each primary fault to the first acknowledged write
    // that started after it.
    for e in events.iter().filter(|e| e.primary) {
        let first = log.acks.iter().filter(|a| a.started >= e.at).map(|a| a.ended).fold(f64::INFINITY, f64::min);
        let term_then = seen.iter().filter(|s| s.0 <= e.at).map(|s| s.2).max().unwrap_or(0);
        if let Some(el) = seen.iter().find(|s| s.0 >= e.at && s.3 == "primary" && s.2 > term_then) {
            let took = el.0 - e.at;
            o.election = Some(o.election.map_or(took, |f: f64| f.max(took)));
        }
        let took = first - e.at;
        if took.is_finite() {
            o.failover = Some(o.failover.map_or(took, |f: f64| f.max(took)));
        } else {
            o.problems.push(format!("no write was accepted after `{}`", e.label));
        }
    }
    let mut ends: Vec<f64> = log.acks.iter().map(|a| a.ended).filter(|t| *t >= WARMUP.as_secs_f64() / 2.0).collect();
    ends.push(load_end);
    ends.sort_by(f64::total_cmp);
    o.max_write_gap = ends.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    if let Some(last) = events.last() {
        if !log.acks.iter().any(|a| a.started > last.at) {
            o.problems.push(format!("no write was accepted after the last event `{}`", last.label));
        }
    }
    if o.acked == 0 {
        o.problems.push("the workload made no progress".into());
    }
    let kills: Vec<f64> = events.iter().filter(|e| e.kill).map(|e| e.at).collect();
    let at_kill = |a: &crate::workload::Attempt| {
        kills.iter().any(|k| a.started < k + KILL_WINDOW_S && a.ended > k - KILL_WINDOW_S)
    };
    o.kill_errors = log.attempts.iter().filter(|a| a.error.is_some() && at_kill(a)).count() as u64;
    let examples: Vec<String> = log
        .attempts
        .iter()
        .filter(|a| a.error.is_some())
        .take(5)
        .map(|a| {
            let when = if at_kill(a) { " (in flight at a kill -9)" } else { "" };
            format!("{:.3}-{:.3}s{when} {:?} {}", a.started, a.ended, a.op, a.error.as_deref().unwrap_or(""))
        })
        .collect();
    if expect.zero_errors && o.errors > 0 {
        o.problems.push(format!(
            "{} client errors ({} of them in flight at a kill -9) where none are allowed, e.g. {examples:?}",
            o.errors, o.kill_errors
        ));
    }
    if stack.has_site() {
        notes.push(replay_note(&cluster));
    }
    if let Some(r) = &recording {
        let f = crate::floating::analyze(r, &log.attempts, load_end);
        o.floating = f.switches.iter().map(|s| s.to_json()).collect();
        o.problems.extend(f.problems);
        notes.extend(f.notes);
    }
    if let Some(f) = o.failover {
        if f > FAILOVER_TARGET_S {
            notes.push(format!("failover {f:.2}s is over the {FAILOVER_TARGET_S} s target"));
        }
    }
    drop(log);
    o.notes = notes;
    o.seconds = began.elapsed().as_secs_f64();
    write_report(report_dir, &o);
    if !o.problems.is_empty() {
        cluster.dump_logs();
    }
    assert!(o.problems.is_empty(), "chaos scenario {name} failed:\n  {}", o.problems.join("\n  "));
    o
}

/// Wait (bounded) until the site answers through the lb at `addr` (apps
/// migrated, webs healthy).
fn wait_site(addr: std::net::SocketAddr) {
    let t = Instant::now();
    loop {
        let r = crate::http(addr, "GET", "/api/messages?limit=1", &[], b"", Duration::from_secs(5));
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the site never answered through {addr}: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many keyed requests the proxies retried on another server, and how
/// many posts the apps answered from a stored outcome, counted in the role
/// logs (which survive restarts): shows whether the kills hit requests in
/// flight at all.
fn replay_note(cluster: &Cluster) -> String {
    let count = |role: &str, needle: &str| {
        let log = cluster.data_dir(cluster.host_of(role)).join("logs").join(format!("{role}.log"));
        std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains(needle)).count()
    };
    let roles: Vec<&String> = cluster.roles.iter().flat_map(|(_, r)| r).collect();
    let proxies: Vec<String> = roles
        .iter()
        .filter(|r| r.starts_with("lb") || r.starts_with("web"))
        .map(|r| format!("{r} {}", count(r, "retrying a request with an Idempotency-Key")))
        .collect();
    let replayed: usize = roles.iter().filter(|r| r.starts_with("app")).map(|r| count(r, "post replayed")).sum();
    format!(
        "keyed requests retried on another server: {}; posts answered from their stored outcome: {replayed}",
        proxies.join(", ")
    )
}
