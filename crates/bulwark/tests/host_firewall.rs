//! The host firewall (`bulwark firewall`, `[firewall] manage = true`) in
//! real network namespaces: hosts `edge` (lb1, 10.7.0.1), `front` (web1 and
//! app1, 10.7.0.2) and `data` (db1, 10.7.0.3), an `outside` client
//! (10.7.0.50) and the `operator`'s machine (10.7.0.60), on one bridge.
//! Each test re-runs itself inside private network and mount namespaces
//! (`unshare`, root, nftables from scripts/install-test-deps.sh), so the
//! machine's own network and rules are never touched.
//!
//! Proves: exactly the flows of the topology reach a host (others are
//! dropped: a connection times out rather than being refused), replies to
//! allowed connections come back, SSH stays open to `ssh_from`, `check`
//! notices a hand-added and a hand-deleted rule, `apply` twice leaves the
//! same table, `remove` leaves the operator's own tables alone, an
//! unprivileged `apply` changes nothing, `egress = "restrict"` stops a
//! connection to an unlisted address while the host's own flows work, and
//! the whole site (lb -> web -> app -> db) serves posts and reads with
//! every host firewalled by `up --host`.

use bulwark_testkit::config::{RoleKind, TopologyConfig};
use bulwark_testkit::netns::{isolated, private_run_netns, sh};
use bulwark_testkit::{bulwark_bin, Process};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const HOSTS: [(&str, &str); 5] = [
    ("edge", "10.7.0.1"),
    ("front", "10.7.0.2"),
    ("data", "10.7.0.3"),
    ("outside", "10.7.0.50"),
    ("operator", "10.7.0.60"),
];

/// A dropped connection attempt is given this long to be answered; an
/// allowed one is answered at once on a local bridge, and a refused one
/// fails at once: only a dropped one reaches it.
const DROPPED_AFTER: Duration = Duration::from_secs(1);
const ALLOWED_WITHIN: Duration = Duration::from_secs(20);

/// The site on the bridge: lb1 on edge, web1 and app1 on front, db1 on
/// data; its firewalls managed, SSH and the operator from 10.7.0.60, and
/// `firewall` (inline-table entries) on top.
fn topology(firewall: &str) -> String {
    let at = |last: u8| IpAddr::from([10, 7, 0, last]);
    TopologyConfig::new("fwtest")
        .set("port_base", "8080")
        .set("lb", r#"{ tls = false, check_interval = "250ms" }"#)
        .set(
            "firewall",
            &format!(r#"{{ manage = true, ssh_from = ["10.7.0.60"], operator_from = ["10.7.0.60"], {firewall} }}"#),
        )
        .host_at("edge", at(1), &[("lb1", RoleKind::Lb)])
        .host_at("front", at(2), &[("web1", RoleKind::Web), ("app1", RoleKind::App)])
        .host_at("data", at(3), &[("db1", RoleKind::Db)])
        .to_toml()
}

/// The bridge and one namespace per host.
fn network() {
    private_run_netns();
    sh("ip", &["link", "set", "lo", "up"]);
    sh("ip", &["link", "add", "br0", "type", "bridge"]);
    sh("ip", &["link", "set", "br0", "up"]);
    for (ns, ip) in HOSTS {
        let veth = format!("v-{ns}");
        sh("ip", &["netns", "add", ns]);
        sh("ip", &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        sh("ip", &["link", "set", &veth, "master", "br0", "up"]);
        sh("ip", &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        sh("ip", &["-n", ns, "link", "set", "eth0", "up"]);
        sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
    }
}

/// Run `f` on a thread that has entered namespace `ns`: sockets it makes
/// stay in that namespace.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on this thread only, with a valid namespace fd.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// A line echo server in namespace `ns`, standing in for a role or sshd.
fn echo(ns: &str, addr: &str) {
    let addr: SocketAddr = addr.parse().unwrap();
    let listener = in_ns(ns, move || TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_ok() {
                    let _ = conn.write_all(line.as_bytes());
                }
            });
        }
    });
}

/// Connect from namespace `ns` to `to` and have a line echoed back.
fn talk(ns: &str, to: &str, connect_within: Duration) -> Result<(), ErrorKind> {
    let to: SocketAddr = to.parse().unwrap();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, connect_within).map_err(|e| e.kind())?;
        s.set_read_timeout(Some(ALLOWED_WITHIN)).unwrap();
        s.write_all(b"hello\n").map_err(|e| e.kind())?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).map_err(|e| e.kind())?;
        assert_eq!(line, "hello\n", "the reply came back whole");
        Ok(())
    })
}

