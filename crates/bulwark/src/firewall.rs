//! `bulwark firewall plan|apply|check|remove`: the host firewall of one
//! host of a topology (see the `bulwark-hostfw` crate), and the two calls
//! `up --host` makes when the topology has `[firewall] manage = true`.
use anyhow::{bail, Context, Result};
use bulwark_config::host_firewall::HostFirewall;
use bulwark_config::topology::Topology;
use bulwark_hostfw::{nft, Check, HostPlan};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Print the host's nftables ruleset (and, as comments, every listener and who may reach it).
    Plan(Target),
    /// Install the host's ruleset in one transaction (table inet bulwark; root).
    Apply(ApplyArgs),
    /// Compare the installed table with the plan; exits 1 with a diff when they differ.
    Check(Target),
    /// Delete the table inet bulwark; every other table stays.
    Remove,
}

#[derive(clap::Args, Debug)]
pub struct Target {
    /// Topology file; without it, the built-in two-server site.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// The host (topology `[[host]] name`) whose firewall this is.
    #[arg(long)]
    pub host: String,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only when the topology says `[firewall] manage = true`; otherwise
    /// say so and change nothing (for a service manager's start step, as
    /// in deploy/bulwark-up@.service).
    #[arg(long)]
    pub if_managed: bool,
}

fn load(target: &Target) -> Result<(Topology, HostFirewall)> {
    let t = match &target.config {
        Some(p) => bulwark_config::load::<Topology>(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Topology::default_localhost(),
    };
    let fw = t.firewall.clone().unwrap_or_default();
    Ok((t, fw))
}

fn plan(target: &Target) -> Result<HostPlan> {
    let (t, fw) = load(target)?;
    Ok(bulwark_hostfw::host_plan(&t, &fw, &target.host)?)
}

pub fn main(args: Args) -> Result<i32> {
    match args.action {
        Action::Plan(target) => {
            let plan = plan(&target)?;
            for line in plan.describe().lines() {
                println!("# {line}");
            }
            print!("{}", bulwark_hostfw::ruleset::ruleset(&plan));
            Ok(0)
        }
        Action::Apply(ApplyArgs { target, if_managed }) => {
            if if_managed && !load(&target)?.1.manage {
                println!(
                    "bulwark firewall: the topology does not set [firewall] manage = true: nothing installed for host {}",
                    target.host
                );
                return Ok(0);
            }
            let plan = plan(&target)?;
            nft::apply(&plan)?;
            println!(
                "bulwark firewall: installed table inet bulwark on host {} ({} listeners)",
                plan.host,
                plan.inbound.len()
            );
            Ok(0)
        }
        Action::Check(target) => {
            let plan = plan(&target)?;
            match nft::check(&plan)? {
                Check::Matches => {
                    println!("bulwark firewall: the installed table inet bulwark is the plan of host {}", plan.host);
                    Ok(0)
                }
                Check::Missing => {
                    println!("bulwark firewall: no table inet bulwark is installed (run `bulwark firewall apply`)");
                    Ok(1)
                }
                Check::Differs(diff) => {
                    println!(
                        "bulwark firewall: the installed table inet bulwark differs from the plan of host {}:",
                        plan.host
                    );
                    print!("{diff}");
                    Ok(1)
                }
            }
        }
        Action::Remove => {
            if nft::remove()? {
                println!("bulwark firewall: removed table inet bulwark");
            } else {
                println!("bulwark firewall: no table inet bulwark was installed");
            }
            Ok(0)
        }
    }
}

/// `up --host NAME`: install the host's firewall when the topology says
/// `[firewall] manage = true` and `up` runs as root. Returns whether to
/// remove it again on a clean stop (`remove_on_stop`).
pub fn install_for_up(t: &Topology, host: Option<&str>) -> Result<bool> {
    let Some(fw) = t.firewall.as_ref().filter(|f| f.manage) else { return Ok(false) };
    let Some(host) = host else {
        eprintln!(
            "bulwark up: [firewall] manage = true applies to `up --host NAME`: the host firewall is not installed"
        );
        return Ok(false);
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "bulwark up: [firewall] manage = true, but not running as root: the host firewall is not installed \
             by up; install it as root first (`bulwark firewall apply --if-managed -c TOPOLOGY --host {host}`, \
             as the systemd unit's ExecStartPre=+ does)"
        );
        return Ok(false);
    }
    let plan = bulwark_hostfw::host_plan(t, fw, host)?;
    if let Err(e) = nft::apply(&plan) {
        bail!("installing the host firewall ([firewall] manage = true): {e}");
    }
    println!("  host firewall: table inet bulwark installed for host {host}");
    Ok(fw.remove_on_stop)
}

/// `up --host NAME` stopped cleanly with `remove_on_stop = true`.
pub fn remove_after_up() {
    match nft::remove().context("removing the host firewall") {
        Ok(_) => println!("bulwark up: host firewall removed (remove_on_stop)"),
        Err(e) => eprintln!("bulwark up: {e:#}"),
    }
}
