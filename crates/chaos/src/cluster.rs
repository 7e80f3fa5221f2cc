//! A topology running on the namespaces: one `bulwark up --host H` per
//! host (in that host's namespace), sharing one secret, admin token and
//! cluster CA (every hop behind the lb is mutual TLS: `internal_tls` is on
//! by default for hosts off loopback);
//! role processes found through each supervisor's control socket; database
//! status read over the db API. Every host runs its host firewall
//! (`[firewall] manage = true`, see [`crate::topology`]). Whole-host faults for the floating address
//! stacks: kill -9 of every process of a host, its link down and up, its
//! `up` started again as after a reboot.
use crate::net;
use crate::topology::{topology_text, Stack, LB};
use bulwark_testkit::{bulwark_bin, Process};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const SECRET: &str = "chaos-cluster-secret-0123456789abcdef";
pub const ADMIN_TOKEN: &str = "chaos-admin-token-0123456789abcdef";

/// A database node of the topology.
#[derive(Debug, Clone)]
pub struct DbNode {
    pub id: u64,
    pub name: String,
    pub host: String,
    /// The client API.
    pub addr: SocketAddr,
    /// The Raft listener (`port_base` + 50 + i).
    pub raft: SocketAddr,
}

pub struct Cluster {
    pub stack: Stack,
    /// Host name and address of every started host.
    pub hosts: Vec<(String, Ipv4Addr)>,
    /// Roles per started host.
    pub roles: Vec<(String, Vec<String>)>,
    pub dbs: Vec<DbNode>,
    pub root: PathBuf,
    pub topology: PathBuf,
    /// What the harness had to do beyond the topology (goes into the report).
    pub notes: Vec<String>,
    tmp: Option<tempfile::TempDir>,
    ups: Mutex<Vec<(String, Process)>>,
}

/// `bulwark up --host HOST` in that host's namespace (returns once ready).
fn spawn_up(topology: &Path, host: &str, dir: &Path) -> Process {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host]).arg(bulwark_bin()).arg("up").arg("-c").arg(topology);
    cmd.args(["--host", host]).arg("--data-dir").arg(dir);
    Process::spawn(cmd, tempfile::tempdir().unwrap(), topology.to_path_buf())
}

fn write_private(path: &Path, content: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    f.write_all(content.as_bytes()).unwrap();
}