fn allowed(from: &str, to: &str) {
    assert_eq!(talk(from, to, ALLOWED_WITHIN), Ok(()), "{from} -> {to} should work");
}

fn dropped(from: &str, to: &str) {
    assert_eq!(talk(from, to, DROPPED_AFTER), Err(ErrorKind::TimedOut), "{from} -> {to} should be dropped");
}

fn run_in(ns: &str, cmd: &str, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns, cmd]).args(args).output().unwrap()
}

fn nft(ns: &str, args: &[&str]) -> String {
    let out = run_in(ns, "nft", args);
    assert!(out.status.success(), "nft {args:?} in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn firewall(ns: &str, action: &str, topology: &Path) -> Output {
    let bin = bulwark_bin();
    let topo = topology.to_str().unwrap();
    let mut args = vec!["firewall", action, "-c", topo, "--host", ns];
    if action == "remove" {
        args.truncate(2);
    }
    run_in(ns, bin.to_str().unwrap(), &args)
}

fn firewall_ok(ns: &str, action: &str, topology: &Path) -> String {
    let out = firewall(ns, action, topology);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "firewall {action} on {ns}: {text}");
    text
}

#[test]
fn only_the_flows_of_the_topology_reach_a_firewalled_host() {
    if !isolated("only_the_flows_of_the_topology_reach_a_firewalled_host") {
        return;
    }
    network();
    let dir = tempfile::tempdir().unwrap();
    // Readable by an unprivileged user too (the refused apply below).
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, topology("monitoring = false")).unwrap();
    // Stand-ins for db1's API and sshd on the data host, and a server on
    // the outside.
    echo("data", "10.7.0.3:8110");
    echo("data", "0.0.0.0:22");
    echo("outside", "10.7.0.50:7000");
    allowed("edge", "10.7.0.3:8110");
    allowed("outside", "10.7.0.3:22");

    // The operator's own table, which nothing of ours may touch.
    nft("data", &["add", "table", "inet", "operator"]);
    nft("data", &["add", "chain", "inet", "operator", "mine"]);
    nft("data", &["add", "rule", "inet", "operator", "mine", "tcp", "dport", "7777", "counter"]);

    // An unprivileged apply says why and changes nothing.
    let bin = bulwark_bin();
    let nobody = run_in(
        "data",
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin.to_str().unwrap(),
            "firewall",
            "apply",
            "-c",
            topo.to_str().unwrap(),
            "--host",
            "data",
        ],
    );
    let stderr = String::from_utf8_lossy(&nobody.stderr);
    assert!(!nobody.status.success(), "{stderr}");
    assert!(stderr.contains("needs root") && stderr.contains("nothing was changed"), "{stderr}");
    assert!(!nft("data", &["list", "tables"]).contains("bulwark"));

    firewall_ok("data", "apply", &topo);
    let first = nft("data", &["-s", "list", "table", "inet", "bulwark"]);
    firewall_ok("data", "apply", &topo);
    assert_eq!(nft("data", &["-s", "list", "table", "inet", "bulwark"]), first, "apply twice: the same table");
    assert_eq!(nft("data", &["list", "tables"]).matches("table inet bulwark").count(), 1);
    assert!(firewall_ok("data", "check", &topo).contains("is the plan of host data"));

    // The db API: from the app's host; not from the lb's (monitoring is
    // off here) nor from outside. Dropped, not refused.
    allowed("front", "10.7.0.3:8110");
    dropped("edge", "10.7.0.3:8110");
    dropped("outside", "10.7.0.3:8110");
    // SSH: from ssh_from only.
    allowed("operator", "10.7.0.3:22");
    dropped("outside", "10.7.0.3:22");
    dropped("front", "10.7.0.3:22");
    // Egress is open on this host: its own connections go out and their
    // replies come back in.
    allowed("data", "10.7.0.50:7000");

    // A hand-added rule and a hand-deleted one: `check` shows both.
    nft("data", &["add", "rule", "inet", "bulwark", "input", "tcp", "dport", "9999", "accept"]);
    let listing = nft("data", &["-a", "list", "chain", "inet", "bulwark", "input"]);
    let ssh_rule = listing.lines().find(|l| l.contains("ssh from ssh_from")).expect("the ssh rule");
    let handle = ssh_rule.rsplit("handle ").next().unwrap().trim().to_string();
    nft("data", &["delete", "rule", "inet", "bulwark", "input", "handle", &handle]);
    let check = firewall("data", "check", &topo);
    let diff = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{diff}");
    assert!(diff.contains("+\t\ttcp dport 9999 accept"), "{diff}");
    assert!(diff.contains("-\t\tip saddr 10.7.0.60 tcp dport 22 accept comment \"ssh ssh from ssh_from\""), "{diff}");
    firewall_ok("data", "apply", &topo);
    assert!(firewall_ok("data", "check", &topo).contains("is the plan"));

    // `remove`: our table goes, the operator's stays as it was.
    assert!(firewall_ok("data", "remove", &topo).contains("removed table inet bulwark"));
    let tables = nft("data", &["list", "tables"]);
    assert!(!tables.contains("bulwark") && tables.contains("table inet operator"), "{tables}");
    assert!(nft("data", &["list", "table", "inet", "operator"]).contains("tcp dport 7777 counter"));
    assert_eq!(firewall("data", "check", &topo).status.code(), Some(1), "nothing installed");
    allowed("outside", "10.7.0.3:22");

    // egress = "restrict" on the app's host: its connection to the db API
    // works, one to an address it has no business with is dropped.
    let restricted = dir.path().join("restricted.toml");
    std::fs::write(&restricted, topology("egress = \"restrict\"")).unwrap();
    firewall_ok("front", "apply", &restricted);
    allowed("front", "10.7.0.3:8110");
    dropped("front", "10.7.0.50:7000");
    assert!(firewall_ok("front", "check", &restricted).contains("is the plan"));
}

