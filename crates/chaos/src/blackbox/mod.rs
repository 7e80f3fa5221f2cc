//! `db-nemesis`: a black-box safety check of the database tier, apart from
//! the chaos suite. Three `bulwark db` processes on loopback, several
//! writers through the plain HTTP API (docs/db.md) with request ids and a
//! strong read after every acknowledgement, a nemesis doing kill -9,
//! SIGSTOP/SIGCONT, immediate restarts of the primary and kills of a
//! replica for as long as asked; then everything is healed, the nodes
//! settle, every node's table is read (`consistency = none`, each node
//! itself) and checked ([`check`]). See docs/testing.md.
//!
//! Needs no root and no network namespaces: every fault is a signal to a
//! process. Everything a run saw goes into its work dir: `history.jsonl`
//! (every attempt and answer, every fault), `nodeN/node.log`,
//! `verdict.txt`.
pub mod api;
pub mod check;
pub mod faults;
pub mod nodes;
pub mod writer;

use api::{Api, Reply};
use check::{NodeTable, Row, Verdict};
use faults::Cluster;
use nodes::{Node, Timing};
use rand::SeedableRng;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use writer::{History, WriterSetup, Writers, TABLE};

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `bulwark` binary.
    pub bin: PathBuf,
    /// Work dir (data dirs, logs, history); must be empty or absent.
    pub dir: PathBuf,
    /// How long the nemesis faults the cluster.
    pub duration: Duration,
    /// Load after healing, before the writers stop.
    pub cooldown: Duration,
    pub writers: u32,
    /// The faults to cycle through (not empty).
    pub faults: Vec<faults::Fault>,
    pub seed: u64,
    /// First of three consecutive loopback ports to try.
    pub base_port: u16,
}

/// Why a run could not check anything at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("work dir {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("no three free consecutive ports from {0} on")]
    NoPorts(u16),
    #[error("{0}")]
    Start(#[from] nodes::StartError),
    #[error("the cluster never became ready: {0}")]
    NotReady(String),
}

/// The nodes did not agree on one applied index in time ([`settle`]).
#[derive(Debug, thiserror::Error)]
#[error("the nodes did not settle on one applied index within {within:?}: {nodes}")]
pub struct NotSettled {
    pub within: Duration,
    /// What each node said last (role, term, applied and last log index).
    pub nodes: String,
}

/// Why a node's table could not be read at the end ([`read_table`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TableError {
    /// The node did not answer the query with 200.
    #[error("{addr}: {}", reply.describe())]
    Reply { addr: SocketAddr, reply: Reply },
    /// The answer has no `rows` array.
    #[error("{addr}: no rows in {body}")]
    NoRows { addr: SocketAddr, body: Value },
    /// A row is not `[id, writer, seq, request_id]`.
    #[error("{addr}: unexpected row {row}")]
    BadRow { addr: SocketAddr, row: Value },
}

const SECRET: &str = "db-nemesis-secret-0123456789abcdef";
/// How long the end waits for every node to apply the same last index.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

