//! What the admin listener knows beyond counters: per-second rates and p99
//! per server, five minutes of history, recent events, the health of
//! watched nodes (apps, databases with their role and lag), and the alert
//! rules. A collector task samples everything once a second.
use crate::routing::Routing;
use arc_swap::ArcSwap;
use bulwark_config::lb::{Admin, AlertRules, NodeKind};
use bulwark_config::HostPort;
use bulwark_proxy::LatencyHistogram;
use bulwark_telemetry::clock::{monotonic_ms, unix_ms};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod nodes;
mod webhook;

use nodes::poll_node;
use webhook::notify;

const HISTORY: usize = 300;
const EVENTS: usize = 200;

#[derive(Clone, Default)]
struct ServerSample {
    responses: u64,
    errors_5xx: u64,
    hist: [u64; 17],
    state: String,
}

#[derive(Clone, Default, serde::Serialize)]
struct Rates {
    req_per_s: f64,
    p99_ms: Option<f64>,
    err_5xx_per_s: f64,
}

#[derive(Clone, serde::Serialize)]
struct NodeStatus {
    name: String,
    kind: NodeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    address: HostPort,
    healthy: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    db: Option<Value>,
    /// The scheduled backups (a node of kind `backup`).
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<Value>,
}

#[derive(Clone, serde::Serialize)]
struct Event {
    t_ms: u64,
    level: &'static str,
    text: String,
}

#[derive(Clone, serde::Serialize)]
pub struct Alert {
    pub name: String,
    pub severity: &'static str,
    pub since_ms: u64,
    pub summary: String,
}

#[derive(Default)]
struct State {
    last: HashMap<String, ServerSample>,
    rates: HashMap<String, Rates>,
    lb_rates: Rates,
    history: VecDeque<(u64, BTreeMap<String, Rates>)>,
    /// Per backend: (requests, 5xx) per second over the last minute.
    backend_window: HashMap<String, VecDeque<(u64, u64)>>,
    events: VecDeque<Event>,
    nodes: Vec<NodeStatus>,
    /// Conditions seen, by alert key: (first seen, summary, severity).
    pending: HashMap<String, (Instant, u64, String, &'static str)>,
    firing: BTreeMap<String, Alert>,
    lb_hist: [u64; 17],
}

/// Shared by the admin listener, the collector and reloads.
pub struct Monitor {
    state: Mutex<State>,
    started: Instant,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor { state: Mutex::new(State::default()), started: Instant::now() }
    }
}