fn spawn_up(topology: &Path, host: &str, data: &Path) -> Process {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host]).arg(bulwark_bin()).arg("up").arg("-c").arg(topology);
    cmd.args(["--host", host]).arg("--data-dir").arg(data);
    Process::spawn(cmd, tempfile::tempdir().unwrap(), topology.to_path_buf())
}

#[test]
fn the_site_serves_through_firewalls_on_every_host() {
    if !isolated("the_site_serves_through_firewalls_on_every_host") {
        return;
    }
    network();
    let dir = tempfile::tempdir().unwrap();
    let topo = dir.path().join("topology.toml");
    // The strictest inner rules: the lb host is kept out of the app and
    // db listeners too (no dashboard polling).
    std::fs::write(&topo, topology("remove_on_stop = true, monitoring = false")).unwrap();
    // One data directory for the three hosts (one cluster CA, one set of
    // hop secrets), as an operator copies them to each machine. The
    // database host first: the app host waits for its primary.
    let data = dir.path().join("data");
    let mut ups: Vec<(&str, Process)> = Vec::new();
    for host in ["data", "front", "edge"] {
        ups.push((host, spawn_up(&topo, host, &data)));
        let out = ups.last().unwrap().1.stdout_lines().join("\n");
        assert!(out.contains(&format!("host firewall: table inet bulwark installed for host {host}")), "{out}");
    }
    for host in ["data", "front", "edge"] {
        assert!(firewall_ok(host, "check", &topo).contains("is the plan"));
    }

    // From outside: a post and a read through the lb.
    let (posted, listed) = in_ns("outside", || {
        let lb: SocketAddr = "10.7.0.1:8080".parse().unwrap();
        let body = br#"{"author": "ops", "text": "through every firewall"}"#;
        let posted =
            bulwark_testkit::request(lb, "POST", "/api/messages", &[("Content-Type", "application/json")], body)
                .unwrap();
        let listed = bulwark_testkit::get(lb, "/api/messages").unwrap();
        (posted, listed)
    });
    assert!(posted.status == 200 || posted.status == 201, "{} {}", posted.status, posted.text());
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(listed.text().contains("through every firewall"), "{}", listed.text());

    // Every inner port and the admin listener: dropped from outside.
    for to in ["10.7.0.2:8090", "10.7.0.2:8100", "10.7.0.3:8110", "10.7.0.1:8081"] {
        dropped("outside", to);
    }

    // A clean stop with remove_on_stop: each host's table goes with it.
    for (host, mut up) in ups.into_iter().rev() {
        assert!(up.terminate().success(), "{}", up.logs());
        assert!(!nft(host, &["list", "tables"]).contains("bulwark"), "{host} still has its table");
    }
}
