//! `bulwark up`, `status`, `stop NODE`, `start NODE`: run a whole topology
//! as supervised child processes and talk to it while it runs.
//!
//! Everything `up` and its roles write is private to the user running it:
//! the umask is 077, the data directory and its subdirectories are 0700,
//! the hop secrets (`secrets/`, see `bulwark_cluster::secrets`), the admin
//! token, the generated TLS key and the logs are 0600, and so is the control socket (see `bulwark_cluster::private`).
//! The summary names the admin token's file; the token itself is never
//! printed.
use anyhow::{bail, Context, Result};
use bulwark_cluster::derive::{derive, SharedFiles};
use bulwark_cluster::private;
use bulwark_cluster::{control_request, ChildSpec, ControlReply, ControlRequest, Readiness, RestartPolicy, Supervisor};
use bulwark_config::topology::{Placed, RoleKind, Topology};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Topology file; without it, the built-in two-server site on localhost.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Start only the roles of this host (run `up --host NAME` on each machine).
    #[arg(long)]
    pub host: Option<String>,
    /// Override the topology's `port_base` (0 = pick free ports).
    #[arg(long)]
    pub port_base: Option<u16>,
    /// Override the topology's `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ControlArgs {
    /// Data directory of the running topology.
    #[arg(long, default_value = "./bulwark-data")]
    pub data_dir: PathBuf,
    /// The host whose supervisor to ask (when started with `up --host`).
    #[arg(long)]
    pub host: Option<String>,
}

fn control_socket(data_dir: &Path, host: Option<&str>) -> PathBuf {
    match host {
        Some(h) => data_dir.join(format!("control-{h}.sock")),
        None => data_dir.join("control.sock"),
    }
}

fn load_topology(args: &UpArgs) -> Result<Topology> {
    let mut t = match &args.config {
        Some(p) => bulwark_config::load::<Topology>(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Topology::default_localhost(),
    };
    if let Some(b) = args.port_base {
        t.port_base = b;
    }
    if let Some(d) = &args.data_dir {
        t.data_dir = d.clone();
    }
    if let Some(p) = &args.config {
        super::app::anchor_topology(&mut t, p);
    }
    if let Some(h) = &args.host {
        if !t.hosts.iter().any(|x| &x.name == h) {
            let names: Vec<_> = t.hosts.iter().map(|h| h.name.as_str()).collect();
            bail!("no host `{h}` in the topology (hosts: {})", names.join(", "));
        }
    }
    if t.port_base == 0 {
        assign_free_ports(&mut t)?;
    }
    let mut v = bulwark_config::Validator::default();
    bulwark_config::Validate::validate(&t, &mut v);
    v.into_result("topology", "").map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(t)
}

/// `port_base = 0`: give every listener a currently free port, written into
/// the topology so every derived config agrees.
fn assign_free_ports(t: &mut Topology) -> Result<()> {
    let mut held = Vec::new();
    let mut free = |ip: std::net::IpAddr| -> Result<u16> {
        let l = std::net::TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
        let port = l.local_addr()?.port();
        held.push(l); // keep it until every port is chosen: no duplicates
        Ok(port)
    };
    let backup_ip = t.backup_placement().map(|(_, a)| a.ip());
    if let (Some(b), Some(ip)) = (&mut t.backup, backup_ip) {
        b.port.get_or_insert(free(ip)?);
    }
    for h in &mut t.hosts {
        for r in &mut h.roles {
            r.port.get_or_insert(free(h.address)?);
            if r.kind == RoleKind::Lb {
                r.admin_port.get_or_insert(free(h.address)?);
                r.https_port.get_or_insert(free(h.address)?);
            }
            if r.kind == RoleKind::Db {
                r.raft_port.get_or_insert(free(h.address)?);
            }
        }
    }
    Ok(())
}

fn random_secret() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..32).map(|_| format!("{:x}", rng.gen_range(0..16u8))).collect()
}

/// Write `content` to `path` with mode 0600 unless it exists (then it is
/// tightened to 0600).
fn ensure_private_file(path: &Path, content: impl FnOnce() -> String) -> Result<()> {
    private::ensure_file(path, content).with_context(|| format!("creating {}", path.display()))
}