impl Monitor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record an event for the dashboard (also logged).
    pub fn event(&self, level: &'static str, text: String) {
        match level {
            "warn" => tracing::warn!("{text}"),
            _ => tracing::info!("{text}"),
        }
        let mut s = self.lock();
        s.events.push_back(Event { t_ms: unix_ms(), level, text });
        while s.events.len() > EVENTS {
            s.events.pop_front();
        }
    }

    pub fn firing(&self) -> Vec<Alert> {
        self.lock().firing.values().cloned().collect()
    }

    /// One collection round: rates and states from the routing table.
    fn sample(&self, r: &Routing) {
        let now = monotonic_ms();
        let t = unix_ms();
        let mut transitions = Vec::new();
        {
            let mut s = self.lock();
            let mut point = BTreeMap::new();
            let (mut total_req, mut total_5xx) = (0.0, 0.0);
            let mut lb_hist = [0u64; 17];
            for u in r.upstreams.values() {
                let (mut b_req, mut b_5xx) = (0u64, 0u64);
                for srv in &u.servers {
                    let st = &srv.stats;
                    let responses: u64 = st.responses.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                    let cur = ServerSample {
                        responses,
                        errors_5xx: st.responses[5].load(Ordering::Relaxed),
                        hist: st.latency.snapshot(),
                        state: srv.state_name(now).to_string(),
                    };
                    for (i, c) in cur.hist.iter().enumerate() {
                        lb_hist[i] += c;
                    }
                    let key = format!("{}/{}", u.name(), srv.name);
                    let prev = s.last.get(&key).cloned();
                    let rates = match &prev {
                        Some(p) => Rates {
                            req_per_s: cur.responses.saturating_sub(p.responses) as f64,
                            p99_ms: LatencyHistogram::quantile_ms(&p.hist, &cur.hist, 0.99),
                            err_5xx_per_s: cur.errors_5xx.saturating_sub(p.errors_5xx) as f64,
                        },
                        None => Rates::default(),
                    };
                    if let Some(p) = &prev {
                        if p.state != cur.state {
                            transitions.push((
                                u.name().to_string(),
                                srv.name.clone(),
                                p.state.clone(),
                                cur.state.clone(),
                            ));
                        }
                        b_req += cur.responses.saturating_sub(p.responses);
                        b_5xx += cur.errors_5xx.saturating_sub(p.errors_5xx);
                    }
                    total_req += rates.req_per_s;
                    total_5xx += rates.err_5xx_per_s;
                    point.insert(srv.name.clone(), rates.clone());
                    s.rates.insert(key.clone(), rates);
                    s.last.insert(key, cur);
                }
                let w = s.backend_window.entry(u.name().to_string()).or_default();
                w.push_back((b_req, b_5xx));
                while w.len() > 60 {
                    w.pop_front();
                }
            }
            let p99 = LatencyHistogram::quantile_ms(&s.lb_hist, &lb_hist, 0.99);
            s.lb_hist = lb_hist;
            s.lb_rates = Rates { req_per_s: total_req, p99_ms: p99, err_5xx_per_s: total_5xx };
            s.history.push_back((t, point));
            while s.history.len() > HISTORY {
                s.history.pop_front();
            }
        }
        for (b, srv, from, to) in transitions {
            let level = if to == "up" { "info" } else { "warn" };
            self.event(level, format!("{srv} ({b}) is {} (was {from})", to.to_uppercase()));
        }
    }

    /// Evaluate the alert rules against the latest sample.
    fn evaluate(&self, r: &Routing, rules: &AlertRules, webhook: &Option<String>) {
        let now = monotonic_ms();
        let mut conditions: Vec<(String, &'static str, String)> = Vec::new();
        for u in r.upstreams.values() {
            let mut any = false;
            for srv in &u.servers {
                let st = srv.state_name(now);
                if st == "up" {
                    any = true;
                } else if st != "maint" {
                    conditions.push((
                        format!("ServerDown/{}", srv.name),
                        "critical",
                        format!("{} ({}) is {st}", srv.name, u.name()),
                    ));
                }
            }
            if !any {
                conditions.push((
                    format!("BackendDown/{}", u.name()),
                    "critical",
                    format!("backend {} has no healthy server", u.name()),
                ));
            }
        }
        {
            let s = self.lock();
            for (b, w) in &s.backend_window {
                let (req, err): (u64, u64) = w.iter().fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1));
                if req >= 20 && (err as f64) * 100.0 / (req as f64) > rules.error_rate_percent {
                    conditions.push((
                        format!("HighErrorRate/{b}"),
                        "warning",
                        format!("backend {b}: {:.1}% 5xx over the last minute", err as f64 * 100.0 / req as f64),
                    ));
                }
            }
            let dbs: Vec<&NodeStatus> = s.nodes.iter().filter(|n| n.kind == NodeKind::Db).collect();
            if !dbs.is_empty() && !dbs.iter().any(|n| n.db.as_ref().is_some_and(|d| d["role"] == "primary")) {
                conditions.push(("NoPrimary".into(), "critical", "no database node reports itself primary".into()));
            }
            for n in &s.nodes {
                if !n.healthy {
                    conditions.push((
                        format!("NodeDown/{}", n.name),
                        "critical",
                        format!("{} ({}) is unreachable or unhealthy: {}", n.name, n.kind.name(), n.detail),
                    ));
                }
                if let Some(free) = n.db.as_ref().and_then(|d| d["disk_free_bytes"].as_u64()) {
                    if free < rules.disk_free_bytes {
                        conditions.push((
                            format!("DiskLow/{}", n.name),
                            "critical",
                            format!(
                                "{} has {:.1} MiB free on its data dir's file system (alert below {:.1} MiB)",
                                n.name,
                                free as f64 / 1048576.0,
                                rules.disk_free_bytes as f64 / 1048576.0
                            ),
                        ));
                    }
                }
                if let Some(b) = &n.backup {
                    let (age, max) = (b["age_seconds"].as_f64().unwrap_or(0.0), b["max_age_seconds"].as_f64());
                    if let Some(max) = max.filter(|m| age > *m) {
                        let what = if b["last_good_ms"].is_null() {
                            format!("no good backup in the {age:.0} s since the schedule started")
                        } else {
                            format!("the newest good backup is {age:.0} s old")
                        };
                        conditions.push((
                            "BackupTooOld".into(),
                            "warning",
                            format!("{what} (alert above {max:.0} s; see the backup log lines of `bulwark up`)"),
                        ));
                    }
                }
                if let Some(d) = &n.db {
                    let le = d["lag_entries"].as_u64().unwrap_or(0);
                    let ls = d["lag_seconds"].as_f64().unwrap_or(0.0);
                    if le > rules.lag_entries || ls > rules.lag_seconds {
                        conditions.push((
                            format!("ReplicationLag/{}", n.name),
                            "warning",
                            format!("{} lags {le} entries / {ls:.1} s", n.name),
                        ));
                    }
                }
            }
        }
        for (name, days) in &r.certificate_expiry {
            if *days < rules.certificate_days as i64 {
                conditions.push((
                    format!("CertificateExpiring/{name}"),
                    "warning",
                    format!("frontend {name}: certificate expires in {days} days"),
                ));
            }
        }
        let mut fired = Vec::new();
        let mut resolved = Vec::new();
        {
            let mut s = self.lock();
            let keys: std::collections::HashSet<String> = conditions.iter().map(|c| c.0.clone()).collect();
            s.pending.retain(|k, _| keys.contains(k));
            for (key, sev, summary) in conditions {
                let entry = s.pending.entry(key.clone()).or_insert((Instant::now(), unix_ms(), summary.clone(), sev));
                entry.2 = summary.clone();
                let (since, since_ms) = (entry.0, entry.1);
                if since.elapsed() >= rules.for_duration && !s.firing.contains_key(&key) {
                    let a = Alert {
                        name: key.split('/').next().unwrap_or(&key).to_string(),
                        severity: sev,
                        since_ms,
                        summary,
                    };
                    s.firing.insert(key.clone(), a.clone());
                    fired.push(a);
                }
            }
            let gone: Vec<String> = s.firing.keys().filter(|k| !keys.contains(*k)).cloned().collect();
            for k in gone {
                if let Some(a) = s.firing.remove(&k) {
                    resolved.push(a);
                }
            }
        }
        for a in fired {
            self.event("warn", format!("ALERT firing: {} ({}): {}", a.name, a.severity, a.summary));
            notify(webhook, "firing", &a);
        }
        for a in resolved {
            self.event("info", format!("ALERT resolved: {}: {}", a.name, a.summary));
            notify(webhook, "resolved", &a);
        }
    }

    /// The `/api/overview` document (contract in docs/monitoring.md).
    pub fn overview(&self, r: &Routing, bound: &[SocketAddr]) -> Value {
        let now = monotonic_ms();
        let admin = r.config.admin.as_ref();
        let s = self.lock();
        let backends: Vec<Value> = r
            .config
            .backends
            .iter()
            .map(|b| {
                let u = &r.upstreams[&b.name];
                let servers: Vec<Value> = u
                    .servers
                    .iter()
                    .map(|srv| {
                        let rates = s.rates.get(&format!("{}/{}", b.name, srv.name)).cloned().unwrap_or_default();
                        json!({
                            "name": srv.name, "address": srv.addr.to_string(), "state": srv.state_name(now),
                            "backup": srv.backup, "weight": srv.weight,
                            "in_flight": srv.in_flight.load(Ordering::Relaxed),
                            "req_per_s": rates.req_per_s, "p99_ms": rates.p99_ms, "err_5xx_per_s": rates.err_5xx_per_s,
                            "requests_total": srv.stats.requests.load(Ordering::Relaxed),
                        })
                    })
                    .collect();
                json!({"name": b.name, "balance": format!("{:?}", b.balance).to_lowercase(), "servers": servers})
            })
            .collect();
        let history: Vec<Value> = s.history.iter().map(|(t, p)| json!({"t_ms": t, "servers": p})).collect();
        json!({
            "site": admin.map(|a| a.site.as_str()).unwrap_or("bulwark"),
            "now_ms": unix_ms(),
            "lb": {
                "name": admin.map(|a| a.name.as_str()).unwrap_or("lb"),
                "uptime_s": self.started.elapsed().as_secs_f64(),
                "req_per_s": s.lb_rates.req_per_s, "p99_ms": s.lb_rates.p99_ms, "err_5xx_per_s": s.lb_rates.err_5xx_per_s,
                "frontends": r.config.frontends.iter().enumerate().map(|(i, f)| json!({
                    "name": f.name,
                    "bind": bound.get(i).copied().unwrap_or(f.bind).to_string(),
                    "tls": f.tls.is_some(),
                })).collect::<Vec<_>>(),
            },
            "backends": backends,
            "nodes": s.nodes,
            "history": history,
            "events": s.events.iter().rev().take(50).cloned().collect::<Vec<_>>(),
            "alerts": s.firing.values().cloned().collect::<Vec<_>>(),
        })
    }

    fn set_nodes(&self, nodes: Vec<NodeStatus>) {
        type Transition = (String, bool, String, Option<String>, Option<String>);
        let transitions: Vec<Transition> = {
            let s = self.lock();
            nodes
                .iter()
                .filter_map(|n| {
                    let old = s.nodes.iter().find(|o| o.name == n.name)?;
                    let role = |x: &NodeStatus| x.db.as_ref().and_then(|d| d["role"].as_str().map(String::from));
                    (old.healthy != n.healthy || role(old) != role(n))
                        .then(|| (n.name.clone(), n.healthy, n.detail.clone(), role(old), role(n)))
                })
                .collect()
        };
        self.lock().nodes = nodes;
        for (name, healthy, detail, old_role, new_role) in transitions {
            if old_role != new_role && new_role.is_some() {
                self.event(
                    "warn",
                    format!(
                        "{name} is now {} (was {})",
                        new_role.unwrap_or_default(),
                        old_role.unwrap_or_else(|| "unknown".into())
                    ),
                );
            } else if healthy {
                self.event("info", format!("{name} is healthy again"));
            } else {
                self.event("warn", format!("{name} is unhealthy: {detail}"));
            }
        }
    }
}

/// The collector: once a second, sample, poll nodes, evaluate alerts.
pub(crate) async fn collect(
    monitor: Arc<Monitor>,
    routing: Arc<ArcSwap<Routing>>,
    admin: Admin,
    monitor_token: Option<String>,
    stop: CancellationToken,
) {
    let tls = match bulwark_mtls::MutualTls::load_optional(admin.mutual_tls.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            monitor.event("warn", format!("admin: watched nodes are polled without TLS: {e}"));
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let r = routing.load_full();
        monitor.sample(&r);
        let polls = admin.nodes.iter().map(|n| poll_node(n, monitor_token.as_deref(), tls.as_ref()));
        let nodes = futures_util::future::join_all(polls).await;
        monitor.set_nodes(nodes);
        let rules = r.config.admin.as_ref().map(|a| a.alerts.clone()).unwrap_or_default();
        monitor.evaluate(&r, &rules, &rules.webhook);
    }
}
