//! What an operator's machine exposes: the admin listener never serves
//! without a token off loopback, `up` never prints the admin token, the
//! data directory, logs, secrets and keys are private to the user running
//! `up`, and the control socket serves only that user and root, checked
//! with real processes, real files and a real second user (`nobody`).
use bulwark_testkit::config::{BackendConfig, DbConfig, FrontendConfig, LbConfig, RoleKind, TopologyConfig};
use bulwark_testkit::{bulwark_bin, Process, PATIENCE};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// The unprivileged user the refused client runs as.
const NOBODY: u32 = 65534;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).mode() & 0o777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Run `cmd` to its end, bounded by [`PATIENCE`].
fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("{cmd:?} did not end");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The text `check` reads (its errors name a line of it).
fn lb_config(admin: &str) -> String {
    format!(
        "threads = 1\n[admin]\n{admin}\n[[frontend]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"web\"\n\
         [[backend]]\nname = \"web\"\n[[backend.server]]\nname = \"web1\"\naddress = \"127.0.0.1:9\"\n"
    )
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");

    // Public address, no token: `check` and the lb itself refuse, naming
    // the file, line and key.
    std::fs::write(&path, lb_config("bind = \"0.0.0.0:0\"")).unwrap();
    let check = run({
        let mut c = Command::new(bulwark_bin());
        c.arg("check").arg("-c").arg(&path);
        c
    });
    let err = text(&check.stderr);
    assert!(!check.status.success(), "{err}");
    let expected = format!("{}:2: admin.token: required when the admin listener binds a non-loopback", path.display());
    assert!(err.contains(&expected), "{err}");
    let lb = run({
        let mut c = Command::new(bulwark_bin());
        c.arg("lb").arg("-c").arg(&path);
        c
    });
    assert!(!lb.status.success());
    assert!(text(&lb.stderr).contains("admin.token: required"), "{}", text(&lb.stderr));
    assert!(!text(&lb.stdout).contains("\"ready\""), "the lb started: {}", text(&lb.stdout));

    // An empty token is no token.
    std::fs::write(&path, lb_config("bind = \"[::]:0\"\ntoken = \"\"")).unwrap();
    let check = run({
        let mut c = Command::new(bulwark_bin());
        c.arg("check").arg("-c").arg(&path);
        c
    });
    assert!(text(&check.stderr).contains("admin.token: must not be empty"), "{}", text(&check.stderr));

    // With a token file, or on loopback, it is fine.
    for admin in ["bind = \"0.0.0.0:0\"\ntoken_file = \"/etc/bulwark/admin.token\"", "bind = \"127.0.0.1:0\""] {
        std::fs::write(&path, lb_config(admin)).unwrap();
        let check = run({
            let mut c = Command::new(bulwark_bin());
            c.arg("check").arg("-c").arg(&path);
            c
        });
        assert!(check.status.success(), "{admin}: {}", text(&check.stderr));
    }
    // Loopback without a token really serves (to this machine only).
    let lb = LbConfig::new()
        .admin()
        .frontend(FrontendConfig::http("www", "web"))
        .backend(BackendConfig::new("web").server("web1", "127.0.0.1:9".parse().unwrap()));
    let lb = Process::start("lb", &lb.to_toml());
    assert_eq!(bulwark_testkit::get(lb.addr("admin"), "/stats").unwrap().status, 200);
}

/// `up` on a host that runs only the load balancer: its files, its summary
/// and its control socket.
#[test]
fn up_keeps_its_files_and_control_socket_to_its_user() {
    let topo_dir = tempfile::tempdir().unwrap();
    let topo = topo_dir.path().join("topology.toml");
    let config = TopologyConfig::default()
        .host("edge", &[("lb1", RoleKind::Lb)])
        .host("inner", &[("web1", RoleKind::Web), ("app1", RoleKind::App), ("db1", RoleKind::Db)]);
    std::fs::write(&topo, config.to_toml()).unwrap();
    // Left by an earlier run, with loose modes: `up` tightens them.
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o755);
    let token = "earlier-admin-token-0123456789abcdef";
    std::fs::write(data.join("admin.token"), format!("{token}\n")).unwrap();
    chmod(&data.join("admin.token"), 0o644);

    let mut cmd = Command::new(bulwark_bin());
    cmd.args(["up", "--host", "edge", "--port-base", "0", "-c"]).arg(&topo).arg("--data-dir").arg(&data);
    let mut up = Process::spawn(cmd, tempfile::tempdir().unwrap(), topo.clone());

    // The summary shows the dashboard's URL and where the token is, never the token.
    let out = up.stdout_lines().join("\n");
    let admin = up.addr("lb1.admin");
    assert!(out.contains(&format!("dashboard:  http://localhost:{}/dashboard\n", admin.port())), "{out}");
    assert!(out.contains(&format!("admin token: in {} (mode 0600)", data.join("admin.token").display())), "{out}");
    assert!(!out.contains(token) && !out.contains("?token="), "the token is printed:\n{out}");

    for dir in [
        data.clone(),
        data.join("config"),
        data.join("logs"),
        data.join("tls"),
        data.join("site"),
        data.join("secrets"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in ["admin.token", "secrets/lb-web", "secrets/monitor", "tls/key.pem", "logs/lb1.log"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    let sock = data.join("control-edge.sock");
    assert!(std::fs::metadata(&sock).unwrap().file_type().is_socket());
    assert_eq!(mode(&sock), 0o600);

    let status = |uid: Option<u32>| {
        let mut c = Command::new(bulwark_bin());
        c.args(["status", "--host", "edge", "--data-dir"]).arg(&data);
        if let Some(uid) = uid {
            c.uid(uid).gid(NOBODY);
        }
        run(c)
    };
    // The supervisor's own user is served.
    let mine = status(None);
    assert!(mine.status.success(), "{}", text(&mine.stderr));
    assert!(text(&mine.stdout).contains("lb1"), "{}", text(&mine.stdout));
    // Another user cannot even reach the socket through the modes ...
    let other = status(Some(NOBODY));
    assert!(!other.status.success());
    assert!(text(&other.stderr).contains("Permission denied"), "{}", text(&other.stderr));
    // ... and with the modes loosened, the peer-credential check refuses it.
    chmod(base.path(), 0o711);
    chmod(&data, 0o711);
    chmod(&sock, 0o666);
    let other = status(Some(NOBODY));
    let err = text(&other.stderr);
    assert!(!other.status.success(), "uid {NOBODY} was served: {}", text(&other.stdout));
    assert!(
        err.contains(&format!("refused: this control socket serves only uid 0 and root, not uid {NOBODY}")),
        "{err}"
    );
    up.wait_for_log("control socket: refused");
    // The refused client changed nothing: the lb still runs.
    let mine = status(None);
    assert!(mine.status.success() && text(&mine.stdout).contains("ready"), "{}", text(&mine.stdout));

    assert!(up.terminate().success(), "{}", up.logs());
}

#[test]
fn a_database_node_creates_its_data_dir_private() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("db1");
    let cfg = DbConfig::new(1, &data, "0123456789abcdef-secret").bootstrap(true);
    let mut db = Process::start("db", &cfg.to_toml());
    assert_eq!(mode(&data), 0o700);
    db.terminate();
}
