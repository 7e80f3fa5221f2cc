//! The private network: the test re-runs itself in new network and mount
//! namespaces, builds a bridge there (the "switch", with the observer
//! address the workload and the monitors use) and one network namespace per
//! topology host joined to it by a veth pair. Faults (iptables, tc) are
//! applied inside a host's namespace only. Nothing outlives the test: the
//! namespaces are bound under a tmpfs on `/run/netns` private to the test's
//! mount namespace, so they disappear with its last process.
//!
//! Delay and loss ([`degrade`]) use `tc netem` where the kernel has it.
//! Where it has not (`CONFIG_NET_SCH_NETEM` unset, as on this project's
//! machines) they come from the `chaos-netdelay` program
//! ([`crate::netdelay`]): one per degraded host, run in that host's
//! namespace with `ip netns exec`, fed by iptables rules
//! `-t mangle -A OUTPUT -d PEER -j NFQUEUE --queue-bypass`. It holds each
//! packet for delay ± jitter (per-flow order kept), drops the loss
//! fraction, and lets everything through when [`restore`] removes the
//! rules and sends it SIGTERM; a parent-death signal stops it should the
//! test die first. Only if neither works: random loss with iptables
//! `statistic`, no delay.
pub use crate::netdelay::Impairment;
use nix::sys::wait::WaitStatus;
use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Set in the re-executed test (inside the private namespaces).
pub const IN_NAMESPACE: &str = "BULWARK_CHAOS_IN_NETNS";
/// The observer's (workload client, monitors) address on the bridge.
pub const OBSERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The hosts' network (RFC 2544 benchmarking range).
pub const SUBNET: &str = "198.18.0.0/24";
pub const BRIDGE: &str = "chaosbr0";

