//! `bulwark db`: run a replicated database node, or administer a cluster
//! (status, promote, add-node, remove-node, the failover probe load
//! generator) through its HTTP API. The INSERT benchmark is a tool of its
//! own, `bulwark-dbbench` (crates/dbbench), outside this binary.
use anyhow::{bail, Context, Result};
use bulwark_config::db::DbConfig;
use bulwark_db_api::DbRole;
use bulwark_db_api::{Client, Statement};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = false)]
pub struct Args {
    /// Path of the db config file (TOML). Without a subcommand: run this node.
    #[arg(short, long, global = true)]
    pub config: Option<PathBuf>,
    /// Running a node: copy every committed log entry into this directory
    /// before the log may purge it (for `restore --to-time`).
    #[arg(long)]
    pub archive_log: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<DbCommand>,
}

#[derive(clap::Subcommand, Debug)]
pub enum DbCommand {
    /// Show every node's role, term, applied index and lag.
    Status(ClusterArgs),
    /// Make NODE the primary (planned leadership transfer).
    Promote {
        /// Node id of the new primary (must be a voter).
        node: u64,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Add a node to the running cluster (it catches up, then joins).
    AddNode {
        node: u64,
        /// host:port of the new node's API (its `advertise`).
        address: String,
        /// host:port of the new node's Raft listener (its `raft_advertise`).
        raft_address: String,
        /// Add as a non-voting async read replica.
        #[arg(long)]
        learner: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Failover probe (see `bench/failover.sh`): steady writers and a status
    /// poller; prints one JSON line per write and per change of the cluster's
    /// roles, with unix timestamps in seconds, until SIGTERM/SIGINT.
    Probe {
        /// Concurrent writers (one autocommit INSERT at a time each).
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// Pause of a writer between two writes, milliseconds.
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        /// Period of the `/v1/status` poll of every node, milliseconds.
        #[arg(long, default_value_t = 20)]
        poll_ms: u64,
        /// How long one write may keep retrying (failover) before it counts
        /// as failed, milliseconds.
        #[arg(long, default_value_t = 10_000)]
        deadline_ms: u64,
        /// Stop after this many seconds (0: run until SIGTERM/SIGINT).
        #[arg(long, default_value_t = 0)]
        seconds: u64,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove a node (voter or learner) from the running cluster.
    RemoveNode {
        node: u64,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    #[command(flatten)]
    Data(crate::db_admin::DataCommand),
}

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Node API addresses, comma-separated (default: the -c file's node and peers).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// File holding the secret to send (default: the -c file's peer secret,
    /// which opens every endpoint; promote and membership need it).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
}

pub fn main(args: Args) -> Result<i32> {
    match args.command {
        None => {
            let Some(path) = args.config else { bail!("bulwark db: -c <config> is required to run a node") };
            run_node(path, args.archive_log)
        }
        Some(cmd) => {
            super::stop_quietly_on_closed_stdout();
            admin(args.config, cmd)
        }
    }
}

fn load(path: &std::path::Path) -> Result<DbConfig> {
    bulwark_config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn run_node(path: PathBuf, archive_log: Option<PathBuf>) -> Result<i32> {
    let config = load(&path)?;
    // The database, its log and snapshots are for this user only.
    bulwark_cluster::private::dir(&config.data_dir)
        .with_context(|| format!("data_dir {}", config.data_dir.display()))?;
    let rt = match config.threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        n => super::runtime(n)?,
    };
    rt.block_on(async move {
        let node = bulwark_db::DbNode::bind_archiving(config, archive_log).await.context("starting the db node")?;
        let shutdown = CancellationToken::new();
        tokio::spawn(super::shutdown_on_signal(shutdown.clone()));
        super::announce("db", &node.listeners());
        node.run(shutdown).await?;
        Ok(0)
    })
}

fn client(config: Option<PathBuf>, cluster: &ClusterArgs) -> Result<Client> {
    let (nodes, secret, tls) = cluster_access(config.as_deref(), cluster)?;
    Ok(Client::with_tls(nodes, &secret, tls))
}

/// The nodes, the secret and the TLS files to reach the cluster with.
pub(crate) fn cluster_access(
    config: Option<&std::path::Path>,
    cluster: &ClusterArgs,
) -> Result<(Vec<String>, String, Option<bulwark_mtls::MutualTls>)> {
    let file = config.map(load).transpose()?;
    let secret = if let Ok(s) = std::env::var("BULWARK_DB_SECRET") {
        s
    } else if let Some(p) = &cluster.secret_file {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?.trim().to_string()
    } else if let Some(c) = &file {
        c.load_peer_secret().context("reading the peer secret")?.expose().to_string()
    } else {
        bail!("no cluster secret: pass -c <db.toml>, --secret-file, or set BULWARK_DB_SECRET");
    };
    let mut nodes = cluster.nodes.clone();
    if nodes.is_empty() {
        if let Some(c) = &file {
            nodes.push(c.api_address().to_string());
            nodes.extend(c.peers.iter().map(|p| p.address.to_string()));
        }
    }
    if nodes.is_empty() {
        bail!("no nodes: pass --nodes host:port,... or -c <db.toml>");
    }
    // With the node's config, its certificate too: a node that requires
    // mutual TLS answers nothing else.
    let tls = file.as_ref().and_then(|c| c.mutual_tls.clone());
    let tls = bulwark_mtls::MutualTls::load_optional(tls.as_ref()).context("loading the node's TLS files")?;
    Ok((nodes, secret, tls))
}

fn admin(config: Option<PathBuf>, cmd: DbCommand) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        match cmd {
            DbCommand::Status(cluster) => {
                let statuses = client(config, &cluster)?.statuses().await;
                if statuses.is_empty() {
                    bail!("no node answered");
                }
                println!(
                    "{:>4}  {:<22} {:<9} {:>5} {:>9} {:>10} {:>9}",
                    "id", "address", "role", "term", "applied", "lag", "lag_s"
                );
                for s in statuses {
                    let lag = if s.lag.known { s.lag.entries.to_string() } else { "?".into() };
                    println!(
                        "{:>4}  {:<22} {:<9} {:>5} {:>9} {:>10} {:>9.3}",
                        s.node_id, s.address, s.role, s.term, s.applied_index, lag, s.lag.seconds
                    );
                }
                Ok(0)
            }
            DbCommand::Promote { node, cluster } => {
                let c = client(config, &cluster)?;
                // Another voter can win the election instead; try again.
                let mut last = None;
                for _ in 0..3 {
                    match c.promote(node).await {
                        Ok(v) => {
                            println!("{v}");
                            return Ok(0);
                        }
                        Err(e) => {
                            eprintln!("promote: {e}");
                            last = Some(e);
                        }
                    }
                }
                Err(anyhow::anyhow!("promote failed: {}", last.map(|e| e.to_string()).unwrap_or_default()))
            }
            DbCommand::AddNode { node, address, raft_address, learner, cluster } => {
                let s = client(config, &cluster)?.add_node(node, &address, &raft_address, !learner).await?;
                println!("{}", serde_json::to_string_pretty(&s.members)?);
                Ok(0)
            }
            DbCommand::Probe { writers, interval_ms, poll_ms, deadline_ms, seconds, cluster } => {
                let opts = ProbeOptions {
                    writers,
                    interval: Duration::from_millis(interval_ms),
                    poll: Duration::from_millis(poll_ms),
                    deadline: Duration::from_millis(deadline_ms),
                    seconds,
                };
                probe(client(config, &cluster)?, opts).await
            }
            DbCommand::RemoveNode { node, cluster } => {
                let s = client(config, &cluster)?.remove_node(node).await?;
                println!("{}", serde_json::to_string_pretty(&s.members)?);
                Ok(0)
            }
            DbCommand::Data(cmd) => crate::db_admin::run(config, cmd).await,
        }
    })
}

/// (node id, role, term): what a status line reports a change of.
type RoleKey = (u64, DbRole, u64);

struct ProbeOptions {
    writers: usize,
    interval: Duration,
    poll: Duration,
    deadline: Duration,
    seconds: u64,
}

/// Wall-clock time, unix seconds: comparable with the `kill` time a script
/// takes with `$EPOCHREALTIME`.
fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn emit(v: serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// `bulwark db probe`: `writers` loops each inserting one row per write
/// through their own [`Client`] (so each rediscovers the primary on its
/// own, like an app server), and one loop polling every node's status as
/// `bulwark db status` does. Lines on stdout:
/// `{"ev":"write","w":0,"start":..,"end":..,"ok":true,"term":3,"index":120}`,
/// `{"ev":"write",..,"ok":false,"err":"..."}` and, whenever the (id, role,
/// term) of the answering nodes changes,
/// `{"ev":"status","t":..,"nodes":[{"id":1,"role":"primary","term":3,"quorum":true},..],"down":["127.0.0.1:7002"]}`.
async fn probe(base: Client, o: ProbeOptions) -> Result<i32> {
    let stop = CancellationToken::new();
    tokio::spawn(super::shutdown_on_signal(stop.clone()));
    if o.seconds > 0 {
        let s = stop.clone();
        let secs = o.seconds;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            s.cancel();
        });
    }
    base.clone()
        .with_deadline(o.deadline)
        .execute(&[Statement::new(
            "CREATE TABLE IF NOT EXISTS failover_probe (id INTEGER PRIMARY KEY, writer INTEGER, seq INTEGER, t REAL)",
        )])
        .await
        .context("creating the probe table")?;
    let mut tasks = Vec::new();
    for w in 0..o.writers {
        let c = base.clone().with_deadline(o.deadline);
        let stop = stop.clone();
        let pause = o.interval;
        tasks.push(tokio::spawn(async move {
            let mut seq: i64 = 0;
            while !stop.is_cancelled() {
                seq += 1;
                let start = unix_now();
                let st = [Statement::with_params(
                    "INSERT INTO failover_probe (writer, seq, t) VALUES (?, ?, ?)",
                    vec![(w as i64).into(), seq.into(), start.into()],
                )];
                let r = tokio::select! {
                    r = c.execute(&st) => r,
                    _ = stop.cancelled() => break,
                };
                let end = unix_now();
                match r {
                    Ok(r) => emit(serde_json::json!({
                        "ev": "write", "w": w, "start": start, "end": end, "ok": true,
                        "term": r.token.term, "index": r.token.index,
                    })),
                    Err(e) => emit(serde_json::json!({
                        "ev": "write", "w": w, "start": start, "end": end, "ok": false, "err": e.to_string(),
                    })),
                }
                if !pause.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            }
        }));
    }
    {
        let c = base.clone();
        let stop = stop.clone();
        let period = o.poll;
        tasks.push(tokio::spawn(async move {
            let mut last: Option<(Vec<RoleKey>, Vec<String>)> = None;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let all: Vec<String> = c.statuses().await.iter().flat_map(|s| s.members.iter().map(|m| m.address.clone())).collect();
            while !stop.is_cancelled() {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => break,
                }
                let t = unix_now();
                let mut st = c.statuses().await;
                st.sort_by_key(|s| s.node_id);
                let key: Vec<RoleKey> = st.iter().map(|s| (s.node_id, s.role, s.term)).collect();
                let mut down: Vec<String> =
                    all.iter().filter(|a| !st.iter().any(|s| &s.address == *a)).cloned().collect();
                down.sort();
                down.dedup();
                if last.as_ref() != Some(&(key.clone(), down.clone())) {
                    let nodes: Vec<_> = st
                        .iter()
                        .map(|s| serde_json::json!({"id": s.node_id, "role": s.role, "term": s.term, "quorum": s.quorum}))
                        .collect();
                    emit(serde_json::json!({"ev": "status", "t": t, "nodes": nodes, "down": down}));
                    last = Some((key, down));
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(0)
}
