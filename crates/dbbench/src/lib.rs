//! Single-row INSERT load generator behind `bench/db.sh`: commit latency
//! percentiles and throughput for a plain SQLite file (`synchronous =
//! FULL`), for a Bulwark cluster through [`bulwark_db_api::Client`] and for a
//! MySQL/MariaDB server (the semi-sync comparison) through `mysql_async`;
//! all three run the same loop.
//!
//! Owns: the three load loops and their report. Must not be a dependency of
//! the `bulwark` binary: the MySQL client library it needs is for the
//! comparison only, and stays out of the production build (a test of this
//! crate checks the lock file for that).
use bulwark_db_api::{Client, ClientError, Statement};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] ClientError),
    #[error("mariadb: {0}")]
    Mariadb(#[from] mysql_async::Error),
    #[error("mariadb url: {0}")]
    MariadbUrl(#[from] mysql_async::UrlError),
    #[error("a load worker stopped: {0}")]
    Worker(String),
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub target: String,
    pub clients: usize,
    pub writes: u64,
    pub writes_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

fn report(target: &str, clients: usize, mut lat: Vec<Duration>, elapsed: Duration) -> BenchReport {
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    };
    BenchReport {
        target: target.to_string(),
        clients,
        writes: lat.len() as u64,
        writes_per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// `clients` threads, each with its own connection to one SQLite file in
/// WAL mode with `synchronous = FULL`, inserting one row per transaction.
pub fn sqlite(path: &Path, clients: usize, duration: Duration) -> Result<BenchReport, BenchError> {
    let setup = rusqlite::Connection::open(path)?;
    setup.pragma_update(None, "journal_mode", "WAL")?;
    setup.execute_batch("CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, v TEXT)")?;
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_path_buf();
            std::thread::spawn(move || -> Result<Vec<Duration>, BenchError> {
                let c = rusqlite::Connection::open(&path)?;
                c.busy_timeout(Duration::from_secs(30))?;
                c.pragma_update(None, "synchronous", "FULL")?;
                let mut lat = Vec::new();
                while start.elapsed() < duration {
                    let t = Instant::now();
                    c.execute("INSERT INTO bench (v) VALUES ('row')", [])?;
                    lat.push(t.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| BenchError::Worker("a sqlite thread panicked".into()))??);
    }
    Ok(report("sqlite", clients, all, start.elapsed()))
}

/// `clients` concurrent writers through [`Client::execute`].
pub async fn cluster(client: &Client, clients: usize, duration: Duration) -> Result<BenchReport, BenchError> {
    client.execute(&[Statement::new("CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, v TEXT)")]).await?;
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let st = [Statement::new("INSERT INTO bench (v) VALUES ('row')")];
                while start.elapsed() < duration {
                    let t = Instant::now();
                    c.execute(&st).await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, BenchError>(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| BenchError::Worker(e.to_string()))??);
    }
    Ok(report("bulwark", clients, all, start.elapsed()))
}

/// `clients` concurrent connections to a MySQL/MariaDB server (`url` like
/// `mysql://user:pass@127.0.0.1:3306/db`), each inserting one row per
/// autocommit transaction into an InnoDB table.
pub async fn mariadb(url: &str, clients: usize, duration: Duration) -> Result<BenchReport, BenchError> {
    use mysql_async::prelude::Queryable;
    let opts = mysql_async::Opts::from_url(url)?;
    let mut setup = mysql_async::Conn::new(opts.clone()).await?;
    setup
        .query_drop("CREATE TABLE IF NOT EXISTS bench (id BIGINT AUTO_INCREMENT PRIMARY KEY, v TEXT) ENGINE=InnoDB")
        .await?;
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(mysql_async::Conn::new(opts.clone()).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while start.elapsed() < duration {
                    let t = Instant::now();
                    c.query_drop("INSERT INTO bench (v) VALUES ('row')").await?;
                    lat.push(t.elapsed());
                }
                let _ = c.disconnect().await;
                Ok::<_, BenchError>(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| BenchError::Worker(e.to_string()))??);
    }
    let elapsed = start.elapsed();
    let _ = setup.disconnect().await;
    Ok(report("mariadb", clients, all, elapsed))
}