/// Scenarios run one at a time: each measures failover times on a shared
/// 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Run `body` inside fresh network and mount namespaces: outside them,
/// re-execute this test binary (`--exact test_name`) under
/// `unshare --net --mount` and assert that it passed.
pub fn run_isolated(test_name: &str, body: impl FnOnce()) {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        return body();
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let probe = Command::new("unshare").args(["--net", "--mount", "--", "true"]).output();
    match probe {
        Err(e) => panic!("the chaos suite needs `unshare` (util-linux): {e}"),
        Ok(o) if !o.status.success() => panic!(
            "the chaos suite needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces; \
             `unshare --net --mount` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => {}
    }
    for tool in ["ip", "iptables", "tc"] {
        if Command::new(tool).arg("-V").output().is_err() && Command::new(tool).arg("-h").output().is_err() {
            panic!("the chaos suite needs `{tool}` (iproute2 / iptables) installed");
        }
    }
    let exe = std::env::current_exe().expect("current_exe");
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--"])
        .arg(exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(IN_NAMESPACE, "1")
        .status()
        .expect("running unshare");
    assert!(status.success(), "chaos scenario `{test_name}` failed inside its private namespace ({status}); see above");
}

/// Why a command, or a packet delayer, failed. Each message names the
/// command line (or the delayer's host) and says what happened.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The program could not be started at all (not installed, not
    /// executable).
    #[error("running `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// It ran and did not succeed; `stderr` is what it said (trimmed).
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command { cmd: String, status: ExitStatus, stderr: String },
    /// There is no `chaos-netdelay` program to start ([`delayer_bin`]).
    #[error("chaos-netdelay not found (built with `cargo test -p bulwark-chaos`; or set BULWARK_CHAOS_NETDELAY)")]
    DelayerMissing,
    /// The delayer ended (or said something else) before its `ready` line.
    #[error("chaos-netdelay in {host} did not start ({status})")]
    DelayerNotReady { host: String, status: String },
    /// SIGTERM could not be sent to the delayer.
    #[error("chaos-netdelay on {host}: kill {pid}: {source}")]
    DelayerSignal {
        host: String,
        pid: i32,
        #[source]
        source: nix::errno::Errno,
    },
    /// It did not exit after SIGTERM and was killed.
    #[error("chaos-netdelay on {host}: did not stop within {within:?}; killed")]
    DelayerHung { host: String, within: Duration },
    /// It exited unsuccessfully or was killed by a signal.
    #[error("chaos-netdelay on {host}: ended with {status:?}")]
    DelayerFailed { host: String, status: WaitStatus },
    /// Waiting for it failed.
    #[error("chaos-netdelay on {host}: waitpid: {source}")]
    DelayerWait {
        host: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// It exited cleanly without printing its counters.
    #[error("chaos-netdelay on {host}: no counters")]
    NoCounters { host: String },
    /// Its counters could not be read from its stdout.
    #[error("chaos-netdelay on {host}: no counters ({source})")]
    CountersUnreadable {
        host: String,
        #[source]
        source: std::io::Error,
    },
}

/// Run a command; its stdout, or [`NetError`] with its stderr when it
/// fails.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, NetError> {
    let mut command = Command::new(cmd);
    command.args(args);
    let out = command.output().map_err(|source| NetError::Spawn { cmd: command_line(&command), source })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Command {
            cmd: command_line(&command),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `program arg…`, space-separated, for error messages (no shell quoting).
fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}

/// Like [`run`], panicking with the command's error.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    run(cmd, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Run a command inside host `ns`'s network namespace.
pub fn in_ns(ns: &str, cmd: &str, args: &[&str]) -> Result<String, NetError> {
    let mut all = vec!["netns", "exec", ns, cmd];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Build the bridge and one namespace per host. Must run inside the
/// private namespaces ([`run_isolated`]).
pub fn setup(hosts: &[(String, Ipv4Addr)]) {
    assert!(
        std::env::var_os(IN_NAMESPACE).is_some(),
        "net::setup outside the private namespace would change the host's network"
    );
    // `ip netns add` bind-mounts under /run/netns: keep even the mount
    // points private to this test.
    std::fs::create_dir_all("/run/netns").expect("mkdir /run/netns");
    sh("mount", &["-t", "tmpfs", "chaos-netns", "/run/netns"]);
    sh("ip", &["link", "set", "lo", "up"]);
    sh("ip", &["link", "add", BRIDGE, "type", "bridge"]);
    sh("ip", &["addr", "add", &format!("{OBSERVER}/24"), "dev", BRIDGE]);
    sh("ip", &["link", "set", BRIDGE, "up"]);
    for (name, addr) in hosts {
        let veth = format!("v-{name}");
        assert!(veth.len() <= 15, "host name {name} too long for an interface name");
        sh("ip", &["netns", "add", name]);
        sh("ip", &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", name]);
        sh("ip", &["link", "set", &veth, "master", BRIDGE, "up"]);
        sh("ip", &["-n", name, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        sh("ip", &["-n", name, "link", "set", "eth0", "up"]);
        sh("ip", &["-n", name, "link", "set", "lo", "up"]);
    }
}

/// Cut `host` off from every other host (both directions); the observer
/// (workload client and monitors, on the bridge address) still reaches it,
/// as a monitoring network would.
pub fn partition(host: &str) {
    let obs = OBSERVER.to_string();
    for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
        in_ns(host, "iptables", &["-A", chain, dir, &obs, "-j", "ACCEPT"]).unwrap();
        in_ns(host, "iptables", &["-A", chain, dir, SUBNET, "-j", "DROP"]).unwrap();
    }
}

/// Remove every iptables rule of `host`.
pub fn heal(host: &str) {
    for chain in ["INPUT", "OUTPUT"] {
        in_ns(host, "iptables", &["-F", chain]).unwrap();
    }
}

/// How [`degrade`] made the network worse.
#[derive(Debug, Clone)]
pub enum Degraded {
    /// `tc netem` on the hosts' interfaces (every packet they send).
    Netem(String),
    /// The kernel has no netem: a [`chaos-netdelay`](crate::netdelay)
    /// process in each host's namespace holds (and drops) the packets that
    /// host sends to the other degraded hosts, queued to it by iptables.
    Nfqueue { imp: Impairment, delayers: Vec<Delayer> },
    /// Neither netem nor the delayer: random loss with iptables
    /// `statistic` between the given hosts only (no added delay).
    IptablesLoss(f64),
}

/// A running `chaos-netdelay` of [`Degraded::Nfqueue`].
#[derive(Debug, Clone)]
pub struct Delayer {
    pub host: String,
    /// Of the delayer itself: `ip netns exec` executes it in place.
    pub pid: i32,
    /// The destinations whose packets it is given.
    pub peers: Vec<Ipv4Addr>,
    /// Its stdout, past the `ready` line: its counters when it stops.
    out: Arc<Mutex<BufReader<ChildStdout>>>,
}

impl std::fmt::Display for Degraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Degraded::Netem(spec) => write!(f, "tc netem {spec}"),
            Degraded::Nfqueue { imp, .. } => {
                write!(f, "{imp} via NFQUEUE delayer chaos-netdelay (kernel has no sch_netem)")
            }
            Degraded::IptablesLoss(p) => {
                write!(
                    f,
                    "{:.0}% loss via iptables statistic (kernel has no sch_netem, NFQUEUE delayer unavailable: no delay)",
                    p * 100.0
                )
            }
        }
    }
}

/// [`degrade_with`] the default [`Impairment`]: 30 ms ± 10 ms, 2 % loss.
pub fn degrade(hosts: &[(String, Ipv4Addr)]) -> Degraded {
    degrade_with(hosts, &Impairment::default())
}

/// Delay and loss on `hosts` (the database hosts), by the first way that
/// works here:
/// 1. `tc qdisc add dev eth0 root netem delay … loss …` on each host
///    (every packet it sends);
/// 2. without `sch_netem` in the kernel, [`degrade_nfqueue`]: the same
///    delay, jitter and loss on the packets between those hosts, by a
///    userspace delayer on NFQUEUE;
/// 3. without that either, random loss between those hosts with iptables
///    `statistic` (8 %, no delay).
///
/// Says which on stderr. `BULWARK_CHAOS_REQUIRE_NETEM=1` makes anything
/// but 1 a failure, `BULWARK_CHAOS_REQUIRE_DELAY=1` anything but 1 or 2.
pub fn degrade_with(hosts: &[(String, Ipv4Addr)], imp: &Impairment) -> Degraded {
    let spec = imp.netem_args();
    let mut failed = None;
    for (h, _) in hosts {
        let mut args = vec!["qdisc", "add", "dev", "eth0", "root", "netem"];
        args.extend(spec.iter().map(String::as_str));
        if let Err(e) = in_ns(h, "tc", &args) {
            failed = Some(e);
            break;
        }
    }
    let Some(err) = failed else { return Degraded::Netem(spec.join(" ")) };
    for (h, _) in hosts {
        let _ = in_ns(h, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
    }
    if std::env::var_os("BULWARK_CHAOS_REQUIRE_NETEM").is_some() {
        panic!("tc netem is not available in this kernel (sch_netem): {err}");
    }
    let nfq_err = match degrade_nfqueue(hosts, imp) {
        Ok(how) => {
            eprintln!("chaos: tc netem unavailable ({err}); delaying packets between db hosts with chaos-netdelay");
            return how;
        }
        Err(e) => e,
    };
    if std::env::var_os("BULWARK_CHAOS_REQUIRE_DELAY").is_some() {
        panic!("neither tc netem ({err}) nor the NFQUEUE delayer ({nfq_err}) works here");
    }
    eprintln!(
        "chaos: WARNING: tc netem unavailable ({err}), NFQUEUE delayer too ({nfq_err}); \
         using iptables statistic loss between db hosts instead"
    );
    let p = 0.08;
    for (h, _) in hosts {
        for (_, peer) in hosts.iter().filter(|(o, _)| o != h) {
            in_ns(
                h,
                "iptables",
                &[
                    "-A",
                    "INPUT",
                    "-s",
                    &peer.to_string(),
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p.to_string(),
                    "-j",
                    "DROP",
                ],
            )
            .unwrap();
        }
    }
    Degraded::IptablesLoss(p)
}

/// The `chaos-netdelay` program: `BULWARK_CHAOS_NETDELAY`, or beside the
/// running test's directory (`target/<profile>/deps/<test>` →
/// `target/<profile>/chaos-netdelay`; cargo builds it with this crate's
/// tests).
pub fn delayer_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BULWARK_CHAOS_NETDELAY") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.parent().map(|d| d.join("chaos-netdelay")), Some(dir.join("chaos-netdelay"))]
        .into_iter()
        .flatten()
        .find(|p| p.exists())
}

/// The NFQUEUE queue number the delayer binds in each namespace.
const QUEUE_NUM: &str = "0";

/// The iptables arguments of the rule that queues `host`'s packets to
/// `peer` for its delayer (`op`: `-A` or `-D`). In the mangle table, which
/// the kernel traverses before the filter table, so that a packet the delayer
/// accepts still meets [`partition`]'s DROP rules; `--queue-bypass`: while
/// no delayer is bound the packets pass.
fn nfqueue_rule(op: &str, peer: Ipv4Addr) -> Vec<String> {
    let peer = peer.to_string();
    ["-t", "mangle", op, "OUTPUT", "-d", &peer, "-j", "NFQUEUE", "--queue-num", QUEUE_NUM, "--queue-bypass"]
        .map(String::from)
        .to_vec()
}

/// Delay `hosts`' packets to one another by `imp` without netem: start a
/// `chaos-netdelay` in each host's namespace, then queue to it, with
/// iptables, every packet that host sends to another of `hosts` (so a round
/// trip between two of them gains twice the delay, as with netem on both).
/// Undo with [`restore`]. On failure nothing is left behind.
pub fn degrade_nfqueue(hosts: &[(String, Ipv4Addr)], imp: &Impairment) -> Result<Degraded, NetError> {
    let bin = delayer_bin().ok_or(NetError::DelayerMissing)?;
    let mut delayers = Vec::new();
    let started = (|| {
        for (host, _) in hosts {
            let peers: Vec<Ipv4Addr> = hosts.iter().filter(|(o, _)| o != host).map(|(_, a)| *a).collect();
            delayers.push(start_delayer(&bin, host, imp, peers)?);
        }
        for d in &delayers {
            for peer in &d.peers {
                let rule = nfqueue_rule("-A", *peer);
                in_ns(&d.host, "iptables", &rule.iter().map(String::as_str).collect::<Vec<_>>())?;
            }
        }
        Ok(())
    })();
    match started {
        Ok(()) => Ok(Degraded::Nfqueue { imp: *imp, delayers }),
        Err(e) => {
            for d in &delayers {
                for peer in &d.peers {
                    let rule = nfqueue_rule("-D", *peer);
                    let _ = in_ns(&d.host, "iptables", &rule.iter().map(String::as_str).collect::<Vec<_>>());
                }
                let _ = stop_delayer(d);
            }
            Err(e)
        }
    }
}

fn start_delayer(bin: &Path, host: &str, imp: &Impairment, peers: Vec<Ipv4Addr>) -> Result<Delayer, NetError> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host]).arg(bin).args(imp.to_args()).args(["--queue", QUEUE_NUM]);
    let line = command_line(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| NetError::Spawn { cmd: line, source })?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut first = String::new();
    let _ = out.read_line(&mut first);
    if first.trim() != "ready" {
        let _ = child.kill();
        let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
        return Err(NetError::DelayerNotReady { host: host.to_string(), status });
    }
    // The child is reaped by stop_delayer (waitpid); dropping the handle
    // neither kills nor reaps it.
    Ok(Delayer { host: host.to_string(), pid: child.id() as i32, peers, out: Arc::new(Mutex::new(out)) })
}