fn prepare_files(t: &Topology, files: &SharedFiles, host: Option<&str>) -> Result<()> {
    for d in [&files.data_dir, &files.data_dir.join("config"), &files.data_dir.join("logs"), &files.site] {
        private::dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // Only the hop secrets of the roles that run here: a host with just
    // an lb never holds the database's.
    let kinds = t.placed().into_iter().filter(|p| host.is_none_or(|h| h == p.host)).map(|p| p.kind);
    bulwark_cluster::secrets::ensure(&files.data_dir, kinds)
        .with_context(|| format!("creating {}", bulwark_cluster::secrets::dir(&files.data_dir).display()))?;
    ensure_private_file(&files.admin_token, random_secret)?;
    if t.internal_tls() {
        // A cluster CA and a certificate per role of this host, for mutual
        // TLS between hosts (see `internal_tls` in the derived configs).
        let ca = bulwark_cluster::pki::ClusterCa::ensure(&files.data_dir, &t.name)?;
        for p in t.placed().into_iter().filter(|p| host.is_none_or(|h| h == p.host)) {
            ca.ensure_role(&p.name, p.addr.ip())?;
        }
    }
    for (name, bytes) in bulwark_app::site_files() {
        let p = files.site.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
    }
    if t.lb.tls && t.lb.certificate.is_none() {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        for h in &t.hosts {
            names.push(h.address.to_string());
        }
        names.sort();
        names.dedup();
        let dir = files.cert.parent().unwrap_or(&files.data_dir);
        private::dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (_, key) = bulwark_lb::tls::ensure_self_signed(dir, &names).map_err(|e| anyhow::anyhow!("{e}"))?;
        private::tighten(&key).with_context(|| format!("setting the mode of {}", key.display()))?;
    }
    Ok(())
}

/// Every listener of this host's roles must be free before anything starts.
fn check_ports(roles: &[bulwark_cluster::derive::DerivedRole]) -> Result<()> {
    let mut taken = Vec::new();
    for r in roles {
        let p = &r.placed;
        for (what, a) in p.listeners() {
            if a.port() != 0 && std::net::TcpListener::bind(a).is_err() {
                taken.push(format!("{a} ({} {what})", p.name));
            }
        }
    }
    if !taken.is_empty() {
        bail!(
            "these addresses are already in use: {}\n(is another `bulwark up` running? stop it, or pass --port-base N to move every port, or --port-base 0 for free ports)",
            taken.join(", ")
        );
    }
    Ok(())
}

/// The mutual TLS of role `name` (its certificate, the cluster CA) when
/// the topology's `internal_tls` is on: `up` probes the role's listener
/// with it, as the tier in front would.
fn role_tls(t: &Topology, files: &SharedFiles, name: &str) -> Result<Option<bulwark_mtls::MutualTls>> {
    if !t.internal_tls() {
        return Ok(None);
    }
    let dir = bulwark_cluster::pki::dir(&files.data_dir);
    let tls = bulwark_config::internal_tls::TlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join("ca.pem"),
    };
    Ok(Some(bulwark_mtls::MutualTls::load(&tls)?))
}

fn readiness(placed: &Placed, tls: Option<bulwark_mtls::MutualTls>) -> Readiness {
    let kind = placed.kind;
    // An lb's extra process has no admin listener: its listeners are bound
    // when it prints its ready line.
    if kind == RoleKind::Lb && placed.admin.is_none() {
        return Readiness::ReadyLine;
    }
    // The lb's readiness is its admin listener's, never mutual TLS.
    let tls = tls.filter(|_| kind != RoleKind::Lb);
    let http = |listener: &str, path: &str| Readiness::Http {
        listener: listener.into(),
        path: path.into(),
        expect: 200,
        token: None,
        tls: tls.clone(),
    };
    match kind {
        RoleKind::Db => http("api", "/health"),
        RoleKind::App => http("http", "/api/health"),
        RoleKind::Web => http("http", "/health"),
        RoleKind::Lb => http("admin", "/health"),
    }
}

