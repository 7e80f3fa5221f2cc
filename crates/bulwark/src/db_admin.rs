//! `bulwark db dump | load | backup | restore`: moving a cluster's data in
//! and out through its API, and bootstrapping a new cluster from a backup.
//! The work is in `bulwark_db_backup::{backup_tool, dump, load}`; this is the
//! command line around it.
use crate::roles::db::{cluster_access, ClusterArgs};
use anyhow::{bail, Context, Result};
use bulwark_db_backup::backup_tool::{self, BackupOptions, BackupTool};
use bulwark_db_backup::replay::Target;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Write the application tables as SQL text (CREATE TABLE + INSERTs;
    /// Bulwark's own `_bulwark*` tables left out), from a consistent copy
    /// taken from a replica.
    Dump {
        /// Output file (default: standard output).
        #[arg(long)]
        to: Option<PathBuf>,
        /// Copy from the primary instead of a replica.
        #[arg(long)]
        from_primary: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Run an SQL script through the primary in batches: a `bulwark db
    /// dump`, a `sqlite3 .dump` or a `mysqldump --compatible=ansi
    /// --skip-extended-insert` file. Resumable: run it again after an
    /// interruption (progress in FILE.progress).
    Load {
        file: PathBuf,
        /// Most statements per batch (one transaction each).
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Stop after this many batches (run again to continue).
        #[arg(long)]
        max_batches: Option<u64>,
        /// Progress file (default: FILE.progress).
        #[arg(long)]
        progress: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Take a consistent online backup (from a replica unless
    /// --from-primary) into FILE, with FILE.sha256 beside it.
    Backup {
        #[arg(long)]
        to: PathBuf,
        /// Compress with zstd.
        #[arg(long)]
        compress: bool,
        #[arg(long)]
        from_primary: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Make a new node's data dir from a backup: started, it is the primary
    /// of a one-node cluster holding the backup; add the others with
    /// `add-node`. The node's id, addresses and data dir come from -c
    /// unless given.
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        node_id: Option<u64>,
        /// host:port clients will use for the node's API.
        #[arg(long)]
        address: Option<String>,
        /// host:port the other nodes will dial for Raft.
        #[arg(long)]
        raft_address: Option<String>,
        /// Remove what a node keeps in the data dir first.
        #[arg(long)]
        force: bool,
        /// Point-in-time recovery: replay the log archive after the backup
        /// up to this moment (RFC 3339, e.g. 2025-01-31T06:00:00Z), the
        /// primary's clock the writes carry.
        #[arg(long, conflicts_with = "to_index")]
        to_time: Option<String>,
        /// Point-in-time recovery: replay the log archive up to this log
        /// index, included.
        #[arg(long)]
        to_index: Option<u64>,
        /// The log archive (default: `archive` beside the backup file).
        #[arg(long)]
        archive: Option<PathBuf>,
    },
}

/// The replay target of `restore`, if any.
fn replay_target(to_time: Option<&str>, to_index: Option<u64>) -> Result<Option<Target>> {
    if let Some(t) = to_time {
        let at = humantime::parse_rfc3339_weak(t)
            .with_context(|| format!("--to-time {t}: not an RFC 3339 time such as 2025-01-31T06:00:00Z"))?;
        let ms = at.duration_since(std::time::UNIX_EPOCH).context("--to-time: before 1970")?.as_millis();
        return Ok(Some(Target::Time(u64::try_from(ms).context("--to-time: too far ahead")?)));
    }
    Ok(to_index.map(Target::Index))
}

fn tool(config: Option<&Path>, cluster: &ClusterArgs) -> Result<BackupTool> {
    let (nodes, secret, tls) = cluster_access(config, cluster)?;
    Ok(BackupTool::new(nodes, &secret, tls))
}

/// A path beside `near` (or in the temp dir) for a temporary copy.
fn temp_beside(near: Option<&Path>) -> PathBuf {
    let dir = near.and_then(Path::parent).filter(|d| !d.as_os_str().is_empty()).map(PathBuf::from);
    let dir = dir.unwrap_or_else(std::env::temp_dir);
    dir.join(format!(".bulwark-dump-{}.db", std::process::id()))
}

pub async fn run(config: Option<PathBuf>, cmd: DataCommand) -> Result<i32> {
    match cmd {
        DataCommand::Dump { to, from_primary, cluster } => {
            let tool = tool(config.as_deref(), &cluster)?;
            let tmp = temp_beside(to.as_deref());
            let done = tool.backup_to(&tmp, BackupOptions { from_primary, compress: false }).await;
            let _ = std::fs::remove_file(backup_tool::checksum_path(&tmp));
            let done = done?;
            let header = format!(
                "bulwark db dump: log index {} (term {}), from {}",
                done.info.log_index, done.info.log_term, done.from
            );
            let dumped = tokio::task::spawn_blocking(move || -> Result<u64> {
                let c = rusqlite_open(&tmp);
                let r = (|| {
                    let c = c?;
                    let rows = match &to {
                        Some(p) => {
                            let f = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
                            let mut w = std::io::BufWriter::new(f);
                            let n = bulwark_db_backup::dump::write_dump(&c, &header, &mut w)?;
                            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                            n
                        }
                        None => {
                            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                            bulwark_db_backup::dump::write_dump(&c, &header, &mut w)?
                        }
                    };
                    Ok(rows)
                })();
                let _ = std::fs::remove_file(&tmp);
                r
            })
            .await??;
            eprintln!("dumped {dumped} rows");
            Ok(0)
        }
        DataCommand::Load { file, batch, max_batches, progress, cluster } => {
            let (nodes, secret, tls) = cluster_access(config.as_deref(), &cluster)?;
            let client = bulwark_db_api::Client::with_tls(nodes, &secret, tls);
            let opts = bulwark_db_backup::load::LoadOptions {
                batch_statements: batch,
                max_batches,
                progress,
                ..Default::default()
            };
            let report = bulwark_db_backup::load::load(&client, &file, &opts).await?;
            println!("{}", serde_json::to_string(&report)?);
            if !report.done {
                eprintln!("stopped after {} batches; run the same command again to continue", report.batches);
            }
            Ok(0)
        }
        DataCommand::Backup { to, compress, from_primary, cluster } => {
            let tool = tool(config.as_deref(), &cluster)?;
            let done = tool.backup_to(&to, BackupOptions { from_primary, compress }).await?;
            let line = serde_json::json!({
                "file": done.file, "checksum_file": done.checksum_file, "bytes": done.file_bytes,
                "database_bytes": done.info.bytes, "log_term": done.info.log_term,
                "log_index": done.info.log_index, "time_ms": done.info.time_ms, "from": done.from,
            });
            println!("{line}");
            let _ = std::io::stdout().flush();
            Ok(0)
        }
        DataCommand::Restore { from, data_dir, node_id, address, raft_address, force, to_time, to_index, archive } => {
            let file = config
                .as_deref()
                .map(|p| bulwark_config::load::<bulwark_config::db::DbConfig>(p).map_err(|e| anyhow::anyhow!("{e}")))
                .transpose()?;
            let data_dir = data_dir
                .or_else(|| file.as_ref().map(|c| c.data_dir.clone()))
                .context("pass --data-dir or -c <db.toml>")?;
            let node_id =
                node_id.or_else(|| file.as_ref().map(|c| c.node_id)).context("pass --node-id or -c <db.toml>")?;
            let address = address
                .or_else(|| file.as_ref().map(|c| c.api_address().to_string()))
                .context("pass --address or -c <db.toml>")?;
            if address.ends_with(":0") {
                bail!("the node's address {address} has port 0: give the node a fixed `listen` port or `advertise`, or pass --address");
            }
            let raft_address = raft_address
                .or_else(|| file.as_ref().map(|c| c.raft_address().to_string()))
                .context("pass --raft-address or -c <db.toml>")?;
            if raft_address.ends_with(":0") {
                bail!("the node's Raft address {raft_address} has port 0: give the node a fixed `raft_listen` port or `raft_advertise`, or pass --raft-address");
            }
            if archive.is_some() && to_time.is_none() && to_index.is_none() {
                bail!("--archive is for a point-in-time restore: pass --to-time or --to-index too");
            }
            if let Some(target) = replay_target(to_time.as_deref(), to_index)? {
                let archive = archive.unwrap_or_else(|| from.with_file_name("archive"));
                let limits = bulwark_db_sm::sql::WriteLimits {
                    max_steps: file.as_ref().map_or(bulwark_config::db::DEFAULT_MAX_WRITE_STEPS, |c| c.max_write_steps),
                };
                let done = bulwark_db_backup::replay::restore_to(
                    &from,
                    &archive,
                    target,
                    &data_dir,
                    node_id,
                    &address,
                    &raft_address,
                    limits,
                    force,
                )
                .await?;
                let line = serde_json::json!({
                    "data_dir": data_dir, "node_id": node_id, "address": address, "raft_address": raft_address,
                    "log_term": done.restored.log_term, "log_index": done.restored.log_index,
                    "time_ms": done.restored.time_ms, "backup_log_index": done.backup.log_index,
                    "entries_replayed": done.entries_replayed, "stopped": done.stopped,
                });
                println!("{line}");
                return Ok(0);
            }
            let rec = backup_tool::restore(&from, &data_dir, node_id, &address, &raft_address, force).await?;
            let line = serde_json::json!({
                "data_dir": data_dir, "node_id": node_id, "address": address, "raft_address": raft_address,
                "log_term": rec.log_term, "log_index": rec.log_index, "time_ms": rec.time_ms,
            });
            println!("{line}");
            Ok(0)
        }
    }
}

fn rusqlite_open(path: &Path) -> Result<bulwark_db_backup::dump::Database> {
    bulwark_db_backup::dump::open_copy(path).with_context(|| format!("opening {}", path.display()))
}