/// How long a delayer may take to release what it holds and exit after
/// SIGTERM.
const DELAYER_STOP_WITHIN: Duration = Duration::from_secs(5);

/// SIGTERM a delayer (it releases what it holds and exits), wait for it
/// (SIGKILL after [`DELAYER_STOP_WITHIN`]); its counters, or why there are
/// none.
fn stop_delayer(d: &Delayer) -> Result<String, NetError> {
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag};
    use nix::unistd::Pid;
    let host = || d.host.clone();
    let pid = Pid::from_raw(d.pid);
    kill(pid, Signal::SIGTERM).map_err(|source| NetError::DelayerSignal { host: host(), pid: d.pid, source })?;
    let deadline = Instant::now() + DELAYER_STOP_WITHIN;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(WaitStatus::StillAlive) => {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return Err(NetError::DelayerHung { host: host(), within: DELAYER_STOP_WITHIN });
            }
            Ok(WaitStatus::Exited(_, 0)) => break,
            Ok(status) => return Err(NetError::DelayerFailed { host: host(), status }),
            Err(source) => return Err(NetError::DelayerWait { host: host(), source }),
        }
    }
    let mut stats = String::new();
    let mut out = d.out.lock().unwrap_or_else(|e| e.into_inner());
    match out.read_to_string(&mut stats) {
        Ok(_) if !stats.trim().is_empty() => Ok(stats.trim().to_string()),
        Ok(_) => Err(NetError::NoCounters { host: host() }),
        Err(source) => Err(NetError::CountersUnreadable { host: host(), source }),
    }
}

