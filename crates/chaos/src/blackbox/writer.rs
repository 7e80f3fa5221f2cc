//! The writers: each inserts its own rows `(writer, seq, request_id)`, one
//! at a time, through `POST /v1/execute` with the request id, retrying an
//! unknown outcome (no answer, timeout, 5xx) with the same id until the API
//! acknowledges or refuses it, or the write's deadline passes (then its
//! outcome stays unknown). After every acknowledgement a strong read
//! (`consistency = strong`) must return exactly that row with the
//! acknowledged id. Every attempt goes into the history file.
use super::api::{Api, Reply};
use serde_json::{json, Value};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The checker's table. No unique constraint on `(writer, seq)`: a write
/// applied twice must show up as two rows, not as an error.
pub const TABLE: &str = "nemesis_writes";

pub fn create_table_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, writer INTEGER NOT NULL, \
         seq INTEGER NOT NULL, request_id TEXT NOT NULL)"
    )
}

/// How a write ended, as the API told the writer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 200: committed with this row id at this log position.
    Acked { id: i64, term: u64, index: u64, replayed: bool },
    /// 4xx: refused, never applied.
    Refused(String),
    /// Undecided when the write's deadline passed: it may or may not be
    /// applied, but at most once.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct WriteRecord {
    pub writer: u32,
    pub seq: u64,
    pub request_id: String,
    pub outcome: Outcome,
    pub attempts: u32,
    /// Seconds since the start of the run.
    pub started: f64,
    pub ended: f64,
}

/// Everything the run observed, shared by the writers and the nemesis.
pub struct History {
    t0: Instant,
    file: Mutex<std::io::BufWriter<std::fs::File>>,
    pub writes: Mutex<Vec<WriteRecord>>,
    /// Strong reads after an ack that did not show the acknowledged row.
    pub read_violations: Mutex<Vec<String>>,
    pub reads_ok: AtomicU64,
    /// Strong reads that got no answer before their deadline.
    pub reads_undecided: AtomicU64,
}

impl History {
    pub fn create(path: &std::path::Path) -> std::io::Result<Arc<History>> {
        let file = std::fs::File::create(path)?;
        Ok(Arc::new(History {
            t0: Instant::now(),
            file: Mutex::new(std::io::BufWriter::new(file)),
            writes: Mutex::new(Vec::new()),
            read_violations: Mutex::new(Vec::new()),
            reads_ok: AtomicU64::new(0),
            reads_undecided: AtomicU64::new(0),
        }))
    }

    /// Seconds since the start of the run.
    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// One JSON line in the history file.
    pub fn line(&self, mut v: Value) {
        v["t"] = json!((self.now() * 1000.0).round() / 1000.0);
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(f, "{v}");
    }

    /// A nemesis or harness event: printed and written to the history.
    pub fn event(&self, what: &str) {
        eprintln!("db-nemesis: {:8.3}s {what}", self.now());
        self.line(json!({ "event": what }));
    }

    pub fn flush(&self) {
        let _ = self.file.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

/// What every writer shares.
#[derive(Clone)]
pub struct WriterSetup {
    pub api: Api,
    pub nodes: Vec<SocketAddr>,
    /// Prefix of every request id (unique per run).
    pub run: String,
    /// How long one write is retried before its outcome is left unknown.
    pub write_deadline: Duration,
    /// How long the strong read after an ack is retried.
    pub read_deadline: Duration,
}

/// Running writer threads.
pub struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    pub fn start(count: u32, setup: WriterSetup, hist: Arc<History>) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|w| {
                let (setup, hist, stop) = (setup.clone(), hist.clone(), stop.clone());
                std::thread::Builder::new()
                    .name(format!("writer-{w}"))
                    .spawn(move || writer(w, &setup, &hist, &stop))
                    .expect("spawning a writer thread")
            })
            .collect();
        Writers { stop, threads }
    }

    /// Stop starting new writes; each writer still decides the one it has
    /// in hand (bounded by the deadlines).
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Where a writer sends its next request.
struct Target<'a> {
    nodes: &'a [SocketAddr],
    addr: SocketAddr,
}

