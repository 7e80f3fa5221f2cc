//! `X-Request-Id` on the real `bulwark up` topology: the lb sets one on
//! every request (replacing a client's) and returns it, and the lb, web
//! and app access logs all name it, so one id finds one request in every
//! tier's log.
use bulwark_testkit::{bulwark_bin, wait_until, Process};
use std::path::Path;
use std::process::Command;

/// `curl -i` through the lb's HTTPS listener: (status line and headers, body).
fn curl(data: &Path, port: u16, path: &str, headers: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "20", "--cacert"])
        .arg(data.join("tls/cert.pem"))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(format!("https://localhost:{port}{path}")).output().expect("curl installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The lines of every log of `roles` (`lb1`, `lb1-2`, ...) naming `id`.
fn lines_naming(data: &Path, roles: &[&str], id: &str) -> Vec<String> {
    roles
        .iter()
        .flat_map(|r| {
            std::fs::read_to_string(data.join(format!("logs/{r}.log")))
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|l| l.contains(id))
        .collect()
}

#[test]
fn one_request_id_is_found_in_the_lb_web_and_app_logs() {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bulwark_bin());
    cmd.args(["up", "--port-base", "0", "--data-dir"]).arg(data.path());
    let up = Process::spawn(cmd, tempfile::tempdir().unwrap(), data.path().join("none"));
    let port = up.addr("lb1.https").port();

    // A client's own id is replaced by a fresh one (the lb trusts none).
    let response = curl(data.path(), port, "/api/messages", &["X-Request-Id: chosen-by-the-client"]);
    assert!(response.starts_with("HTTP/"), "{response}");
    let id = header(&response, "x-request-id").unwrap_or_else(|| panic!("no X-Request-Id: {response}")).to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");

    // The same id in one access line of each tier.
    for (tier, roles) in [("lb", &["lb1", "lb1-2"][..]), ("web", &["web1", "web2"][..]), ("app", &["app1", "app2"][..])]
    {
        wait_until(&format!("the {tier} access line names {id}"), || !lines_naming(data.path(), roles, &id).is_empty());
        let lines = lines_naming(data.path(), roles, &id);
        assert_eq!(lines.len(), 1, "{tier}: {lines:?}");
        assert!(lines[0].contains("/api/messages"), "{tier}: {}", lines[0]);
    }
    let logs: String = std::fs::read_dir(data.path().join("logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(!logs.contains("chosen-by-the-client"), "an untrusted id reached a log");

    // Another request, another id.
    let again = curl(data.path(), port, "/", &[]);
    let second = header(&again, "x-request-id").expect("X-Request-Id on a static page too");
    assert_ne!(second, id);
}
