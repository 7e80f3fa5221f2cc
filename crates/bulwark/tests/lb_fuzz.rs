//! Fuzzing the load balancer's HTTP front with generated, mostly malformed
//! requests against a real process: every one gets an answer or a closed
//! connection, none reaches a server as garbage, and the process neither
//! panics nor stops serving.
use bulwark_testkit::config::{BackendConfig, FrontendConfig, LbConfig};
use bulwark_testkit::{get, Backend, Process};
use proptest::prelude::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn request_like() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("HEAD"),
        Just("PUT"),
        Just("G\0T"),
        "[A-Z]{0,12}".prop_map(|s| Box::leak(s.into_boxed_str()) as &str)
    ];
    let target =
        prop_oneof![Just("/".to_string()), "/[ -~]{0,40}", "[ -~]{0,20}", "http://[a-z]{1,8}/[a-z]{0,8}", "\\PC{0,30}"];
    let version = prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0"), Just("HTTP/2.0"), Just("HTTP/1.1 extra"), Just("")];
    let header = prop_oneof![
        "[A-Za-z-]{1,20}: [ -~]{0,40}",
        "Content-Length: -?[0-9]{0,25}",
        "Transfer-Encoding: (chunked|gzip, chunked|identity|chunked, chunked)",
        "Host: [ -~]{0,30}",
        "[ -~]{0,40}",
        "\\PC{0,40}",
    ];
    let eol = prop_oneof![Just("\r\n"), Just("\n"), Just("\r")];
    (method, target, version, prop::collection::vec(header, 0..6), eol, prop::collection::vec(any::<u8>(), 0..64))
        .prop_map(|(m, t, v, headers, eol, body)| {
            let mut out = format!("{m} {t} {v}{eol}").into_bytes();
            for h in headers {
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(eol.as_bytes());
            }
            out.extend_from_slice(eol.as_bytes());
            out.extend_from_slice(&body);
            out
        })
}

#[test]
fn malformed_requests_never_break_the_lb() {
    let a = Backend::start("a");
    let cfg = LbConfig::new()
        .timeout("client_header", Duration::from_millis(500))
        .timeout("client_body", Duration::from_millis(500))
        .frontend(FrontendConfig::http("www", "app").set("access_log", "false"))
        .backend(BackendConfig::new("app").server("a", a.addr));
    let lb = Process::start("lb", &cfg.to_toml());
    let www = lb.addr("www");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 150, ..ProptestConfig::default() });
    runner
        .run(&request_like(), |raw| {
            let mut s = TcpStream::connect(www).expect("the lb accepts connections");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(&raw);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            if !answer.is_empty() {
                let text = String::from_utf8_lossy(&answer);
                prop_assert!(text.starts_with("HTTP/1."), "not an HTTP answer: {text:?}");
            }
            Ok(())
        })
        .unwrap();
    // Still healthy, no panic anywhere.
    let r = get(www, "/").unwrap();
    assert_eq!(r.status, 200);
    assert!(!lb.logs().contains("panicked"), "{}", lb.logs());
}