pub fn up(args: UpArgs, log_level: &str) -> Result<i32> {
    // Whatever `up` and its roles create (databases, snapshots, logs, the
    // control socket) is for this user only; the explicit modes below do
    // not depend on it.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let t = load_topology(&args)?;
    let data_dir = std::path::absolute(&t.data_dir).unwrap_or_else(|_| t.data_dir.clone());
    let files = SharedFiles::under(&data_dir, &t);
    prepare_files(&t, &files, args.host.as_deref())?;
    super::app::prepare_releases(&t, &files, args.host.as_deref())?;
    let roles = derive(&t, &files, args.host.as_deref());
    if roles.is_empty() {
        bail!("no roles to run on this host");
    }
    check_ports(&roles)?;
    // `[firewall] manage = true`: this host's firewall before its roles.
    let remove_firewall_on_stop = crate::firewall::install_for_up(&t, args.host.as_deref())?;
    let backups = crate::backup_status::prepare(&t, &files, &roles)?;
    // A program that cannot start is reported here, naming its roles; the
    // rest of the topology starts anyway (the site answers without them).
    for problem in super::app::topology_problems(&t) {
        eprintln!("bulwark up: {problem}");
    }
    let exe = std::env::current_exe().context("locating the bulwark binary")?;
    let mut specs = Vec::new();
    let log_archive = crate::backup_status::log_archive(&t, &files);
    for r in &roles {
        std::fs::write(&r.config_path, &r.config).with_context(|| format!("writing {}", r.config_path.display()))?;
        let archive_args = match &log_archive {
            Some((node, dir)) if *node == r.placed.name => vec!["--archive-log".into(), dir.display().to_string()],
            _ => Vec::new(),
        };
        specs.push(ChildSpec {
            name: r.placed.name.clone(),
            kind: r.placed.kind,
            host: r.placed.host.clone(),
            stage: r.placed.kind.stage(),
            program: exe.clone(),
            args: vec![
                "--log-level".into(),
                log_level.into(),
                r.placed.kind.name().into(),
                "-c".into(),
                r.config_path.display().to_string(),
            ]
            .into_iter()
            .chain(archive_args)
            .collect(),
            log_path: data_dir.join("logs").join(format!("{}.log", r.placed.name)),
            readiness: readiness(&r.placed, role_tls(&t, &files, &r.certificate_of)?),
        });
    }
    let policy = RestartPolicy {
        initial_backoff: t.restart.initial_backoff,
        max_backoff: t.restart.max_backoff,
        ..Default::default()
    };
    // One thread: children get PR_SET_PDEATHSIG, which fires when the
    // spawning *thread* exits, so spawn only from the main thread.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let sup = Supervisor::new(specs, policy);
        let stop = CancellationToken::new();
        tokio::spawn(super::shutdown_on_signal(stop.clone()));
        let sock = control_socket(&data_dir, args.host.as_deref());
        sup.serve_control(&sock, stop.child_token()).await?;
        println!("bulwark up: {} role(s) of topology `{}`, data in {}", roles.len(), t.name, data_dir.display());
        // Any role's certificate of this host opens the database nodes'
        // `/primary` (mutual TLS), wherever they run.
        let probe_tls = role_tls(&t, &files, &roles[0].certificate_of)?;
        let started = start(&sup, &t, &roles, probe_tls.as_ref(), &stop).await;
        if let Err(e) = started {
            eprintln!("bulwark up: {e:#}");
            sup.shutdown().await;
            let _ = std::fs::remove_file(&sock);
            return Ok(1);
        }
        if stop.is_cancelled() {
            sup.shutdown().await;
            let _ = std::fs::remove_file(&sock);
            return Ok(0);
        }
        // Machine-readable: every role's listeners, as `name` or `name.listener`.
        let mut listeners = Vec::new();
        let mut backup_thread = None;
        if let Some(b) = backups {
            if let Some(a) = b.address() {
                println!("  scheduled backups: status on http://{a}/v1/status");
                listeners.push(("backup.http".to_string(), a));
            }
            backup_thread = Some(crate::backup_status::start(b, stop.child_token())?);
        }
        print_summary(&sup, &t, &files, &roles);
        for c in sup.status() {
            for (l, a) in &c.listeners {
                if let Ok(addr) = a.parse() {
                    listeners.push((format!("{}.{l}", c.name), addr));
                }
            }
        }
        super::announce("up", &listeners);
        stop.cancelled().await;
        println!("bulwark up: shutting down (lb, web, app, then db)");
        sup.shutdown().await;
        let _ = std::fs::remove_file(&sock);
        if remove_firewall_on_stop {
            crate::firewall::remove_after_up();
        }
        if let Some(t) = backup_thread {
            let _ = t.join();
        }
        println!("bulwark up: stopped");
        Ok(0)
    })
}

