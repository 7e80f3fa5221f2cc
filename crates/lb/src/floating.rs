//! The lb's floating addresses: one VRRP instance per `[[vrrp]]` entry,
//! each told whether this lb can serve.
//!
//! "Can serve" is built in, where keepalived needs a track script: every
//! frontend's backend has a server that can take a request. While it does
//! not, each instance advertises its priority less `track_weight`, so a
//! peer lb that can serve takes the address; when both cannot, both lose
//! the same weight and the order stays as configured.
//!
//! Instances stop with the lb: on shutdown each sends priority 0 and
//! releases its addresses before the lb drains its connections, so the
//! peer takes over after its skew time instead of the master-down interval.

use crate::monitor::Monitor;
use crate::routing::Routing;
use arc_swap::ArcSwap;
use bulwark_config::vrrp::VrrpInstance;
use bulwark_telemetry::metrics::Exposition;
use bulwark_vrrp::instance::{run, InstanceStatus};
use bulwark_vrrp::router::State;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a stopping lb waits for its instances' last advertisements.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Whether every frontend's backend has a server that can take a request.
pub fn can_serve(routing: &Routing) -> bool {
    routing.config.frontends.iter().all(|f| routing.upstreams.get(&f.backend).is_some_and(|u| u.has_available()))
}

/// The running instances of one lb (shared with the admin listener).
#[derive(Default)]
pub struct FloatingAddresses {
    instances: Vec<(VrrpInstance, Arc<InstanceStatus>)>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl FloatingAddresses {
    /// Start one instance per `[[vrrp]]` entry of the running config, and
    /// the task that follows this lb's ability to serve.
    pub fn start(routing: Arc<ArcSwap<Routing>>, monitor: Arc<Monitor>, stop: CancellationToken) -> FloatingAddresses {
        let configs = routing.load().config.vrrp.clone();
        if configs.is_empty() {
            return FloatingAddresses::default();
        }
        let (serving, health) = watch::channel(can_serve(&routing.load()));
        let every = configs.iter().map(|c| c.advert_interval).min().unwrap_or(Duration::from_secs(1));
        let mut tasks = vec![tokio::spawn(follow_health(routing, serving, every, monitor.clone(), stop.clone()))];
        let mut instances = Vec::new();
        for config in configs {
            let status = Arc::new(InstanceStatus::default());
            instances.push((config.clone(), status.clone()));
            let (health, stop, monitor) = (health.clone(), stop.clone(), monitor.clone());
            tasks.push(tokio::spawn(async move {
                let name = config.name.clone();
                let watcher =
                    tokio::spawn(report_transitions(name.clone(), status.clone(), monitor.clone(), stop.clone()));
                if let Err(e) = run(config, health, stop, status).await {
                    tracing::error!(vrrp = %name, "floating address stopped: {e}");
                    monitor.event("error", format!("vrrp {name}: {e}"));
                }
                watcher.abort();
            }));
        }
        FloatingAddresses { instances, tasks: std::sync::Mutex::new(tasks) }
    }

    /// Wait (a little) for the instances to send priority 0 and release
    /// their addresses; called once `stop` is cancelled.
    pub async fn stopped(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = tokio::time::timeout(STOP_GRACE, t).await;
        }
    }

    /// What `bulwark status` and the dashboard show: one object per address group.
    pub fn overview(&self) -> serde_json::Value {
        self.instances
            .iter()
            .map(|(c, s)| {
                serde_json::json!({
                    "name": c.name,
                    "vrid": c.vrid,
                    "interface": c.interface,
                    "addresses": c.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "state": s.state().as_str(),
                    "priority": s.priority(),
                    "error": s.last_error(),
                })
            })
            .collect()
    }

    /// The `bulwark_vrrp_*` families of every instance (none without
    /// instances).
    pub fn encode_metrics(&self, out: &mut Exposition<'_>) -> std::fmt::Result {
        if self.instances.is_empty() {
            return Ok(());
        }
        let vrid: Vec<String> = self.instances.iter().map(|(c, _)| c.vrid.to_string()).collect();
        let label = |i: usize| [("name", self.instances[i].0.name.as_str()), ("vrid", vrid[i].as_str())];
        let each = || self.instances.iter().enumerate().map(|(i, (_, s))| (label(i), s));
        let state = |s: &InstanceStatus| match s.state() {
            State::Initialize => 0,
            State::Backup => 1,
            State::Master => 2,
        };
        out.gauges("bulwark_vrrp_state", "0 initialize, 1 backup, 2 master.", each().map(|(l, s)| (l, state(s))))?;
        out.gauges(
            "bulwark_vrrp_priority",
            "Priority advertised now (after health tracking).",
            each().map(|(l, s)| (l, i64::from(s.priority()))),
        )?;
        let transitions = self.instances.iter().enumerate().flat_map(|(i, (_, s))| {
            let [name, vrid] = label(i);
            [("master", &s.became_master), ("backup", &s.became_backup)]
                .map(|(to, n)| ([name, vrid, ("to", to)], n.load(Ordering::Relaxed)))
        });
        out.counters("bulwark_vrrp_transitions", "State changes, by the state entered.", transitions)?;
        type Read = fn(&InstanceStatus) -> &std::sync::atomic::AtomicU64;
        let counters: [(&str, &str, Read); 3] = [
            ("bulwark_vrrp_adverts_sent", "Advertisements sent.", |s| &s.adverts_sent),
            ("bulwark_vrrp_adverts_received", "Valid advertisements received from peers.", |s| &s.adverts_received),
            (
                "bulwark_vrrp_bad_packets",
                "Datagrams refused: malformed, wrong version, TTL or checksum, or from an unknown peer.",
                |s| &s.bad_packets,
            ),
        ];
        for (name, help, read) in counters {
            out.counters(name, help, each().map(|(l, s)| (l, read(s).load(Ordering::Relaxed))))?;
        }
        Ok(())
    }
}

/// Tell the instances whether this lb can serve, checked every advertisement
/// interval (health checks change it at most that often anyway).
async fn follow_health(
    routing: Arc<ArcSwap<Routing>>,
    serving: watch::Sender<bool>,
    every: Duration,
    monitor: Arc<Monitor>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = can_serve(&routing.load());
        let changed = serving.send_if_modified(|s| std::mem::replace(s, now) != now);
        if changed {
            let text = if now {
                "this lb can serve again: floating addresses advertise their full priority"
            } else {
                "a frontend has no server that can take a request: floating addresses advertise a lower priority"
            };
            monitor.event(if now { "info" } else { "warn" }, text.into());
        }
    }
}

/// Put each state change of an instance on the events list.
async fn report_transitions(name: String, status: Arc<InstanceStatus>, monitor: Arc<Monitor>, stop: CancellationToken) {
    let mut last = status.state();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = status.state();
        if now != last {
            let level = if now == State::Master { "warn" } else { "info" };
            monitor.event(level, format!("vrrp {name}: {} -> {}", last.as_str(), now.as_str()));
            last = now;
        }
    }
}
