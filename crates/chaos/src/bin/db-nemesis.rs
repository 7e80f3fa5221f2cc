//! `db-nemesis`: the database's black-box safety check (see
//! `bulwark_chaos::blackbox` and docs/testing.md). Exit status: 0 when
//! every check passed, 1 on any violation or problem, 2 when the run could
//! not start.
use anyhow::Context;
use bulwark_chaos::blackbox::faults::Fault;
use bulwark_chaos::blackbox::{self, Options};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Run 3 database nodes under writers and a nemesis, then check nothing acknowledged was lost")]
struct Args {
    /// How long the nemesis faults the cluster (e.g. 90s, 10m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    writers: u32,
    /// Faults to cycle through, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = blackbox::faults::ALL)]
    faults: Vec<Fault>,
    /// Seed of the fault schedule (order and durations); random by default.
    #[arg(long)]
    seed: Option<u64>,
    /// Load after healing, before the writers stop.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    cooldown: Duration,
    /// Work dir (kept); by default a fresh temporary dir, removed when
    /// the run passes unless --keep.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temporary work dir even when the run passes.
    #[arg(long)]
    keep: bool,
    /// The `bulwark` binary (default: $BULWARK_BIN, else next to this one).
    #[arg(long, env = "BULWARK_BIN")]
    bulwark: Option<PathBuf>,
    /// First of three consecutive loopback ports to try (below the usual
    /// ephemeral range, so no outgoing connection takes a port whose node
    /// is down).
    #[arg(long, default_value_t = 23100)]
    base_port: u16,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("db-nemesis: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let a = Args::parse();
    let bin = match a.bulwark {
        Some(b) => b,
        None => std::env::current_exe().context("locating this program")?.with_file_name("bulwark"),
    };
    anyhow::ensure!(bin.exists(), "{} not found: `cargo build -p bulwark` first, or --bulwark PATH", bin.display());
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    let (dir, temp) = match a.dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new().prefix("db-nemesis-").tempdir().context("creating a work dir")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let o = Options {
        bin,
        dir: dir.clone(),
        duration: a.duration,
        cooldown: a.cooldown,
        writers: a.writers,
        faults: a.faults,
        seed,
        base_port: a.base_port,
    };
    let result = blackbox::run(&o);
    let passed = matches!(&result, Ok(v) if v.passed());
    match (temp, passed && !a.keep) {
        (Some(t), true) => drop(t),
        (Some(t), false) => {
            let kept = t.keep();
            eprintln!("db-nemesis: work dir kept: {}", kept.display());
        }
        (None, _) => eprintln!("db-nemesis: work dir: {}", dir.display()),
    }
    let v = result?;
    println!("{}", v.render());
    if !passed {
        println!(
            "history: {}, node logs: {}/node*/node.log, seed {seed}",
            dir.join("history.jsonl").display(),
            dir.display()
        );
    }
    Ok(passed)
}
