//! `bulwark-dbbench`: the single-row INSERT benchmark of `bench/db.sh`, one
//! JSON report line on stdout per run. A tool of its own so that the MySQL
//! client it needs for the comparison stays out of the `bulwark` binary.
use anyhow::{bail, Context, Result};
use bulwark_db_api::Client;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Parser, Debug)]
#[command(version, about = "Single-row INSERT benchmark: SQLite, a Bulwark cluster or MySQL/MariaDB")]
struct Args {
    #[command(subcommand)]
    target: Target,
    /// Concurrent clients (connections, threads or tasks).
    #[arg(long, global = true, default_value_t = 16)]
    clients: usize,
    /// How long to run, seconds.
    #[arg(long, global = true, default_value_t = 10)]
    seconds: u64,
}

#[derive(clap::Subcommand, Debug)]
enum Target {
    /// One SQLite file, WAL, `synchronous = FULL`, one connection per client.
    Sqlite {
        /// The SQLite file (created if missing).
        #[arg(long, default_value = "bench.db")]
        path: PathBuf,
    },
    /// A Bulwark cluster through its client library. The secret comes from
    /// BULWARK_DB_SECRET or --secret-file.
    Cluster {
        /// Node API addresses, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// File holding the cluster secret.
        #[arg(long)]
        secret_file: Option<PathBuf>,
    },
    /// A MySQL/MariaDB server.
    Mariadb {
        /// `mysql://user:pass@127.0.0.1:port/db`.
        #[arg(long)]
        url: String,
    },
}

fn secret(file: Option<&PathBuf>) -> Result<String> {
    if let Ok(s) = std::env::var("BULWARK_DB_SECRET") {
        return Ok(s);
    }
    let Some(p) = file else { bail!("no cluster secret: pass --secret-file or set BULWARK_DB_SECRET") };
    Ok(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?.trim().to_string())
}

fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let (clients, duration) = (args.clients, Duration::from_secs(args.seconds));
    // One thread, as the other `bulwark db` admin commands run: the client
    // side of the cluster leg costs what an app server's would.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(async move {
        let report = match args.target {
            Target::Sqlite { path } => {
                tokio::task::spawn_blocking(move || bulwark_dbbench::sqlite(&path, clients, duration)).await??
            }
            Target::Cluster { nodes, secret_file } => {
                let client = Client::new(nodes, &secret(secret_file.as_ref())?);
                bulwark_dbbench::cluster(&client, clients, duration).await?
            }
            Target::Mariadb { url } => bulwark_dbbench::mariadb(&url, clients, duration).await?,
        };
        anyhow::Ok(report)
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
