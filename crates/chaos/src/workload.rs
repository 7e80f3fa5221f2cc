//! The workload: client threads that write and read back, recording every
//! attempt, every acknowledged write and every read-your-writes violation.
//!
//! - [`Target::Lb`]: `POST /api/messages` then `GET /api/messages?before=ID+1&limit=1`
//!   through the load balancer, each client keeping its `bulwark_rw` cookie.
//! - [`Target::Floating`]: the same through floating addresses (client `c`
//!   uses address `c mod n`), with a shorter timeout: a request stuck on an
//!   lb host that died must not keep its client idle for long.
//! - [`Target::Db`]: `bulwark_db_api::Client` (the app's own client) inserting
//!   into `chaos_writes`, then reading the row back with the write's token.
//!
//! Every write carries a unique payload (`c<client>-<seq>`), so a write
//! applied twice shows up as a duplicate payload. Every POST through the lb
//! also carries a unique `Idempotency-Key` (`chaos-<run>-c<client>-<seq>`),
//! so the proxies may replay it when a web or app node dies under it.
use crate::cluster::SECRET;
use bulwark_db_api::{Client, Consistency, Params, Statement, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const DB_TABLE: &str = "chaos_writes";

#[derive(Debug, Clone)]
pub enum Target {
    Lb(SocketAddr),
    /// Floating addresses of the lb hosts (at least one).
    Floating(Vec<SocketAddr>),
    Db(Vec<SocketAddr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Write,
    Read,
}

/// One request (times in seconds since the recorder started).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub op: Op,
    pub started: f64,
    pub ended: f64,
    /// `None` on success, else what went wrong.
    pub error: Option<String>,
    /// The address the request went to (HTTP targets).
    pub to: Option<SocketAddr>,
}

/// An acknowledged write.
#[derive(Debug, Clone)]
pub struct Ack {
    pub id: i64,
    pub payload: String,
    pub started: f64,
    pub ended: f64,
}

#[derive(Default)]
pub struct Log {
    pub attempts: Vec<Attempt>,
    pub acks: Vec<Ack>,
    pub ryw_violations: Vec<String>,
}

pub struct Recorder {
    pub t0: Instant,
    pub log: Mutex<Log>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder { t0: Instant::now(), log: Mutex::new(Log::default()) })
    }
    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
    fn attempt(&self, op: Op, started: f64, error: Option<String>) {
        self.attempt_to(None, op, started, error);
    }
    fn attempt_to(&self, to: Option<SocketAddr>, op: Op, started: f64, error: Option<String>) {
        let a = Attempt { op, started, ended: self.now(), error, to };
        self.log.lock().unwrap().attempts.push(a);
    }
}

/// Running client threads.
pub struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workload {
    /// `clients` threads until [`Workload::stop`] (or `max_writes` each).
    pub fn start(target: Target, clients: usize, max_writes: u64, rec: Arc<Recorder>) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        // Distinguishes this run's idempotency keys from any earlier run's.
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| format!("{:x}", d.as_nanos()))
            .unwrap_or_default();
        let threads = (0..clients)
            .map(|c| {
                let (target, rec, stop, run) = (target.clone(), rec.clone(), stop.clone(), run.clone());
                std::thread::Builder::new()
                    .name(format!("chaos-client-{c}"))
                    .spawn(move || match target {
                        Target::Lb(addr) => lb_client(addr, HTTP_TIMEOUT, &run, c, max_writes, &rec, &stop),
                        Target::Floating(addrs) => {
                            let addr = addrs[c % addrs.len()];
                            lb_client(addr, FLOATING_HTTP_TIMEOUT, &run, c, max_writes, &rec, &stop)
                        }
                        Target::Db(nodes) => db_client(nodes, c, max_writes, &rec, &stop),
                    })
                    .unwrap()
            })
            .collect();
        Workload { stop, threads }
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Longer than the app's database client deadline (10 s), so the client
/// sees what the site answers rather than its own timeout.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Through a floating address: the database is not faulted there, so a
/// request answers in milliseconds unless its lb host died under it.
pub const FLOATING_HTTP_TIMEOUT: Duration = Duration::from_secs(3);

fn cookie_of(r: &crate::HttpResponse) -> Option<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| v.split(';').next())
        .find(|kv| kv.starts_with("bulwark_rw="))
        .map(str::to_string)
}

fn describe(r: &std::io::Result<crate::HttpResponse>) -> String {
    match r {
        Ok(r) => {
            let t = r.text();
            format!("HTTP {} {}", r.status, t.chars().take(120).collect::<String>())
        }
        Err(e) => format!("io: {e}"),
    }
}

