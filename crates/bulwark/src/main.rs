//! The `bulwark` binary: command line, config loading and starting roles.
//!
//! Owns: argument parsing, signal handling (SIGTERM/SIGINT → graceful
//! shutdown, SIGHUP → reload), printing the ready line, exit codes.
//!
//! Must not touch: role internals; each role is a library crate with a
//! `bind` → `listeners` → `run(shutdown)` lifecycle.

use anyhow::{Context, Result};

/// mimalloc: measurably cheaper than glibc malloc for the many small,
/// short-lived allocations of request handling (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "bulwark", version, about = "Highly available web infrastructure in one binary")]
struct Cli {
    /// Log filter when RUST_LOG is unset (e.g. info, debug, bulwark_lb=debug).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Log as JSON objects instead of text lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the load balancer (HAProxy role).
    Lb(roles::lb::Args),
    /// Run a web server (nginx role): static files and reverse proxy to apps.
    Web(roles::web::Args),
    /// Run the application server: the guestbook, or your program behind it.
    App(roles::app::Args),
    /// Run a replicated database node, or administer the cluster.
    Db(roles::db::Args),
    /// Bring up a whole topology (default: the classic two-server site on localhost).
    Up(roles::up::UpArgs),
    /// Show every role of a running topology: state, health, db role and lag, req/s.
    Status(roles::up::ControlArgs),
    /// Stop one role of a running topology (it stays down until `start`).
    Stop {
        /// Role instance name, e.g. app1 or db2.
        node: String,
        #[command(flatten)]
        control: roles::up::ControlArgs,
    },
    /// Roll a new release of your program through the app servers, one at a time.
    Deploy(deploy::DeployArgs),
    /// Start a role stopped with `bulwark stop`.
    Start {
        node: String,
        #[command(flatten)]
        control: roles::up::ControlArgs,
    },
    /// The host firewall (nftables) of one host of a topology: plan, apply, check, remove.
    Firewall(firewall::Args),
    /// Validate a config file; prints every problem with file:line: key and exits 1.
    Check {
        #[arg(short, long)]
        config: PathBuf,
        /// lb, web, app, db or topology; detected from the file when omitted.
        #[arg(long)]
        role: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bulwark: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Check { config, role } => {
            roles::stop_quietly_on_closed_stdout();
            let role = match role {
                Some(r) => Some(
                    bulwark_config::Role::parse(&r)
                        .with_context(|| format!("unknown role `{r}` (lb, web, app, db, topology)"))?,
                ),
                None => None,
            };
            match bulwark_config::check_file(&config, role) {
                Ok(role) => {
                    // The user's program: found, executable, its user and
                    // working directory exist.
                    let problems = roles::app::check_programs(&config, role);
                    if !problems.is_empty() {
                        for p in problems {
                            eprintln!("{p}");
                        }
                        return Ok(1);
                    }
                    println!("{}: ok ({} config)", config.display(), role.name());
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(1)
                }
            }
        }
        Command::Lb(args) => {
            bulwark_telemetry::init_logging(&cli.log_level, cli.log_json);
            roles::lb::main(args)
        }
        Command::Web(args) => {
            bulwark_telemetry::init_logging(&cli.log_level, cli.log_json);
            roles::web::main(args)
        }
        Command::App(args) => {
            bulwark_telemetry::init_logging(&cli.log_level, cli.log_json);
            roles::app::main(args)
        }
        Command::Up(args) => {
            bulwark_telemetry::init_logging(&format!("warn,bulwark_cluster={}", cli.log_level), cli.log_json);
            roles::up::up(args, &cli.log_level)
        }
        Command::Status(args) => {
            roles::stop_quietly_on_closed_stdout();
            roles::up::status(args)
        }
        Command::Stop { node, control } => {
            roles::stop_quietly_on_closed_stdout();
            roles::up::stop_or_start(control, node, false)
        }
        Command::Start { node, control } => {
            roles::stop_quietly_on_closed_stdout();
            roles::up::stop_or_start(control, node, true)
        }
        Command::Deploy(args) => {
            roles::stop_quietly_on_closed_stdout();
            deploy::main(args)
        }
        Command::Firewall(args) => {
            roles::stop_quietly_on_closed_stdout();
            firewall::main(args)
        }
        Command::Db(args) => {
            bulwark_telemetry::init_logging(&cli.log_level, cli.log_json);
            roles::db::main(args)
        }
    }
}

mod backup_schedule;
mod backup_status;
mod db_admin;
mod deploy;
mod firewall;
mod roles;