async fn start(
    sup: &Supervisor,
    t: &Topology,
    roles: &[bulwark_cluster::derive::DerivedRole],
    tls: Option<&bulwark_mtls::MutualTls>,
    stop: &CancellationToken,
) -> Result<()> {
    let mut progress = |s: &str| println!("  {s}");
    let mut failing = Vec::new();
    for stage in sup.stages() {
        if stop.is_cancelled() {
            return Ok(());
        }
        tokio::select! {
            r = sup.start_stage(stage, &mut progress) => failing.extend(r?),
            _ = stop.cancelled() => return Ok(()),
        }
        if stage == RoleKind::Db.stage() {
            // Apps need a primary: wait for the database quorum.
            let dbs: Vec<(String, SocketAddr)> =
                t.of_kind(RoleKind::Db).into_iter().map(|p| (p.name, p.addr)).collect();
            if !dbs.is_empty() && roles.iter().any(|r| r.placed.kind != RoleKind::Db) {
                let primary = wait_for_primary(&dbs, tls, stop).await?;
                println!("  database quorum reached: {primary} is the primary");
            }
        }
    }
    if !failing.is_empty() {
        eprintln!(
            "bulwark up: {} failing: the rest of the site runs without them; they keep trying (see `bulwark status` and their logs)",
            failing.join(", ")
        );
    }
    Ok(())
}

async fn wait_for_primary(
    dbs: &[(String, SocketAddr)],
    tls: Option<&bulwark_mtls::MutualTls>,
    stop: &CancellationToken,
) -> Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        for (name, addr) in dbs {
            if let Ok((200, _)) = bulwark_cluster::http_get(*addr, "/primary", None, tls, Duration::from_secs(1)).await
            {
                return Ok(name.clone());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no database primary was elected within 60 s (see the db logs under logs/)");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.cancelled() => bail!("interrupted"),
        }
    }
}

fn print_summary(sup: &Supervisor, t: &Topology, files: &SharedFiles, roles: &[bulwark_cluster::derive::DerivedRole]) {
    println!();
    println!("{} is up.", t.name);
    // One line per lb instance (its extra processes share its ports).
    for r in roles.iter().filter(|r| r.placed.kind == RoleKind::Lb && r.placed.admin.is_some()) {
        let p = &r.placed;
        match p.https {
            Some(https) => {
                println!(
                    "  site:       https://{}/  (self-signed certificate: {})",
                    host_port(https),
                    files.cert.display()
                );
                println!("              http://{}/ redirects there", host_port(p.addr));
            }
            None => println!("  site:       http://{}/", host_port(p.addr)),
        }
        if let Some(a) = p.admin {
            println!("  dashboard:  http://{}/dashboard", host_port(a));
            println!("              admin token: in {} (mode 0600); the page asks for it", files.admin_token.display());
        }
    }
    println!();
    println!("  {:<6} {:<9} {:<5} {:<22} {:<8} PID", "ROLE", "HOST", "KIND", "ADDRESS", "STATE");
    for c in sup.status() {
        let addr = c.listeners.values().next().cloned().unwrap_or_default();
        println!(
            "  {:<6} {:<9} {:<5} {:<22} {:<8} {}",
            c.name,
            c.host,
            c.kind.name(),
            addr,
            c.state,
            c.pid.unwrap_or(0)
        );
    }
    println!();
    println!(
        "  logs in {}/logs; `bulwark status`, `bulwark stop NODE`, `bulwark start NODE`; Ctrl-C stops everything.",
        files.data_dir.display()
    );
}

fn host_port(a: SocketAddr) -> String {
    if a.ip().is_loopback() && a.is_ipv4() {
        format!("localhost:{}", a.port())
    } else {
        a.to_string()
    }
}

fn ask(args: &ControlArgs, req: ControlRequest) -> Result<ControlReply> {
    let sock = control_socket(&args.data_dir, args.host.as_deref());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(control_request(&sock, &req)).with_context(|| {
        format!("no running `bulwark up` answers on {} (is it running with this --data-dir?)", sock.display())
    })
}

/// `ask`, for requests whose refusal ends the command (`status`).
fn ask_ok(args: &ControlArgs, req: ControlRequest) -> Result<ControlReply> {
    let reply = ask(args, req)?;
    if !reply.ok {
        bail!("{}", reply.error.unwrap_or_else(|| "the supervisor refused the request".into()));
    }
    Ok(reply)
}

