//! WebSockets end to end on the real `bulwark up` topology, with a client
//! nobody here wrote (Python's `websockets`, Debian's python3-websockets:
//! `scripts/install-test-deps.sh`): through the lb over TLS, the web tier
//! and the app's echo endpoint, bytes both ways; an app server killed
//! mid-stream closes the client's socket and the next one lands on the
//! other app server.
use bulwark_testkit::config::{BackendConfig, FrontendConfig, LbConfig, WebConfig};
use bulwark_testkit::{bulwark_bin, wait_until, Process};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/websocket/client.py")
}

fn python_websockets_installed() {
    let ok = Command::new(PYTHON).args(["-c", "import websockets"]).status().is_ok_and(|s| s.success());
    assert!(ok, "Debian's python3-websockets is not installed: run scripts/install-test-deps.sh");
}

struct Site {
    _up: Process,
    data: tempfile::TempDir,
    url: String,
    ca: PathBuf,
}

fn up() -> Site {
    python_websockets_installed();
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bulwark_bin());
    cmd.args(["up", "--port-base", "0", "--data-dir"]).arg(data.path());
    let up = Process::spawn(cmd, tempfile::tempdir().unwrap(), data.path().join("none"));
    let https = up.addr("lb1.https");
    let url = format!("wss://localhost:{}/api/ws/echo", https.port());
    let ca = data.path().join("tls/cert.pem");
    Site { _up: up, data, url, ca }
}

/// The client, running; its stdout read line by line.
struct Client {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Client {
    fn start(site: &Site, args: &[&str]) -> Client {
        Client::start_at(&site.url, &site.ca, args)
    }

    fn start_at(url: &str, ca: &Path, args: &[&str]) -> Client {
        let mut child = Command::new(PYTHON)
            .arg(client_script())
            .arg(url)
            .arg(ca)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Client { child, lines }
    }

    /// The next line the client prints (the client bounds every wait).
    fn line(&mut self) -> String {
        match self.lines.next() {
            Some(Ok(l)) => l,
            other => panic!("the client ended early ({other:?}): {:?}", self.child.wait()),
        }
    }

    fn finish(mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "client exited with {status}");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL a role through the supervisor, which keeps it down.
fn kill_role(data: &Path, role: &str) {
    let s = UnixStream::connect(data.join("control.sock")).expect("control socket");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(format!("{{\"cmd\":\"kill\",\"node\":\"{role}\"}}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    assert!(reply.contains("\"ok\":true"), "kill {role}: {reply}");
}

#[test]
fn a_thousand_messages_each_way_through_lb_tls_web_and_app() {
    let site = up();
    let mut client = Client::start(&site, &["echo", "1000"]);
    let served = client.line();
    assert!(served == "served_by app1" || served == "served_by app2", "{served}");
    // 1,000 text and 1,000 binary messages, each echoed unchanged.
    assert_eq!(client.line(), "echoed 1000");
    assert_eq!(client.line(), "closed 1000", "a clean close handshake through both proxies");
    client.finish();
}

#[test]
fn an_app_server_killed_mid_stream_closes_the_socket_and_the_next_lands_on_the_other() {
    let site = up();
    let mut client = Client::start(&site, &["failover"]);
    let first = client.line();
    let first = first.strip_prefix("served_by ").unwrap_or_else(|| panic!("{first}")).to_string();
    assert_eq!(client.line(), "ready");
    kill_role(site.data.path(), &first);
    let closed = client.line();
    assert!(closed.starts_with("closed "), "the client must see its socket close: {closed}");
    // Reconnect only now that the supervisor holds the killed server down.
    client.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let second = client.line();
    let other = if first == "app1" { "app2" } else { "app1" };
    assert_eq!(second, format!("served_by {other}"));
    assert_eq!(client.line(), "echoed 1");
    client.finish();
}

/// A plain-HTTP lb frontend and a web tier of its own (header and
/// keep-alive timeouts 1 s, tunnel idle timeout 3 s) in front of the topology's app1: a tunnel
/// outlives the web tier's keep-alive timeout, is closed by its own idle
/// timeout, and is counted in the lb's metrics.
#[test]
fn plain_lb_tunnels_outlive_keepalive_and_end_at_their_idle_timeout() {
    let site = up();
    let data = site.data.path();
    let app1 = site._up.addr("app1.http");
    let config = WebConfig::new(&data.join("site"))
        .set_str("upstream_secret_file", &data.join("secrets/web-app").display().to_string())
        .timeout("header", Duration::from_secs(1))
        .timeout("keepalive", Duration::from_secs(1))
        .proxy_with("/api/", &[app1], &[("tunnel_timeout", r#""3s""#)]);
    let web = Process::start("web", &config.to_toml());
    let cfg = LbConfig::new()
        .admin()
        .frontend(FrontendConfig::http("plain", "web"))
        .backend(BackendConfig::new("web").server("w", web.addr("http")));
    let lb = Process::start("lb", &cfg.to_toml());
    let url = format!("ws://127.0.0.1:{}/api/ws/echo", lb.addr("plain").port());
    let mut client = Client::start_at(&url, Path::new("-"), &["echo", "100"]);
    assert_eq!(client.line(), "served_by app1");
    assert_eq!(client.line(), "echoed 100");
    assert_eq!(client.line(), "closed 1000");
    client.finish();

    let mut client = Client::start_at(&url, Path::new("-"), &["idle", "1.5"]);
    assert_eq!(client.line(), "served_by app1");
    assert_eq!(client.line(), "alive after 1.5", "the web tier's header and keep-alive timeouts must not end a tunnel");
    let closed = client.line();
    assert!(closed.starts_with("closed "), "{closed}");
    client.finish();
    assert!(web.logs().contains("tunnel idle for 3s"), "{}", web.logs());

    let metric = |name: &str| {
        let text = bulwark_testkit::get(lb.addr("admin"), "/metrics").unwrap().text();
        bulwark_testkit::metric_value(&text, name, &[("server", "w")])
    };
    assert_eq!(metric("bulwark_lb_tunnels_total"), 2.0);
    // Both sides have closed: the tunnel is no longer open.
    wait_until("no tunnel open", || metric("bulwark_lb_tunnels_open") == 0.0);
}
