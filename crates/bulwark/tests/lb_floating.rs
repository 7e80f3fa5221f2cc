//! Two `bulwark lb` processes on two hosts (network namespaces on one
//! bridge) share a floating address with VRRP; clients talk only to that
//! address. The test re-runs itself inside private network and mount
//! namespaces (`unshare`, root), so the host's network is never touched.
//!
//! Proves, through real processes and signals: the higher priority holds
//! the address; an lb whose servers are all down hands it to the peer
//! (health tracking, no script); a clean stop (SIGTERM, as `bulwark stop`
//! sends) hands it over at once with priority 0; the admin listener shows
//! the state in `/api/overview`, `/metrics` and on the dashboard.

use bulwark_testkit::config::{quick_http_check, BackendConfig, FrontendConfig, HealthCheck, LbConfig};
use bulwark_testkit::netns::{isolated, private_run_netns, sh};
use bulwark_testkit::{get, metric_value, wait_until, Backend, Process};
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::process::Command;

const VIP: &str = "10.9.0.100";
const BRIDGE: &str = "10.9.0.254";
const TOKEN: &str = "floating-test-token";

/// Hosts `a` (10.9.0.1) and `b` (10.9.0.2) on a bridge whose own address
/// (10.9.0.254) is where the servers and the client live.
fn hosts() {
    private_run_netns();
    sh("ip", &["link", "set", "lo", "up"]);
    sh("ip", &["link", "add", "br0", "type", "bridge"]);
    sh("ip", &["addr", "add", &format!("{BRIDGE}/24"), "dev", "br0"]);
    sh("ip", &["link", "set", "br0", "up"]);
    for (ns, ip) in [("a", "10.9.0.1/24"), ("b", "10.9.0.2/24")] {
        let veth = format!("v-{ns}");
        sh("ip", &["netns", "add", ns]);
        sh("ip", &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        sh("ip", &["link", "set", &veth, "master", "br0", "up"]);
        sh("ip", &["-n", ns, "addr", "add", ip, "dev", "eth0"]);
        sh("ip", &["-n", ns, "link", "set", "eth0", "up"]);
        sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
    }
}

fn holds_vip(ns: &str) -> bool {
    let out = Command::new("ip").args(["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP}/"))
}

fn lb(ns: &str, priority: u8, server: SocketAddr) -> Process {
    let config = LbConfig::new()
        .admin_str("bind", "0.0.0.0:9100")
        .admin_str("token", TOKEN)
        .frontend(FrontendConfig::http("www", "web").set_str("bind", "0.0.0.0:8080"))
        .backend(
            BackendConfig::new("web")
                .health_check(&HealthCheck { fall: 1, ..quick_http_check("/health") })
                .server(&format!("web-{ns}"), server),
        )
        .set(
            "vrrp",
            &format!(
                r#"[{{ name = "www", interface = "eth0", vrid = 51, priority = {priority}, advert_interval = "100ms", addresses = ["{VIP}/24"] }}]"#
            ),
        )
        .to_toml();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(bulwark_testkit::bulwark_bin()).arg("lb").arg("-c").arg(&path);
    Process::spawn(cmd, dir, path)
}

/// Which server answered a request sent to the floating address.
fn served_by() -> Option<String> {
    let r = get(format!("{VIP}:8080").parse().unwrap(), "/").ok()?;
    (r.status == 200).then(|| r.header("x-server").unwrap_or_default().to_string())
}

fn admin(ns_ip: &str, path: &str) -> String {
    let addr: SocketAddr = format!("{ns_ip}:9100").parse().unwrap();
    let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n");
    bulwark_testkit::raw_request(addr, raw.as_bytes()).unwrap().text()
}

#[test]
fn the_floating_address_follows_health_and_a_clean_stop() {
    if !isolated("the_floating_address_follows_health_and_a_clean_stop") {
        return;
    }
    hosts();
    let server_a = Backend::start_on("server-a", format!("{BRIDGE}:0").parse().unwrap());
    let server_b = Backend::start_on("server-b", format!("{BRIDGE}:0").parse().unwrap());
    let mut a = lb("a", 150, server_a.addr);
    let mut b = lb("b", 120, server_b.addr);

    wait_until("a to hold the floating address", || holds_vip("a") && !holds_vip("b"));
    wait_until("requests to the floating address to reach a's server", || served_by().as_deref() == Some("server-a"));
    let overview: serde_json::Value = serde_json::from_str(&admin("10.9.0.1", "/api/overview")).unwrap();
    assert_eq!(overview["vrrp"][0]["state"], "master", "{overview}");
    let metrics = admin("10.9.0.2", "/metrics");
    assert_eq!(metric_value(&metrics, "bulwark_vrrp_state", &[("name", "www")]), 1.0, "b is backup");
    // The dashboard (a real browser, inside these namespaces) shows it too.
    let browser = bulwark_testkit::browser::Browser::launch();
    let page = browser.open(&format!("http://10.9.0.1:9100/dashboard?token={TOKEN}"));
    page.wait_for("document.querySelector('[data-floating=\"www\"]')?.dataset.vrrpState === 'master'");
    let text = page.eval("document.querySelector('[data-floating=\"www\"]').innerText");
    assert!(text.as_str().unwrap().contains(&format!("{VIP}/24")), "{text}");
    drop(page);
    drop(browser);

    // a's only server fails: a advertises 150 - 50 = 100 < 120, b takes over.
    server_a.set_healthy(false);
    wait_until("b to take the address from an lb that cannot serve", || holds_vip("b") && !holds_vip("a"));
    wait_until("requests to reach b's server", || served_by().as_deref() == Some("server-b"));
    assert!(a.logs().contains("priority changed by health tracking"), "{}", a.logs());

    // a's server is back: a preempts.
    server_a.set_healthy(true);
    wait_until("a to take the address back", || holds_vip("a") && !holds_vip("b"));

    // A clean stop of the master: priority 0, b holds the address at once.
    a.signal(Signal::SIGTERM);
    a.wait_exit();
    wait_until("b to take over after a's clean stop", || holds_vip("b") && !holds_vip("a"));
    wait_until("requests to reach b's server again", || served_by().as_deref() == Some("server-b"));
    let metrics = admin("10.9.0.2", "/metrics");
    assert_eq!(metric_value(&metrics, "bulwark_vrrp_state", &[("name", "www")]), 2.0, "b is master");
    assert!(metric_value(&metrics, "bulwark_vrrp_adverts_received_total", &[("name", "www")]) > 0.0);
    assert_eq!(metric_value(&metrics, "bulwark_vrrp_bad_packets_total", &[("name", "www")]), 0.0);
    b.terminate();
    assert!(!holds_vip("b"), "a clean stop leaves the address behind");
}