/// Run the whole check; `Ok` holds the verdict (passed or not).
pub fn run(o: &Options) -> Result<Verdict, RunError> {
    std::fs::create_dir_all(&o.dir).map_err(|e| RunError::Dir(o.dir.clone(), e))?;
    let hist = History::create(&o.dir.join("history.jsonl")).map_err(|e| RunError::Dir(o.dir.clone(), e))?;
    let (mut c, api) = start_cluster(&o.bin, &o.dir, o.base_port, &hist)?;
    hist.event(&format!("seed {}; {} writers; faults {:?}", o.seed, o.writers, o.faults));
    let run_id = format!("nem{:x}", o.seed);
    let setup = WriterSetup {
        api: api.clone(),
        nodes: c.addrs(),
        run: run_id,
        write_deadline: Duration::from_secs(30),
        read_deadline: Duration::from_secs(15),
    };
    let writers = Writers::start(o.writers, setup, hist.clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let faulted = faults::run(&mut c, &o.faults, Instant::now() + o.duration, &mut rng, &hist);
    let mut problems = std::mem::take(&mut c.problems);
    match &faulted {
        Ok(done) => {
            let list: Vec<String> = done.iter().map(|(f, n)| format!("{n}× {}", f.name())).collect();
            hist.event(&format!("faults: {}", list.join(", ")));
        }
        Err(e) => {
            hist.event(&format!("faults stopped early: {e}"));
            problems.push(e.to_string());
        }
    }
    if let Err(e) = c.heal(&hist) {
        problems.push(format!("healing: {e}"));
    }
    problems.append(&mut c.problems);
    let healed = hist.now();
    std::thread::sleep(o.cooldown);
    hist.event("stopping the writers (each decides the write in hand)");
    writers.stop();
    let writes = hist.writes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !writes.iter().any(|w| w.started >= healed && matches!(w.outcome, writer::Outcome::Acked { .. })) {
        problems.push(format!("no write started after healing was acknowledged within {:?}", o.cooldown));
    }
    if let Err(e) = settle(&c, &hist) {
        problems.push(e.to_string());
    }
    let tables: Vec<NodeTable> =
        c.nodes.iter().map(|n| NodeTable { node: n.id, rows: read_table(&api, n.addr) }).collect();
    let stale = hist.read_violations.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut v = check::check(&writes, &tables, &stale);
    v.strong_reads_ok = hist.reads_ok.load(std::sync::atomic::Ordering::Relaxed);
    v.strong_reads_undecided = hist.reads_undecided.load(std::sync::atomic::Ordering::Relaxed);
    v.problems.splice(0..0, problems);
    let text = v.render();
    hist.line(json!({ "verdict": text }));
    hist.flush();
    let _ = std::fs::write(o.dir.join("verdict.txt"), &text);
    Ok(v)
}

/// The cluster's timing (every node's config).
pub const TIMING: Timing = Timing {
    heartbeat: Duration::from_millis(100),
    election_timeout: Duration::from_millis(400),
    write_timeout: Duration::from_secs(3),
};

/// Start three nodes on free ports from `base_port` under `dir`, wait for
/// a primary and create the checker's table.
pub fn start_cluster(
    bin: &std::path::Path,
    dir: &std::path::Path,
    base_port: u16,
    hist: &History,
) -> Result<(Cluster, Api), RunError> {
    // Three API ports, then three Raft ports.
    let base = nodes::free_ports(base_port, 6).ok_or(RunError::NoPorts(base_port))?;
    let loopback = |port: u16| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
    // Longer than write_timeout: a node's own 503 `timeout` comes first.
    let api = Api::new(SECRET, TIMING.write_timeout + Duration::from_secs(1));
    let nodes =
        (0..3u16).map(|i| Node::new(u64::from(i) + 1, loopback(base + i), loopback(base + 3 + i), dir)).collect();
    let mut c = Cluster {
        nodes,
        bin: bin.to_path_buf(),
        secret: SECRET.into(),
        timing: TIMING,
        api: api.clone(),
        problems: Vec::new(),
    };
    hist.event(&format!("nodes {:?}; work dir {}", c.addrs(), dir.display()));
    for i in 0..c.nodes.len() {
        c.start(i)?;
    }
    let (p, term) =
        c.wait_primary(Duration::from_secs(60)).ok_or_else(|| RunError::NotReady("no primary within 60 s".into()))?;
    hist.event(&format!("node {} is primary in term {term}", c.nodes[p].id));
    create_table(&api, c.nodes[p].addr)?;
    Ok((c, api))
}

fn create_table(api: &Api, addr: SocketAddr) -> Result<(), RunError> {
    let statements = json!([{ "sql": writer::create_table_sql(), "params": [] }]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match api.execute(addr, statements.clone(), "db-nemesis-create-table") {
            Reply::Ok(_) => return Ok(()),
            r if Instant::now() >= deadline => {
                return Err(RunError::NotReady(format!("creating {TABLE}: {}", r.describe())))
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Wait until every node answers, one is primary with a majority, and all
/// have applied the same index, which is the primary's last log index.
pub fn settle(c: &Cluster, hist: &History) -> Result<(), NotSettled> {
    let t = Instant::now();
    let mut last;
    loop {
        let st: Vec<Option<Value>> = c.nodes.iter().map(|n| c.api.status(n.addr, Duration::from_secs(1))).collect();
        last = st
            .iter()
            .zip(&c.nodes)
            .map(|(s, n)| match s {
                Some(s) => format!(
                    "node {}: {} term {} applied {} last log {}",
                    n.id, s["role"], s["term"], s["applied_index"], s["last_log_index"]
                ),
                None => format!("node {}: no answer", n.id),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let all: Vec<&Value> = st.iter().flatten().collect();
        let primaries: Vec<&&Value> = all.iter().filter(|s| s["role"] == "primary" && s["quorum"] == true).collect();
        if all.len() == c.nodes.len() && primaries.len() == 1 {
            let target = &primaries[0]["last_log_index"];
            if all.iter().all(|s| &s["applied_index"] == target) {
                hist.event(&format!("settled: {last}"));
                return Ok(());
            }
        }
        if t.elapsed() > SETTLE_WITHIN {
            return Err(NotSettled { within: SETTLE_WITHIN, nodes: last });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every row of the table as this node itself has it.
pub fn read_table(api: &Api, addr: SocketAddr) -> Result<Vec<Row>, TableError> {
    let sql = format!("SELECT id, writer, seq, request_id FROM {TABLE} ORDER BY id");
    let v = match api.query(addr, &sql, json!([]), "none") {
        Reply::Ok(v) => v,
        reply => return Err(TableError::Reply { addr, reply }),
    };
    let rows = v["rows"].as_array().ok_or_else(|| TableError::NoRows { addr, body: v.clone() })?;
    rows.iter()
        .map(|r| {
            let row = || {
                Some(Row {
                    id: r[0].as_i64()?,
                    writer: u32::try_from(r[1].as_u64()?).ok()?,
                    seq: r[2].as_u64()?,
                    request_id: r[3].as_str()?.to_string(),
                })
            };
            row().ok_or_else(|| TableError::BadRow { addr, row: r.clone() })
        })
        .collect()
}
