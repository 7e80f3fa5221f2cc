//! Compression of proxied pages on a real `bulwark web` in front of a real
//! application server (Python's `http.server`): curl and headless
//! Chromium are handed `content-encoding: br`, and the page renders. The
//! same through a `bulwark lb` frontend with `[frontend.compression]`.
use bulwark_testkit::browser::Browser;
use bulwark_testkit::config::{BackendConfig, FrontendConfig, LbConfig, WebConfig};
use bulwark_testkit::Process;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `python3 -m http.server` on port 0, serving `dir`; killed on drop.
struct PythonServer {
    child: Child,
    addr: SocketAddr,
}

impl PythonServer {
    fn start(dir: &Path) -> PythonServer {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = line.split(" port ").nth(1).and_then(|r| r.split_whitespace().next()).expect(&line);
        PythonServer { child, addr: format!("127.0.0.1:{port}").parse().unwrap() }
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn page() -> String {
    let filler = "<p>Every line of this page is the same, so it compresses well.</p>\n".repeat(200);
    format!(
        "<!doctype html><html><head><title>compressed</title></head><body>\
         <h1 id=\"title\">Served compressed</h1>\n{filler}\
         <script>document.body.dataset.rendered = 'yes';</script></body></html>\n"
    )
}

#[test]
fn curl_and_chromium_get_brotli_from_a_proxied_page() {
    let app_root = tempfile::tempdir().unwrap();
    std::fs::create_dir(app_root.path().join("api")).unwrap();
    std::fs::write(app_root.path().join("api/page.html"), page()).unwrap();
    let app = PythonServer::start(app_root.path());
    let web_root = tempfile::tempdir().unwrap();
    let config = WebConfig::new(web_root.path()).set("compression", "{ enabled = true }").proxy("/api/", &[app.addr]);
    let web = Process::start("web", &config.to_toml());
    let url = format!("http://{}/api/page.html", web.addr("http"));

    // curl asking for Brotli: compressed on the wire, the page once decoded.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D", "-", "--compressed", "-H", "Accept-Encoding: br", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let head = head.to_lowercase();
    assert!(head.contains("content-encoding: br"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(body, page());
    // Bytes on the wire, undecoded.
    let raw = Command::new("curl").args(["-sS", "-H", "Accept-Encoding: br", &url]).output().unwrap().stdout;
    assert!(raw.len() < page().len() / 10, "{} bytes for {}", raw.len(), page().len());
    // gzip for a client without Brotli; nothing for one without either.
    let gz =
        Command::new("curl").args(["-sS", "-D", "-", "-o", "/dev/null", "-H", "Accept-Encoding: gzip", &url]).output();
    assert!(String::from_utf8_lossy(&gz.unwrap().stdout).to_lowercase().contains("content-encoding: gzip"));
    let plain = Command::new("curl").args(["-sS", "-D", "-", "-o", "/dev/null", &url]).output().unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).to_lowercase().contains("content-encoding"));

    // Headless Chromium: the page renders and came as Brotli.
    let browser = Browser::launch();
    let tab = browser.open(&url);
    tab.wait_for("document.body && document.body.dataset.rendered === 'yes'");
    assert_eq!(tab.eval("document.getElementById('title').textContent"), "Served compressed");
    let sizes = tab.eval(
        "(() => { const n = performance.getEntriesByType('navigation')[0]; return [n.encodedBodySize, n.decodedBodySize]; })()",
    );
    let (encoded, decoded) = (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap());
    assert_eq!(decoded, page().len() as u64);
    assert!(encoded < decoded / 10, "{sizes}");
    let coding = tab.eval("fetch(location.href, {cache: 'no-store'}).then(r => r.headers.get('content-encoding'))");
    assert_eq!(coding, "br", "Chromium's Accept-Encoding: {}", tab.eval("navigator.userAgent"));
}

/// `curl -D -` of `url` with extra arguments: (head in lower case, body).
fn curl(url: &str, args: &[&str]) -> (String, Vec<u8>) {
    let out = Command::new("curl").args(["-sS", "--max-time", "20", "-D", "-"]).args(args).arg(url).output().unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let split = out.stdout.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    (String::from_utf8_lossy(&out.stdout[..split]).to_lowercase(), out.stdout[split + 4..].to_vec())
}

#[test]
fn the_lb_compresses_when_a_frontend_asks_for_it() {
    let app_root = tempfile::tempdir().unwrap();
    std::fs::write(app_root.path().join("page.html"), page()).unwrap();
    std::fs::write(app_root.path().join("image.png"), page()).unwrap();
    let app = PythonServer::start(app_root.path());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = bulwark_lb::tls::ensure_self_signed(dir.path(), &["localhost".to_string()]).unwrap();
    let config = LbConfig::new()
        .frontend(FrontendConfig::http("compressed", "app").set("compression", "{ enabled = true }"))
        .frontend(FrontendConfig::http("https", "app").tls(&cert, &key).set("compression", "{ enabled = true }"))
        .frontend(FrontendConfig::http("plain", "app"))
        .backend(BackendConfig::new("app").server("a", app.addr))
        .to_toml();
    let lb = Process::start("lb", &config);
    let url = format!("http://{}/page.html", lb.addr("compressed"));

    let (head, body) = curl(&url, &["--compressed", "-H", "Accept-Encoding: br"]);
    assert!(head.contains("content-encoding: br"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(String::from_utf8(body).unwrap(), page());
    let (_, raw) = curl(&url, &["-H", "Accept-Encoding: br"]);
    assert!(raw.len() < page().len() / 10, "{} bytes for {}", raw.len(), page().len());
    let (head, body) = curl(&url, &["--compressed", "-H", "Accept-Encoding: gzip"]);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert_eq!(String::from_utf8(body).unwrap(), page());

    // Not a listed type, not accepted, or asked not to transform: as it came.
    let image = format!("http://{}/image.png", lb.addr("compressed"));
    let (head, body) = curl(&image, &["-H", "Accept-Encoding: br, gzip"]);
    assert!(!head.contains("content-encoding") && head.contains("content-length"), "{head}");
    assert_eq!(body, page().as_bytes());
    let (head, _) = curl(&url, &["-H", "Accept-Encoding: identity"]);
    assert!(!head.contains("content-encoding") && head.contains("vary: accept-encoding"), "{head}");
    // A HEAD is answered as the server did.
    let (head, _) = curl(&url, &["-I", "-H", "Accept-Encoding: br"]);
    assert!(!head.contains("content-encoding"), "{head}");

    // Over HTTP/2 on a TLS frontend too.
    let port = lb.addr("https").port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let https = format!("https://localhost:{port}/page.html");
    let cafile = cert.display().to_string();
    let (head, body) = curl(
        &https,
        &["--http2", "--cacert", &cafile, "--resolve", &resolve, "--compressed", "-H", "Accept-Encoding: br"],
    );
    assert!(head.starts_with("http/2 200") && head.contains("content-encoding: br"), "{head}");
    assert_eq!(String::from_utf8(body).unwrap(), page());

    // Off by default: the other frontend passes the page on untouched.
    let plain = format!("http://{}/page.html", lb.addr("plain"));
    let (head, body) = curl(&plain, &["-H", "Accept-Encoding: br, gzip"]);
    assert!(!head.contains("content-encoding") && !head.contains("vary"), "{head}");
    assert_eq!(String::from_utf8(body).unwrap(), page());
}
