//! The private network: the test re-runs itself in new network and mount
//! namespaces, builds a bridge there (the "switch", with the observer
//! address the workload and the monitors use) and one network namespace per
//! topology host joined to it by a veth pair. Faults (iptables, tc) are
//! applied inside a host's namespace only. Nothing outlives the test: the
//! namespaces are bound under a tmpfs on `/run/netns` private to the test's
//! mount namespace, so they disappear with its last process.
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;

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

/// Run a command; `Err(stderr)` when it fails.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`{cmd} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Like [`run`], panicking with the command's error.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    run(cmd, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Run a command inside host `ns`'s network namespace.
pub fn in_ns(ns: &str, cmd: &str, args: &[&str]) -> Result<String, String> {
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
#[derive(Debug, Clone, PartialEq)]
pub enum Degraded {
    /// `tc netem` on the hosts' interfaces.
    Netem(String),
    /// The kernel has no netem: random loss with iptables `statistic`
    /// between the given hosts only (no added delay).
    IptablesLoss(f64),
}

impl std::fmt::Display for Degraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Degraded::Netem(spec) => write!(f, "tc netem {spec}"),
            Degraded::IptablesLoss(p) => {
                write!(f, "{:.0}% loss via iptables statistic (kernel has no sch_netem: no delay)", p * 100.0)
            }
        }
    }
}

/// Delay and loss on the interfaces of `hosts` (the database hosts):
/// `tc netem delay 40ms 20ms loss 3%`. Without netem in the kernel, fall
/// back to random loss between those hosts with iptables, and say so (set
/// `BULWARK_CHAOS_REQUIRE_NETEM=1` to make that a failure instead).
pub fn degrade(hosts: &[(String, Ipv4Addr)]) -> Degraded {
    let spec = ["delay", "40ms", "20ms", "loss", "3%"];
    let mut failed = None;
    for (h, _) in hosts {
        let mut args = vec!["qdisc", "add", "dev", "eth0", "root", "netem"];
        args.extend_from_slice(&spec);
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
    eprintln!("chaos: WARNING: tc netem unavailable ({err}); using iptables statistic loss between db hosts instead");
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

/// Undo [`degrade`].
pub fn restore(hosts: &[(String, Ipv4Addr)], how: &Degraded) {
    for (h, _) in hosts {
        match how {
            Degraded::Netem(_) => {
                in_ns(h, "tc", &["qdisc", "del", "dev", "eth0", "root"]).unwrap();
            }
            Degraded::IptablesLoss(_) => heal(h),
        }
    }
}