pub fn stop_or_start(args: ControlArgs, node: String, start: bool) -> Result<i32> {
    let req =
        if start { ControlRequest::Start { node: node.clone() } } else { ControlRequest::Stop { node: node.clone() } };
    let reply = ask(&args, req)?;
    if !reply.ok {
        eprintln!("bulwark: {}", reply.error.unwrap_or_default());
        return Ok(1);
    }
    let c = reply.children.iter().find(|c| c.name == node);
    println!("{node}: {}", c.map(|c| c.state.as_str()).unwrap_or("?"));
    Ok(0)
}

/// `bulwark status`: the supervisor's view joined with the lb's overview
/// (health, db role and lag, req/s).
pub fn status(args: ControlArgs) -> Result<i32> {
    let reply = ask_ok(&args, ControlRequest::Status)?;
    let token = std::fs::read_to_string(args.data_dir.join("admin.token")).unwrap_or_default();
    let overview_of = |c: &bulwark_cluster::ChildStatus| -> Option<serde_json::Value> {
        let admin = c.listeners.get("admin")?.parse::<SocketAddr>().ok()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        let (code, body) = rt
            .block_on(bulwark_cluster::http_get(
                admin,
                "/api/overview",
                Some(token.trim()),
                None,
                Duration::from_secs(3),
            ))
            .ok()?;
        (code == 200).then(|| serde_json::from_slice::<serde_json::Value>(&body).ok()).flatten()
    };
    let lbs: Vec<(String, serde_json::Value)> = reply
        .children
        .iter()
        .filter(|c| c.kind == RoleKind::Lb && c.state == "ready")
        .filter_map(|c| Some((c.name.clone(), overview_of(c)?)))
        .collect();
    let overview = lbs.first().map(|(_, o)| o.clone()).unwrap_or(serde_json::Value::Null);
    let server = |name: &str| -> Option<serde_json::Value> {
        overview["backends"]
            .as_array()?
            .iter()
            .flat_map(|b| b["servers"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == name)
    };
    let node = |name: &str| -> Option<serde_json::Value> {
        overview["nodes"].as_array()?.iter().find(|n| n["name"] == name).cloned()
    };
    println!(
        "{:<6} {:<9} {:<22} {:<9} {:<10} {:<9} {:<12} {:>8}",
        "ROLE", "HOST", "ADDRESS", "STATE", "HEALTH", "DB ROLE", "LAG", "REQ/S"
    );
    for c in &reply.children {
        let addr = c
            .listeners
            .get("http")
            .or_else(|| c.listeners.get("api"))
            .or_else(|| c.listeners.values().next())
            .cloned()
            .unwrap_or_else(|| "-".into());
        let (mut health, mut db_role, mut lag, mut rps) =
            ("-".to_string(), "-".to_string(), "-".to_string(), "-".to_string());
        if let Some(s) = server(&c.name) {
            health = s["state"].as_str().unwrap_or("-").to_string();
            rps = format!("{:.1}", s["req_per_s"].as_f64().unwrap_or(0.0));
        }
        if let Some(n) = node(&c.name) {
            health = if n["healthy"] == true { "up".into() } else { "down".into() };
            if let Some(db) = n.get("db").filter(|d| !d.is_null()) {
                db_role = db["role"].as_str().unwrap_or("-").to_string();
                lag = format!(
                    "{}e/{:.1}s",
                    db["lag_entries"].as_u64().unwrap_or(0),
                    db["lag_seconds"].as_f64().unwrap_or(0.0)
                );
            }
        }
        if c.kind == RoleKind::Lb && !overview.is_null() {
            health = "up".into();
            rps = format!("{:.1}", overview["lb"]["req_per_s"].as_f64().unwrap_or(0.0));
        }
        println!(
            "{:<6} {:<9} {:<22} {:<9} {:<10} {:<9} {:<12} {:>8}",
            c.name, c.host, addr, c.state, health, db_role, lag, rps
        );
    }
    if overview.is_null() {
        println!("(no load balancer answered: health, db roles and rates are unknown)");
    }
    for (lb, o) in &lbs {
        for v in o["vrrp"].as_array().into_iter().flatten() {
            let addresses: Vec<&str> =
                v["addresses"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
            println!(
                "floating {} ({}) on {lb}: {} at priority {}{}",
                v["name"].as_str().unwrap_or("?"),
                addresses.join(", "),
                v["state"].as_str().unwrap_or("?"),
                v["priority"],
                v["error"].as_str().map(|e| format!(" (error: {e})")).unwrap_or_default()
            );
        }
    }
    Ok(0)
}