impl Cluster {
    /// Build the network and start every host's `bulwark up` (all at once:
    /// each waits for the database quorum, which needs the others).
    pub fn start(stack: Stack) -> Cluster {
        let mut hosts: Vec<(String, Ipv4Addr)> = vec![
            ("lb1".into(), Ipv4Addr::new(198, 18, 0, 10)),
            ("server1".into(), Ipv4Addr::new(198, 18, 0, 11)),
            ("server2".into(), Ipv4Addr::new(198, 18, 0, 12)),
        ];
        if !stack.floating().is_empty() {
            hosts.push(("lb2".into(), Ipv4Addr::new(198, 18, 0, 13)));
            hosts.push(("server3".into(), Ipv4Addr::new(198, 18, 0, 14)));
        }
        let roles: Vec<(String, Vec<String>)> = match stack {
            Stack::Floating | Stack::FloatingActiveActive => vec![
                ("lb1".into(), vec!["lb1".into()]),
                ("lb2".into(), vec!["lb2".into()]),
                ("server1".into(), vec!["web1".into(), "app1".into(), "db1".into()]),
                ("server2".into(), vec!["web2".into(), "app2".into(), "db2".into()]),
                ("server3".into(), vec!["db3".into()]),
            ],
            Stack::Full => vec![
                ("lb1".into(), vec!["lb1".into(), "db3".into()]),
                ("server1".into(), vec!["web1".into(), "app1".into(), "db1".into()]),
                ("server2".into(), vec!["web2".into(), "app2".into(), "db2".into()]),
            ],
            Stack::Db => vec![
                ("lb1".into(), vec!["db3".into()]),
                ("server1".into(), vec!["db1".into()]),
                ("server2".into(), vec!["db2".into()]),
            ],
        };
        let db3 = if stack.floating().is_empty() { ("lb1", "198.18.0.10") } else { ("server3", "198.18.0.14") };
        let db = |id: u64, host: &str, ip: &str| DbNode {
            id,
            name: format!("db{id}"),
            host: host.into(),
            addr: format!("{ip}:{}", 8109 + id).parse().unwrap(),
            raft: format!("{ip}:{}", 8129 + id).parse().unwrap(),
        };
        let dbs = vec![db(1, "server1", "198.18.0.11"), db(2, "server2", "198.18.0.12"), db(3, db3.0, db3.1)];
        net::setup(&hosts);
        let tmp = tempfile::Builder::new().prefix("bulwark-chaos-").tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let topology = root.join("topology.toml");
        std::fs::write(&topology, topology_text(stack)).unwrap();
        for (h, _) in &hosts {
            let dir = root.join(h);
            std::fs::create_dir_all(&dir).unwrap();
            // Each host derives its hop secrets from `secret`; the peer
            // secret is SECRET itself, which the harness sends to the
            // databases (status, promote, writes) as their peers do.
            write_private(&dir.join("secret"), SECRET);
            std::fs::create_dir_all(dir.join("secrets")).unwrap();
            write_private(&dir.join("secrets/db-peer"), SECRET);
            write_private(&dir.join("admin.token"), ADMIN_TOKEN);
        }
        // One cluster CA for every host (`internal_tls` is on: the hosts
        // are not loopback), as an operator copies it before the first
        // `up`; each host's `up` issues its roles' certificates from it.
        // The harness has a certificate of its own for the database API.
        let pki = root.join("pki");
        let ca = bulwark_cluster::pki::ClusterCa::ensure(&pki, "chaos").expect("the cluster CA");
        let harness = ca.ensure_role("harness", std::net::IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))).unwrap();
        let ca_dir = bulwark_cluster::pki::dir(&pki);
        for (h, _) in &hosts {
            let dir = bulwark_cluster::pki::dir(&root.join(h));
            bulwark_cluster::private::dir(&dir).unwrap();
            for f in ["ca.pem", "ca.key"] {
                std::fs::copy(ca_dir.join(f), dir.join(f)).unwrap();
            }
        }
        let files = bulwark_config::internal_tls::TlsFiles { cert: harness.cert, key: harness.key, ca: ca.cert_path() };
        let tls = bulwark_mtls::MutualTls::load(&files).expect("the harness's certificate");
        crate::set_inner_tls(Some(crate::InnerTls { tls, addrs: dbs.iter().map(|d| d.addr).collect() }));
        let started = Instant::now();
        let threads: Vec<_> = hosts
            .iter()
            .map(|(h, _)| {
                let (h, topology, dir) = (h.clone(), topology.clone(), root.join(h));
                std::thread::spawn(move || {
                    let p = spawn_up(&topology, &h, &dir);
                    (h, p)
                })
            })
            .collect();
        let mut ups = Vec::new();
        let mut failed = None;
        for t in threads {
            match t.join() {
                Ok(x) => ups.push(x),
                Err(e) => failed = Some(e),
            }
        }
        let mut c = Cluster {
            stack,
            hosts,
            roles,
            dbs,
            root,
            topology,
            notes: Vec::new(),
            tmp: Some(tmp),
            ups: Mutex::new(ups),
        };
        if let Some(e) = failed {
            c.dump_logs();
            std::panic::resume_unwind(e);
        }
        c.same_public_port();
        // Every host runs behind its own firewall (see `firewall_text`).
        for (h, _) in &c.hosts {
            if let Err(e) = net::in_ns(h, "nft", &["list", "table", "inet", "bulwark"]) {
                c.dump_logs();
                panic!("host {h} has no host firewall (table inet bulwark): {e}");
            }
        }
        // Mutual TLS is on: a database node answers no plain HTTP. Its Raft
        // listener is for the other database nodes only: the host firewall
        // drops the harness's connection (no answer within a second).
        for d in &c.dbs {
            let auth = format!("Bearer {SECRET}");
            let plain = bulwark_testkit::request(d.addr, "GET", "/v1/status", &[("Authorization", &auth)], b"");
            assert!(!plain.as_ref().is_ok_and(|r| r.status != 0), "{} answers plain HTTP: {plain:?}", d.name);
            let raft = std::net::TcpStream::connect_timeout(&d.raft, Duration::from_secs(1));
            assert!(raft.is_err(), "{}'s Raft listener {} is reachable from outside the db hosts", d.name, d.raft);
        }
        eprintln!("chaos: {:?} stack up in {:.1} s ({})", stack, started.elapsed().as_secs_f64(), c.root.display());
        c
    }

    /// The host running `role`.
    pub fn host_of(&self, role: &str) -> &str {
        &self.roles.iter().find(|(_, r)| r.iter().any(|x| x == role)).unwrap_or_else(|| panic!("no role {role}")).0
    }

    pub fn host_addr(&self, host: &str) -> Ipv4Addr {
        self.hosts.iter().find(|(h, _)| h == host).unwrap().1
    }

    pub fn data_dir(&self, host: &str) -> PathBuf {
        self.root.join(host)
    }

    /// One request on host `host`'s control socket.
    pub fn control(&self, host: &str, req: Value) -> Value {
        let sock = self.data_dir(host).join(format!("control-{host}.sock"));
        let s = UnixStream::connect(&sock).unwrap_or_else(|e| panic!("control socket {}: {e}", sock.display()));
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut w = s.try_clone().unwrap();
        w.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("control reply {line:?}: {e}"))
    }

    /// The supervisor's view of `role` (state, pid, restarts, listeners).
    pub fn child(&self, role: &str) -> Value {
        let reply = self.control(self.host_of(role), json!({"cmd": "status"}));
        reply["children"].as_array().unwrap().iter().find(|c| c["name"] == role).cloned().unwrap()
    }

    /// Pid of a ready `role` process.
    pub fn pid(&self, role: &str) -> i32 {
        let c = self.child(role);
        assert_eq!(c["state"], "ready", "{role} is not ready: {c}");
        c["pid"].as_i64().unwrap() as i32
    }

    pub fn signal(&self, role: &str, sig: Signal) -> i32 {
        let pid = self.pid(role);
        nix::sys::signal::kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("kill -{sig:?} {role} ({pid}): {e}"));
        pid
    }

    /// Wait (bounded) until the supervisor reports `role` ready again with a
    /// pid other than `old_pid`.
    pub fn wait_restarted(&self, role: &str, old_pid: i32, within: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let c = self.child(role);
            if c["state"] == "ready" && c["pid"].as_i64().is_some_and(|p| p as i32 != old_pid) {
                return t.elapsed();
            }
            assert!(t.elapsed() < within, "{role} not restarted within {within:?}: {c}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `bulwark stop ROLE` (graceful: SIGTERM, drain).
    pub fn stop_role(&self, role: &str) {
        let r = self.control(self.host_of(role), json!({"cmd": "stop", "node": role}));
        assert_eq!(r["ok"], true, "stop {role}: {r}");
    }

    /// SIGKILL `role` through its supervisor, which keeps it down until
    /// [`Cluster::start_role`] (returns once it is dead). A signal sent from
    /// outside followed by `stop` races the supervisor's restart.
    pub fn kill_role(&self, role: &str) {
        let r = self.control(self.host_of(role), json!({"cmd": "kill", "node": role}));
        assert_eq!(r["ok"], true, "kill {role}: {r}");
    }

    /// `bulwark start ROLE` (returns once ready).
    pub fn start_role(&self, role: &str) {
        let r = self.control(self.host_of(role), json!({"cmd": "start", "node": role}));
        assert_eq!(r["ok"], true, "start {role}: {r}");
    }

    pub fn db(&self, name: &str) -> &DbNode {
        self.dbs.iter().find(|d| d.name == name).unwrap()
    }

    /// `/v1/status` of one node (None when it does not answer in time).
    pub fn db_status(&self, addr: SocketAddr, timeout: Duration) -> Option<Value> {
        let auth = format!("Bearer {SECRET}");
        let r = crate::http(addr, "GET", "/v1/status", &[("Authorization", &auth)], b"", timeout).ok()?;
        (r.status == 200).then(|| serde_json::from_slice(&r.body).ok()).flatten()
    }

    /// The node that is primary with a majority right now, if any.
    pub fn primary(&self) -> Option<DbNode> {
        self.dbs.iter().find_map(|d| {
            let s = self.db_status(d.addr, Duration::from_millis(500))?;
            (s["role"] == "primary" && s["quorum"] == true).then(|| d.clone())
        })
    }

    pub fn wait_primary(&self, within: Duration) -> DbNode {
        let t = Instant::now();
        loop {
            if let Some(p) = self.primary() {
                return p;
            }
            assert!(t.elapsed() < within, "no database primary within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Make sure the primary is not on `host` (planned leadership transfer).
    pub fn move_primary_off(&self, host: &str) -> DbNode {
        for _ in 0..10 {
            let p = self.wait_primary(Duration::from_secs(30));
            if p.host != host {
                return p;
            }
            let target = self.dbs.iter().find(|d| d.host != host).unwrap();
            let auth = format!("Bearer {SECRET}");
            let body = json!({ "node_id": target.id }).to_string();
            let r = crate::http(
                p.addr,
                "POST",
                "/v1/promote",
                &[("Authorization", &auth), ("Content-Type", "application/json")],
                body.as_bytes(),
                Duration::from_secs(10),
            );
            eprintln!("chaos: promote {} -> {:?}", target.name, r.map(|r| (r.status, r.text())));
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("could not move the primary off {host}");
    }

    /// The derived config file of `role`.
    pub fn role_config(&self, role: &str) -> PathBuf {
        self.data_dir(self.host_of(role)).join("config").join(format!("{role}.toml"))
    }

    /// Start an extra `bulwark lb` in the lb1 namespace with lb1's derived
    /// config, sharing its public port (SO_REUSEPORT), with its admin
    /// listener moved to `admin_port`.
    pub fn start_second_lb(&self, admin_port: u16) -> Process {
        let cfg = std::fs::read_to_string(self.role_config("lb1")).unwrap();
        let admin = format!("bind = \"{}:8081\"", self.host_addr("lb1"));
        assert!(cfg.contains(&admin), "lb1's derived config has no `{admin}`:\n{cfg}");
        let cfg = cfg.replace(&admin, &format!("bind = \"{}:{admin_port}\"", self.host_addr("lb1")));
        let path = self.data_dir("lb1").join(format!("config/lb1-second-{admin_port}.toml"));
        std::fs::write(&path, cfg).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", "lb1"]).arg(bulwark_bin()).arg("lb").arg("-c").arg(&path);
        Process::spawn(cmd, tempfile::tempdir().unwrap(), path)
    }

    /// The public port `role`'s derived config listens on (`[[frontend]]`
    /// `http`).
    pub fn lb_public_port(&self, role: &str) -> u16 {
        let cfg = std::fs::read_to_string(self.role_config(role)).unwrap();
        let bind = cfg
            .split("[[frontend]]")
            .skip(1)
            .find(|f| f.contains("name = \"http\""))
            .and_then(|f| f.lines().find_map(|l| l.trim().strip_prefix("bind = ")))
            .unwrap_or_else(|| panic!("no http frontend in {role}'s derived config:\n{cfg}"));
        bind.trim_matches('"').parse::<SocketAddr>().unwrap_or_else(|e| panic!("{role}: bind {bind}: {e}")).port()
    }

    /// Every lb of a floating group accepts the floating address's port:
    /// the topology gives lbs on different machines the same ports.
    fn same_public_port(&mut self) {
        let groups = self.stack.floating();
        let Some(first) = groups.first() else { return };
        let public = self.lb_public_port(&first.hosts[0]);
        assert_eq!(public, LB.port(), "the workload expects the first lb on port {}", LB.port());
        let lbs: std::collections::BTreeSet<&String> = groups.iter().flat_map(|g| &g.hosts).collect();
        for lb in lbs {
            assert_eq!(self.lb_public_port(lb), public, "{lb} does not listen on the floating address's port");
        }
    }

    /// The pids in `host`'s network namespace, less `except`.
    pub fn host_pids(&self, host: &str, except: &[u32]) -> Vec<i32> {
        net::sh("ip", &["netns", "pids", host])
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .filter(|p| !except.contains(&(*p as u32)))
            .collect()
    }

    /// kill -9 every process in `host`'s namespace but `except` (the
    /// harness's own monitors), like the machine dying; returns once they
    /// are gone, with their count. The `up` stays dead until
    /// [`Cluster::start_host`].
    pub fn kill_host(&self, host: &str, except: &[u32]) -> usize {
        let pids = self.host_pids(host, except);
        for p in &pids {
            let _ = nix::sys::signal::kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        let t = Instant::now();
        loop {
            let left = self.host_pids(host, except);
            if left.is_empty() {
                return pids.len();
            }
            for p in &left {
                let _ = nix::sys::signal::kill(Pid::from_raw(*p), Signal::SIGKILL);
            }
            assert!(t.elapsed() < Duration::from_secs(10), "processes of {host} still alive after kill -9: {left:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start `host`'s `up` again on its data dir (returns once ready).
    pub fn start_host(&self, host: &str) {
        let p = spawn_up(&self.topology, host, &self.data_dir(host));
        self.ups.lock().unwrap().push((host.to_string(), p));
    }

    /// The pid of `host`'s `up` (the newest one started).
    pub fn up_pid(&self, host: &str) -> u32 {
        self.ups.lock().unwrap().iter().rev().find(|(h, _)| h == host).map(|(_, p)| p.pid()).unwrap()
    }

    /// `ip link set eth0 up|down` inside `host`'s namespace.
    pub fn set_link(&self, host: &str, up: bool) {
        net::in_ns(host, "ip", &["link", "set", "eth0", if up { "up" } else { "down" }])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Remove the floating addresses from `host`'s interface (as a reboot
    /// would: they are not part of its own configuration).
    pub fn flush_floating(&self, host: &str) {
        for g in self.stack.floating() {
            let _ = net::in_ns(host, "ip", &["addr", "del", &format!("{}/24", g.address), "dev", "eth0"]);
        }
    }

    /// Print the tail of every role log (on failure).
    pub fn dump_logs(&self) {
        for (h, roles) in &self.roles {
            for r in roles {
                let p = self.data_dir(h).join("logs").join(format!("{r}.log"));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(25)..];
                eprintln!("---- {} (last {} lines)\n{}", p.display(), tail.len(), tail.join("\n"));
            }
        }
        for (h, p) in self.ups.lock().unwrap().iter() {
            let logs = p.logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!("---- up --host {h}\n{}", lines[lines.len().saturating_sub(15)..].join("\n"));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
            if let Some(t) = self.tmp.take() {
                let kept = t.keep();
                eprintln!("chaos: data kept in {}", kept.display());
            }
        }
        // Dropping the `up` processes SIGKILLs them; their roles follow
        // (parent-death signal), and the namespaces die with the test.
        self.ups.lock().unwrap().clear();
    }
}