fn lb_client(
    addr: SocketAddr,
    timeout: Duration,
    run: &str,
    c: usize,
    max_writes: u64,
    rec: &Recorder,
    stop: &AtomicBool,
) {
    let mut jar: Option<String> = None;
    for seq in 0..max_writes {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let payload = format!("c{c}-{seq}");
        let body = serde_json::json!({ "author": format!("chaos{c}"), "text": payload }).to_string();
        let key = format!("chaos-{run}-c{c}-{seq}");
        let mut headers = vec![("Content-Type", "application/json"), ("Idempotency-Key", key.as_str())];
        if let Some(j) = &jar {
            headers.push(("Cookie", j.as_str()));
        }
        let started = rec.now();
        let r = crate::http(addr, "POST", "/api/messages", &headers, body.as_bytes(), timeout);
        let id = match &r {
            Ok(resp) if resp.status == 201 => {
                serde_json::from_slice::<serde_json::Value>(&resp.body).ok().and_then(|v| v["message"]["id"].as_i64())
            }
            _ => None,
        };
        let Some(id) = id else {
            rec.attempt_to(Some(addr), Op::Write, started, Some(describe(&r)));
            continue;
        };
        let resp = r.unwrap();
        if let Some(ck) = cookie_of(&resp) {
            jar = Some(ck);
        }
        rec.attempt_to(Some(addr), Op::Write, started, None);
        let ended = rec.now();
        rec.log.lock().unwrap().acks.push(Ack { id, payload: payload.clone(), started, ended });
        // Read your write: the newest message with an id <= ours is ours.
        let mut headers = vec![];
        if let Some(j) = &jar {
            headers.push(("Cookie", j.as_str()));
        }
        let started = rec.now();
        let path = format!("/api/messages?before={}&limit=1", id + 1);
        let r = crate::http(addr, "GET", &path, &headers, b"", timeout);
        match &r {
            Ok(resp) if resp.status == 200 => {
                rec.attempt_to(Some(addr), Op::Read, started, None);
                let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
                let seen = v["messages"].as_array().and_then(|m| m.first()).and_then(|m| m["id"].as_i64());
                if seen != Some(id) {
                    rec.log.lock().unwrap().ryw_violations.push(format!(
                        "client {c}: wrote id {id} ({payload}), then read {seen:?} with cookie {jar:?} at {ended:.3}s: {}",
                        resp.text()
                    ));
                }
            }
            _ => rec.attempt_to(Some(addr), Op::Read, started, Some(describe(&r))),
        }
    }
}

fn db_client(nodes: Vec<SocketAddr>, c: usize, max_writes: u64, rec: &Recorder, stop: &AtomicBool) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = Client::with_tls(nodes.iter().map(|a| a.to_string()), SECRET, crate::inner_tls());
    for seq in 0..max_writes {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let payload = format!("c{c}-{seq}");
        let stmt = Statement::with_params(
            format!("INSERT INTO {DB_TABLE} (client, seq, payload) VALUES (?, ?, ?)"),
            vec![Value::Integer(c as i64), Value::Integer(seq as i64), payload.clone().into()],
        );
        let started = rec.now();
        let w = match rt.block_on(client.execute(&[stmt])) {
            Ok(w) => w,
            Err(e) => {
                rec.attempt(Op::Write, started, Some(format!("{e}")));
                continue;
            }
        };
        rec.attempt(Op::Write, started, None);
        let ended = rec.now();
        let id = w.last_insert_id;
        rec.log.lock().unwrap().acks.push(Ack { id, payload: payload.clone(), started, ended });
        let started = rec.now();
        let sql = format!("SELECT id, payload FROM {DB_TABLE} WHERE id = ?");
        let r = rt.block_on(client.query(
            &sql,
            Params::Positional(vec![Value::Integer(id)]),
            Consistency::None,
            Some(w.token),
        ));
        match r {
            Ok(rows) => {
                rec.attempt(Op::Read, started, None);
                let got = rows.rows.first().and_then(|r| r.get(1)).and_then(Value::as_str).map(str::to_string);
                if got.as_deref() != Some(payload.as_str()) {
                    rec.log.lock().unwrap().ryw_violations.push(format!(
                        "client {c}: wrote id {id} ({payload}) with token {}.{}, node {} (applied {}) answered {got:?}",
                        w.token.term, w.token.index, rows.node_id, rows.applied_index
                    ));
                }
            }
            Err(e) => rec.attempt(Op::Read, started, Some(format!("{e}"))),
        }
    }
}

/// Create the database workload's table (through the primary).
pub fn create_db_table(nodes: &[SocketAddr]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = Client::with_tls(nodes.iter().map(|a| a.to_string()), SECRET, crate::inner_tls());
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {DB_TABLE} (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL)"
    );
    rt.block_on(client.execute(&[Statement::with_params(&sql, vec![])])).expect("creating the workload table");
}
