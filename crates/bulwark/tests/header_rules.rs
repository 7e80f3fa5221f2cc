//! Header rules on real processes: an lb TLS frontend that sets request
//! headers from the client's address and TLS facts, removes others, and
//! rewrites responses (error pages too), seen by curl; and the web tier's
//! per-route rules with its security-headers preset.
use bulwark_testkit::config::{BackendConfig, FrontendConfig, LbConfig, WebConfig};
use bulwark_testkit::{request, Backend, Process};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-sS", "--max-time", "20", "-D", "-"]).args(args).output().expect("curl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

fn lb_config(cert: &str, key: &str, server: SocketAddr) -> String {
    let headers = concat!(
        r#"{ request_remove = ["X-Debug"], "#,
        r#"request_set = { "X-Client" = "$remote_addr", "X-TLS" = "$tls_version $tls_alpn $tls_sni", "X-Env" = "prod" }, "#,
        r#"request_add = { "X-Tag" = "from-lb" }, "#,
        r#"response_remove = ["X-Server"], "#,
        r#"response_set = { "X-Frame-Options" = "DENY", "X-Seen-Scheme" = "$scheme" } }"#,
    );
    let https = FrontendConfig::http("https", "app").tls(Path::new(cert), Path::new(key)).set("headers", headers);
    LbConfig::new().frontend(https).backend(BackendConfig::new("app").server("a", server)).to_toml()
}

#[test]
fn lb_rules_set_remove_and_add_with_client_and_tls_facts() {
    let app = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = bulwark_lb::tls::ensure_self_signed(dir.path(), &["localhost".to_string()]).unwrap();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let lb = Process::start("lb", &lb_config(&cert, &key, app.addr));
    let port = lb.addr("https").port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}/echo");
    let common =
        ["--cacert", &cert, "--resolve", &resolve, "-H", "X-Debug: 1", "-H", "X-Env: dev", "-H", "X-Tag: mine"];

    for (version, alpn) in [("--http2", "h2"), ("--http1.1", "http/1.1")] {
        let out = curl(&[&common[..], &[version, &url]].concat());
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        // What the server received (the backend echoes its request headers).
        assert!(body.contains("x-client: 127.0.0.1\n"), "{body}");
        assert!(body.contains(&format!("x-tls: tlsv1.3 {alpn} localhost\n")), "{body}");
        assert!(body.contains("x-env: prod\n"), "set replaces the client's: {body}");
        assert!(body.contains("x-tag: mine\n") && body.contains("x-tag: from-lb\n"), "add appends: {body}");
        assert!(!body.contains("x-debug"), "{body}");
        // What the client received.
        assert!(head.contains("x-frame-options: deny"), "{head}");
        assert!(head.contains("x-seen-scheme: https"), "{head}");
        assert!(!head.contains("x-server"), "{head}");
    }

    // An error page of the lb gets the response rules too.
    drop(app);
    let out = curl(&["--cacert", &cert, "--resolve", &resolve, &url]);
    assert!(out.starts_with("http/1.1 502") || out.starts_with("http/2 502"), "{out}");
    assert!(out.contains("x-frame-options: deny"), "{out}");
}

#[test]
fn a_tls_fact_on_a_plain_frontend_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(
        &path,
        "[[frontend]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"app\"\n[frontend.headers]\nrequest_set = { \"X-TLS\" = \"$tls_cipher\" }\n[[backend]]\nname = \"app\"\n[[backend.server]]\nname = \"a\"\naddress = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let out = Command::new(bulwark_testkit::bulwark_bin()).args(["lb", "-c"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("frontend[0].headers") && err.contains("no tls"), "{err}");
}

#[test]
fn web_route_rules_and_the_security_preset() {
    let app = Backend::start("app1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>hi</h1>\n").unwrap();
    std::fs::write(dir.path().join("data.txt"), "plain\n").unwrap();
    let config = WebConfig::new(dir.path())
        .set("security_headers", r#"{ enabled = true, content_security_policy = "default-src 'self'" }"#)
        .proxy_with(
            "/api/",
            &[app.addr],
            &[("headers", r#"{ request_set = { "X-Route" = "api" }, response_remove = ["X-Server"] }"#)],
        )
        .to_toml();
    let web = Process::start("web", &config);
    let http = web.addr("http");
    let r = request(http, "GET", "/api/echo", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("x-route: api"), "{}", r.text());
    assert_eq!(r.header("x-server"), None);
    for resp in [r, request(http, "GET", "/data.txt", &[], b"").unwrap()] {
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"), "{:?}", resp.headers);
        assert_eq!(resp.header("referrer-policy"), Some("strict-origin-when-cross-origin"), "{:?}", resp.headers);
        assert_eq!(resp.header("x-frame-options"), Some("SAMEORIGIN"), "{:?}", resp.headers);
        assert_eq!(resp.header("content-security-policy"), Some("default-src 'self'"), "{:?}", resp.headers);
    }
}