impl Target<'_> {
    fn next(&mut self) {
        let i = self.nodes.iter().position(|a| *a == self.addr).map_or(0, |i| i + 1);
        self.addr = self.nodes[i % self.nodes.len()];
    }

    /// Follow a reply that did not settle the request; true when it is
    /// worth a short pause before the next attempt (anything but a
    /// redirect: a node that is down refuses connections at once, and a
    /// replica may still redirect to it).
    fn after(&mut self, r: &Reply) -> bool {
        match r {
            Reply::Redirect(a) => {
                self.addr = *a;
                false
            }
            Reply::Refused { leader: Some(l), .. } if *l != self.addr => {
                self.addr = *l;
                true
            }
            _ => {
                self.next();
                true
            }
        }
    }
}

/// Retry pace after a failed attempt (no primary yet, connection refused).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

fn writer(w: u32, s: &WriterSetup, hist: &History, stop: &AtomicBool) {
    let mut target = Target { nodes: &s.nodes, addr: s.nodes[w as usize % s.nodes.len()] };
    let insert = format!("INSERT INTO {TABLE} (writer, seq, request_id) VALUES (?, ?, ?)");
    for seq in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let request_id = format!("{}-w{w}-{seq}", s.run);
        let statements = json!([{ "sql": insert, "params": [w, seq, request_id] }]);
        let started = hist.now();
        let deadline = Instant::now() + s.write_deadline;
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let r = s.api.execute(target.addr, statements.clone(), &request_id);
            hist.line(
                json!({"w": w, "seq": seq, "op": "write", "node": target.addr.to_string(), "reply": r.describe()}),
            );
            match &r {
                Reply::Ok(v) => break acked(v),
                Reply::Refused { status: 400..=499, message, .. } => break Outcome::Refused(message.clone()),
                _ => {}
            }
            if Instant::now() >= deadline {
                break Outcome::Unknown;
            }
            if target.after(&r) {
                std::thread::sleep(RETRY_PAUSE);
            }
        };
        let rec = WriteRecord {
            writer: w,
            seq,
            request_id: request_id.clone(),
            outcome: outcome.clone(),
            attempts,
            started,
            ended: hist.now(),
        };
        hist.line(
            json!({"w": w, "seq": seq, "op": "decided", "outcome": format!("{outcome:?}"), "attempts": attempts}),
        );
        hist.writes.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
        if let Outcome::Acked { id, term, index, .. } = outcome {
            strong_read(w, seq, id, (term, index), &request_id, s, hist, &mut target);
        }
    }
}

fn acked(v: &Value) -> Outcome {
    Outcome::Acked {
        id: v["last_insert_id"].as_i64().unwrap_or(-1),
        term: v["token"]["term"].as_u64().unwrap_or(0),
        index: v["token"]["index"].as_u64().unwrap_or(0),
        replayed: v["replayed"].as_bool().unwrap_or(false),
    }
}

/// Read the acknowledged row back with `consistency = strong`; anything but
/// exactly that row is a violation.
#[allow(clippy::too_many_arguments)]
fn strong_read(
    w: u32,
    seq: u64,
    id: i64,
    token: (u64, u64),
    request_id: &str,
    s: &WriterSetup,
    hist: &History,
    target: &mut Target,
) {
    let sql = format!("SELECT id, writer, seq, request_id FROM {TABLE} WHERE writer = ? AND seq = ? ORDER BY id");
    let deadline = Instant::now() + s.read_deadline;
    loop {
        let r = s.api.query(target.addr, &sql, json!([w, seq]), "strong");
        hist.line(
            json!({"w": w, "seq": seq, "op": "strong-read", "node": target.addr.to_string(), "reply": r.describe()}),
        );
        if let Reply::Ok(v) = &r {
            let rows = v["rows"].as_array().cloned().unwrap_or_default();
            let expected = json!([id, w, seq, request_id]);
            if rows.len() == 1 && rows[0] == expected {
                hist.reads_ok.fetch_add(1, Ordering::Relaxed);
            } else {
                let what = format!(
                    "write {request_id} acknowledged as id {id} at {}.{}, then a strong read on node {} (applied {}) returned {} instead of [{expected}]",
                    token.0,
                    token.1,
                    v["node_id"],
                    v["applied_index"],
                    Value::Array(rows)
                );
                hist.line(json!({"w": w, "seq": seq, "violation": what}));
                eprintln!("db-nemesis: {:8.3}s VIOLATION {what}", hist.now());
                hist.read_violations.lock().unwrap_or_else(|e| e.into_inner()).push(what);
            }
            return;
        }
        if Instant::now() >= deadline {
            hist.reads_undecided.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if target.after(&r) {
            std::thread::sleep(RETRY_PAUSE);
        }
    }
}
