//! The app role running the user's program: the role terminates the web
//! tier's credential in front of it, gives it its address, the database
//! nodes and a credential *file*, forwards its output into the role's log,
//! restarts it when it dies, stops it with SIGTERM then SIGKILL, and
//! reports a program that cannot start (in `bulwark check`, on its failed
//! line, on `/health`) while the role itself stays up.
use bulwark_testkit::config::AppConfig;
use bulwark_testkit::{bulwark_bin, wait_until, Process};
use std::path::Path;
use std::process::Command;

const WEB_APP: &str = "web-app-secret-0123456789";
const APP_DB: &str = "app-db-secret-0123456789";
const ECHO: &str = include_str!("app_program/echo.py");

/// The role `app1` running `exec` (in `workdir`), its database nodes
/// nowhere (the program is what is tested).
fn config(exec: &[&str], workdir: Option<&Path>) -> AppConfig {
    let db_nodes = ["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()];
    AppConfig::new("app1", &db_nodes, WEB_APP).db_secret(APP_DB).program(exec, workdir)
}

/// A role running echo.py from a fresh directory, more `[program]` keys
/// given as TOML values.
fn start_echo(program: &[(&str, &str)]) -> (Process, tempfile::TempDir) {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("echo.py"), ECHO).unwrap();
    let config = config(&["python3", "echo.py", "--bind", "{listen}"], Some(site.path()));
    let config = program.iter().fold(config, |c, (key, raw)| c.program_set(key, raw));
    (Process::start("app", &config.to_toml()), site)
}

fn health(p: &Process) -> (u16, serde_json::Value) {
    match bulwark_testkit::get(p.addr("http"), "/health") {
        Ok(r) => (r.status, serde_json::from_slice(&r.body).unwrap_or_default()),
        Err(_) => (0, serde_json::Value::Null),
    }
}

fn get_with_secret(p: &Process, path: &str) -> bulwark_testkit::HttpResponse {
    bulwark_testkit::request(p.addr("http"), "GET", path, &[("X-Bulwark-Cluster", WEB_APP)], b"").unwrap()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false)
}