/// Undo [`degrade`]. For [`Degraded::Nfqueue`]: remove the NFQUEUE rules,
/// stop the delayers and return their counters, one line per host (and
/// panic if a rule or a delayer is left).
pub fn restore(hosts: &[(String, Ipv4Addr)], how: &Degraded) -> Vec<String> {
    match how {
        Degraded::Netem(_) => {
            for (h, _) in hosts {
                in_ns(h, "tc", &["qdisc", "del", "dev", "eth0", "root"]).unwrap();
            }
            Vec::new()
        }
        Degraded::IptablesLoss(_) => {
            for (h, _) in hosts {
                heal(h);
            }
            Vec::new()
        }
        Degraded::Nfqueue { delayers, .. } => {
            // Rules first: nothing new is queued while the delayers let
            // out what they hold.
            for d in delayers {
                for peer in &d.peers {
                    let rule = nfqueue_rule("-D", *peer);
                    in_ns(&d.host, "iptables", &rule.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
                }
                let left = nfqueue_rules(&d.host);
                assert!(left.is_empty(), "NFQUEUE rules left on {}: {left:?}", d.host);
            }
            delayers
                .iter()
                .map(|d| match stop_delayer(d) {
                    Ok(stats) => format!("{}: {stats}", d.host),
                    Err(e) => panic!("{e}"),
                })
                .collect()
        }
    }
}

/// The NFQUEUE rules in `host`'s namespace (`iptables -S` lines, every
/// table this module uses).
pub fn nfqueue_rules(host: &str) -> Vec<String> {
    ["mangle", "filter"]
        .iter()
        .flat_map(|t| {
            in_ns(host, "iptables", &["-t", t, "-S"]).unwrap_or_default().lines().map(String::from).collect::<Vec<_>>()
        })
        .filter(|l| l.contains("NFQUEUE"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_runs_gives_its_stdout() {
        assert_eq!(run("sh", &["-c", "echo out; echo err >&2"]).unwrap(), "out\n");
    }

    #[test]
    fn a_failing_command_names_its_line_its_status_and_what_it_said() {
        let e = run("sh", &["-c", "echo ' no such table ' >&2; exit 3"]).unwrap_err();
        let NetError::Command { cmd, status, stderr } = &e else { panic!("not a Command error: {e:?}") };
        assert_eq!(cmd, "sh -c echo ' no such table ' >&2; exit 3");
        assert_eq!(status.code(), Some(3));
        assert_eq!(stderr, "no such table");
        assert_eq!(e.to_string(), "`sh -c echo ' no such table ' >&2; exit 3` failed (exit status: 3): no such table");
    }

    #[test]
    fn a_program_that_cannot_run_keeps_the_cause() {
        let e = run("/nonexistent/chaos-no-such-program", &["-x"]).unwrap_err();
        let NetError::Spawn { cmd, source } = &e else { panic!("not a Spawn error: {e:?}") };
        assert_eq!(cmd, "/nonexistent/chaos-no-such-program -x");
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.to_string().starts_with("running `/nonexistent/chaos-no-such-program -x`: "), "{e}");
    }
}