#[test]
fn the_program_runs_behind_the_role_and_is_restarted_when_killed() {
    // The probe names the program's own address as its host (a program
    // that checks it, as Django's ALLOWED_HOSTS does, answers it).
    let (mut app, _site) =
        start_echo(&[("env", r#"{ GREETING = "hello", HEALTH_HOST_CHECK = "1" }"#), ("health_path", r#""/ping""#)]);
    wait_until("the program is healthy", || health(&app).0 == 200);
    let (_, h) = health(&app);
    assert_eq!(h["program"]["state"], "healthy", "{h}");
    let pid = h["program"]["pid"].as_i64().unwrap() as i32;

    // Only through the web tier (its credential), which the program never sees.
    let r = bulwark_testkit::get(app.addr("http"), "/hello").unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let r = get_with_secret(&app, "/hello/world?x=1");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(seen["path"], "/hello/world?x=1");
    assert!(seen["headers"].get("x-bulwark-cluster").is_none(), "the program saw the web tier's credential: {seen}");
    let r = bulwark_testkit::request(
        app.addr("http"),
        "POST",
        "/form",
        &[("X-Bulwark-Cluster", WEB_APP), ("Content-Type", "text/plain")],
        b"posted body",
    )
    .unwrap();
    let seen_post: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((seen_post["method"].as_str(), seen_post["body"].as_str()), (Some("POST"), Some("posted body")));

    // Its address, the database nodes and the credential as a file.
    let env = &seen["env"];
    let listen = env["BULWARK_LISTEN"].as_str().unwrap();
    assert!(listen.starts_with("127.0.0.1:"), "{env}");
    assert_eq!(listen.rsplit(':').next(), env["PORT"].as_str());
    assert_eq!(env["BULWARK_DB_NODES"], "127.0.0.1:1,127.0.0.1:2");
    assert_eq!(env["BULWARK_APP_NAME"], "app1");
    assert_eq!(env["GREETING"], "hello");
    assert_eq!(seen["db_secret"], APP_DB);
    let env_text = env.to_string();
    assert!(!env_text.contains(APP_DB) && !env_text.contains(WEB_APP), "a secret in the environment: {env}");
    // `{listen}` in exec became the address.
    app.wait_for_log(&format!("stdout | echo program listening on {listen} (argv ['--bind', '{listen}'])"));
    app.wait_for_log("stderr | access");

    // kill -9: the role notices, reports it, and starts it again.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("a new healthy program", || {
        let (code, h) = health(&app);
        code == 200 && h["program"]["pid"].as_i64() != Some(pid as i64)
    });
    let (_, h) = health(&app);
    assert!(h["program"]["restarts"].as_u64() >= Some(1), "{h}");
    assert!(h["program"]["last_error"].as_str().unwrap_or("").contains("SIGKILL"), "{h}");
    assert_eq!(get_with_secret(&app, "/again").status, 200);
    let new_pid = h["program"]["pid"].as_i64().unwrap() as i32;

    // A clean stop stops the program too.
    let exit = app.terminate();
    assert!(exit.success(), "{exit:?}\n{}", app.logs());
    assert!(!alive(new_pid), "the program outlived the role");
    app.wait_for_log("program stopped");
}

#[test]
fn a_program_that_ignores_sigterm_is_killed_after_stop_grace() {
    let (mut app, _site) = start_echo(&[("env", r#"{ MODE = "ignore_term" }"#), ("stop_grace", r#""1s""#)]);
    wait_until("the program is healthy", || health(&app).0 == 200);
    let pid = health(&app).1["program"]["pid"].as_i64().unwrap() as i32;
    let exit = app.terminate();
    assert!(exit.success(), "{exit:?}\n{}", app.logs());
    assert!(!alive(pid), "the program outlived the role");
    app.wait_for_log("did not exit within stop_grace");
}

/// `bulwark check` on a file, (exit code, stderr).
fn check(path: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(bulwark_bin()).args(["check", "-c"]).arg(path).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn failed_line(app: &Process) -> String {
    wait_until("a failed line", || app.stdout_lines().iter().any(|l| l.contains("\"failed\"")));
    app.stdout_lines().into_iter().find(|l| l.contains("\"failed\"")).unwrap()
}

#[test]
fn a_bad_program_is_named_by_check_and_reported_by_the_role_which_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    // Missing program.
    let missing = dir.path().join("missing.toml");
    std::fs::write(&missing, config(&["no-such-program-4711", "x"], None).to_toml()).unwrap();
    let (code, err) = check(&missing);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("app app1: program.exec[0]: program `no-such-program-4711` not found on PATH"), "{err}");
    let app = Process::start_with("app", &std::fs::read_to_string(&missing).unwrap(), &[]);
    let line = failed_line(&app);
    assert!(line.contains("not found on PATH"), "{line}");
    let (code, h) = health(&app);
    assert_eq!(code, 503, "{h}");
    assert!(h["program"]["last_error"].as_str().unwrap().contains("no-such-program-4711"), "{h}");
    drop(app);

    // Not executable: found, but named as such.
    let script = dir.path().join("site.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let not_exec = dir.path().join("not-exec.toml");
    std::fs::write(&not_exec, config(&[&script.display().to_string()], None).to_toml()).unwrap();
    let (code, err) = check(&not_exec);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not executable"), "{err}");

    // Exits at once: `check` cannot know; the role reports it, with the
    // program's own words in its log, and keeps answering.
    let exits = dir.path().join("exits.toml");
    std::fs::write(&exits, config(&["sh", "-c", "echo cannot import site >&2; exit 3"], None).to_toml()).unwrap();
    let (code, err) = check(&exits);
    assert_eq!(code, Some(0), "{err}");
    let app = Process::start_with("app", &std::fs::read_to_string(&exits).unwrap(), &[]);
    let line = failed_line(&app);
    assert!(line.contains("exited before it answered GET /health (exit code 3)"), "{line}");
    app.wait_for_log("stderr | cannot import site");
    assert_eq!(health(&app).0, 503);

    // A topology's [app] program is named with its role instances.
    let topo = dir.path().join("topology.toml");
    std::fs::write(
        &topo,
        "[app]\nexec = [\"no-such-program-4711\"]\n[[host]]\nname = \"h\"\nrole = [\
         { name = \"lb1\", kind = \"lb\" }, { name = \"web1\", kind = \"web\" }, { name = \"app1\", kind = \"app\" },\
         { name = \"app2\", kind = \"app\" }, { name = \"db1\", kind = \"db\" }]\n",
    )
    .unwrap();
    let (code, err) = check(&topo);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("app1, app2: app.exec[0]: program `no-such-program-4711` not found"), "{err}");
}

#[test]
fn a_program_on_a_unix_socket_gets_a_fresh_private_socket_for_each_start() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let (mut app, _site) = start_echo(&[("socket", r#""unix""#)]);
    wait_until("the program is healthy", || health(&app).0 == 200);
    let (_, h) = health(&app);
    let pid = h["program"]["pid"].as_i64().unwrap() as i32;
    let listen = h["program"]["listen"].as_str().unwrap().to_string();
    let path = std::path::PathBuf::from(listen.strip_prefix("unix:").unwrap_or_else(|| panic!("{h}")));

    // Requests reach it through the socket, with its address in the
    // environment and in `{listen}`.
    let r = get_with_secret(&app, "/over/unix?x=1");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(seen["path"], "/over/unix?x=1");
    let env = &seen["env"];
    assert_eq!(env["BULWARK_LISTEN"], listen.as_str(), "{env}");
    assert_eq!(env["BULWARK_SOCKET"], path.display().to_string().as_str(), "{env}");
    assert!(env.get("PORT").is_none(), "a socket program got a port: {env}");
    app.wait_for_log(&format!("stdout | echo program listening on {listen} (argv ['--bind', '{listen}'])"));
    assert!(std::fs::metadata(&path).unwrap().file_type().is_socket());
    // Only the role and the program's user may enter its directory.
    let dir = path.parent().unwrap().to_path_buf();
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);

    // kill -9: the next start listens on a new socket; the old one is gone.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("a new healthy program", || {
        let (code, h) = health(&app);
        code == 200 && h["program"]["pid"].as_i64() != Some(pid as i64)
    });
    let listen2 = health(&app).1["program"]["listen"].as_str().unwrap().to_string();
    assert_ne!(listen2, listen);
    assert!(!path.exists(), "the dead program's socket was left behind");
    assert_eq!(get_with_secret(&app, "/again").status, 200);

    // A clean stop removes the directory with the socket.
    let exit = app.terminate();
    assert!(exit.success(), "{exit:?}\n{}", app.logs());
    assert!(!dir.exists(), "the socket directory outlived the role");
}

#[test]
fn check_refuses_a_port_for_a_socket_program_and_a_socket_for_a_port_program() {
    let dir = tempfile::tempdir().unwrap();
    for (socket, exec, wants) in [
        ("unix", "{port}", "program.exec: {port} has no value here: with socket = \"unix\" the program gets no port"),
        ("tcp", "{socket}", "program.exec: {socket} has no value here: with socket = \"tcp\" the program gets a port"),
    ] {
        let file = dir.path().join(format!("{socket}.toml"));
        let config = config(&["python3", "echo.py", exec], None).program_set("socket", &format!("\"{socket}\""));
        std::fs::write(&file, config.to_toml()).unwrap();
        let (code, err) = check(&file);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(wants), "{err}");
    }
}

#[test]
fn the_role_talks_only_to_its_program_even_when_the_program_swaps_its_socket() {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    assert!(nix::unistd::geteuid().is_root(), "this test runs the program as another user: run it as root");
    // A socket only root may reach, which a root `connect` through a link
    // would reach all the same.
    let private = tempfile::tempdir().unwrap();
    let helper_path = private.path().join("root-only.sock");
    let helper = std::os::unix::net::UnixListener::bind(&helper_path).unwrap();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = reached.clone();
    std::thread::spawn(move || {
        for conn in helper.incoming().take(100) {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            if conn.read(&mut buf).is_ok_and(|n| n > 0) {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ =
                    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nroot helper");
            }
        }
    });
    // The program runs as nobody: its directory must be readable by it,
    // and its interpreter reachable (Debian's, not one under /root).
    let site = tempfile::tempdir().unwrap();
    std::fs::set_permissions(site.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(site.path().join("echo.py"), ECHO).unwrap();
    std::fs::set_permissions(site.path().join("echo.py"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = config(&["/usr/bin/python3", "echo.py", "--bind", "{listen}"], Some(site.path()))
        .program_set("socket", r#""unix""#)
        .program_set("user", r#""nobody""#)
        .program_set("env", &format!("{{ SWAP_TO = \"{}\" }}", helper_path.display()));
    let app = Process::start("app", &config.to_toml());
    wait_until("the program is healthy", || health(&app).0 == 200);
    let r = get_with_secret(&app, "/swap-socket");
    assert_eq!((r.status, r.text()), (200, "swapped".to_string()));

    // Now its socket is a link to root's: the role connects, sees a
    // listener that is not the program's user, and forwards nothing.
    let r = bulwark_testkit::request(app.addr("http"), "GET", "/after", &[("X-Bulwark-Cluster", WEB_APP)], b"");
    assert!(r.as_ref().map_or(true, |r| !r.text().contains("root helper")), "the role reached another socket: {r:?}");
    app.wait_for_log("not as the program's user");
    // The health probe connects the same careful way: the program is
    // unhealthy, and still nothing reached the root-only socket.
    wait_until("the program is unhealthy", || health(&app).0 == 503);
    assert!(!reached.load(std::sync::atomic::Ordering::SeqCst), "a request reached the root-only socket");
}
