//! A real headless Chromium driven over the Chrome DevTools Protocol, for
//! end-to-end tests of pages the binary serves (the lb dashboard).
//!
//! ```no_run
//! use bulwark_testkit::browser::Browser;
//! let browser = Browser::launch();
//! let page = browser.open("http://127.0.0.1:9100/dashboard");
//! page.wait_for("document.querySelector('[data-node=\"web1\"]') !== null");
//! assert_eq!(page.eval("document.title"), "bulwark · Bulwark dashboard");
//! page.screenshot(std::path::Path::new("/tmp/dashboard.png"));
//! ```
//!
//! The browser is Debian's `/usr/bin/chromium` (`BULWARK_CHROMIUM`
//! overrides it; `scripts/install-test-deps.sh` installs it), started with
//! a fresh profile in a temp dir, no network services of its own, and the
//! DevTools port it picked itself (read from `DevToolsActivePort`). It runs
//! in its own process group, which is killed when the [`Browser`] is dropped,
//! and it dies with the thread that launched it (`PR_SET_PDEATHSIG`), so
//! keep the `Browser` on that thread.
//!
//! Each [`Page`] is a tab with its own DevTools websocket; calls are
//! synchronous and bounded by timeouts, and failures panic with what the
//! browser said, as the rest of the harness does.
use base64::Engine as _;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// How long [`Page::wait_for`] polls before failing the test.
pub const WAIT: Duration = Duration::from_secs(15);
/// Upper bound for one DevTools call (navigation, evaluation, screenshot).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for Chromium to start and write its DevTools port.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of the Chromium executable the harness runs.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("BULWARK_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

type Socket = WebSocket<TcpStream>;

/// Why a DevTools call, or an evaluation in a page, failed. `method` is the
/// DevTools method called.
#[derive(Debug, thiserror::Error)]
pub enum DevToolsError {
    #[error("{method}: send: {source}")]
    Send {
        method: String,
        #[source]
        source: Box<tungstenite::Error>,
    },
    #[error("{method}: no answer in {timeout:?}")]
    NoAnswer { method: String, timeout: Duration },
    /// The websocket failed while waiting for the answer.
    #[error("{method}: DevTools connection: {source}")]
    Connection {
        method: String,
        #[source]
        source: Box<tungstenite::Error>,
    },
    #[error("{method}: DevTools connection closed")]
    Closed { method: String },
    #[error("{method}: bad DevTools message: {source}")]
    BadMessage {
        method: String,
        #[source]
        source: serde_json::Error,
    },
    /// The browser answered with an error object.
    #[error("{method}: {error}")]
    Refused { method: String, error: Value },
    /// The evaluated JavaScript threw; `text` is the exception's
    /// description.
    #[error("{js}: {text}")]
    Exception { js: String, text: String },
}

/// One DevTools websocket: request/response by id, events kept aside.
struct Connection {
    ws: RefCell<Socket>,
    next_id: Cell<u64>,
    /// JavaScript exceptions and console errors seen so far (page sockets).
    errors: RefCell<Vec<String>>,
}

impl Connection {
    fn open(port: u16, path: &str) -> Connection {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the DevTools port");
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(CALL_TIMEOUT)).ok();
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) =
            tungstenite::client(url.as_str(), stream).unwrap_or_else(|e| panic!("DevTools websocket {url}: {e}"));
        Connection { ws: RefCell::new(ws), next_id: Cell::new(1), errors: RefCell::new(Vec::new()) }
    }

    /// Send one command and wait (bounded) for its answer.
    fn call(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, DevToolsError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let mut ws = self.ws.borrow_mut();
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        let m = || method.to_string();
        ws.send(Message::text(msg)).map_err(|e| DevToolsError::Send { method: m(), source: Box::new(e) })?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| DevToolsError::NoAnswer { method: m(), timeout })?;
            ws.get_ref().set_read_timeout(Some(left.max(Duration::from_millis(1)))).ok();
            let msg = match ws.read() {
                Ok(msg) => msg,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Err(DevToolsError::Connection { method: m(), source: Box::new(e) }),
            };
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Close(_) => return Err(DevToolsError::Closed { method: m() }),
                _ => continue,
            };
            let v: Value =
                serde_json::from_str(&text).map_err(|source| DevToolsError::BadMessage { method: m(), source })?;
            if v["id"].as_u64() == Some(id) {
                if let Some(error) = v.get("error") {
                    return Err(DevToolsError::Refused { method: m(), error: error.clone() });
                }
                return Ok(v["result"].clone());
            }
            self.note_event(&v);
        }
    }

    fn note_event(&self, v: &Value) {
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &v["params"]["exceptionDetails"];
                let text = d["exception"]["description"].as_str().or(d["text"].as_str()).unwrap_or("exception");
                self.errors.borrow_mut().push(format!("uncaught: {text}"));
            }
            Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                let args: Vec<String> = v["params"]["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                x["value"]
                                    .as_str()
                                    .map(String::from)
                                    .or(x["description"].as_str().map(String::from))
                                    .unwrap_or_default()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.errors.borrow_mut().push(format!("console.error: {}", args.join(" ")));
            }
            _ => {}
        }
    }
}

/// A headless Chromium; killed (with every process it started) on drop.
pub struct Browser {
    child: Child,
    port: u16,
    conn: Connection,
    log_path: PathBuf,
    _profile: tempfile::TempDir,
    _logs: tempfile::TempDir,
}

impl Browser {
    /// Start Chromium headless with a fresh profile; panics (with its log)
    /// if it does not come up.
    pub fn launch() -> Browser {
        let exe = chromium_path();
        assert!(
            exe.exists(),
            "{} not found: run scripts/install-test-deps.sh (apt-get install chromium)",
            exe.display()
        );
        let profile = tempfile::Builder::new().prefix("bulwark-chromium-").tempdir().expect("profile dir");
        let logs = tempfile::Builder::new().prefix("bulwark-chromium-log-").tempdir().expect("log dir");
        let log_path = logs.path().join("chromium.log");
        let log = std::fs::File::create(&log_path).expect("chromium log");
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--mute-audio",
            "--window-size=1400,1000",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .env("TZ", "UTC");
        {
            use std::os::unix::process::CommandExt;
            // Own process group (so drop can kill renderers and zygotes too),
            // and die with the launching thread if the test dies unwinding-less.
            cmd.process_group(0);
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
                });
            }
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
        let port_file = profile.path().join("DevToolsActivePort");
        let start = Instant::now();
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(p), Some(path)) = (lines.next(), lines.next()) {
                    if let Ok(p) = p.trim().parse::<u16>() {
                        break (p, path.trim().to_string());
                    }
                }
            }
            let dead = child.try_wait().ok().flatten();
            if dead.is_some() || start.elapsed() > LAUNCH_TIMEOUT {
                kill_group(&mut child);
                panic!(
                    "chromium did not start (exit: {dead:?}) within {LAUNCH_TIMEOUT:?}; log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        let conn = Connection::open(port, &path);
        Browser { child, port, conn, log_path, _profile: profile, _logs: logs }
    }

    /// Open a new tab on `url` and wait until its document has loaded.
    pub fn open(&self, url: &str) -> Page {
        let target = self
            .conn
            .call("Target.createTarget", json!({"url": "about:blank"}), CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        let id = target["targetId"].as_str().expect("targetId").to_string();
        let conn = Connection::open(self.port, &format!("/devtools/page/{id}"));
        let page = Page { conn, target: id };
        page.call("Runtime.enable", json!({}));
        page.call("Page.enable", json!({}));
        page.goto(url);
        page
    }

    /// Everything Chromium wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Process id of the main Chromium process (its process group id too).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn kill_group(child: &mut Child) {
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.conn.call("Browser.close", json!({}), Duration::from_secs(2));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group (renderers, zygotes, utilities) goes too.
        kill_group(&mut self.child);
        // Reap: the group members are our grandchildren, so give the kernel a
        // moment to take them down before the profile dir is removed.
        let start = Instant::now();
        while group_alive(self.child.id()) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether any process of the process group `pgid` is still around.
pub fn group_alive(pgid: u32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), None).is_ok()
}

/// One browser tab.
pub struct Page {
    conn: Connection,
    target: String,
}

impl Page {
    /// A raw DevTools call on this tab; panics on a protocol error.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.conn.call(method, params, CALL_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Navigate to `url` and wait until the new document has loaded.
    pub fn goto(&self, url: &str) {
        let nav = self.call("Page.navigate", json!({"url": url}));
        if let Some(err) = nav["errorText"].as_str().filter(|e| !e.is_empty()) {
            panic!("navigating to {url}: {err}");
        }
        if url == "about:blank" {
            self.wait_for("document.readyState === 'complete'");
        } else {
            self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'");
        }
    }

    /// Evaluate a JavaScript expression (promises are awaited) and return
    /// its value as JSON (`null` for `undefined`), or the exception text.
    pub fn try_eval(&self, js: &str) -> Result<Value, DevToolsError> {
        let r = self.conn.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true, "userGesture": true}),
            CALL_TIMEOUT,
        )?;
        if let Some(d) = r.get("exceptionDetails") {
            let text = d["exception"]["description"].as_str().or(d["text"].as_str()).unwrap_or("exception");
            return Err(DevToolsError::Exception { js: js.to_string(), text: text.to_string() });
        }
        Ok(r["result"]["value"].clone())
    }

    /// [`Page::try_eval`] that panics on an exception.
    pub fn eval(&self, js: &str) -> Value {
        self.try_eval(js).unwrap_or_else(|e| panic!("eval failed: {e}"))
    }

    /// Poll the JavaScript condition every 50 ms until it is truthy; panic
    /// after [`WAIT`] with the page's text, to show what it showed instead.
    pub fn wait_for(&self, condition: &str) {
        self.wait_for_within(condition, WAIT)
    }

    /// [`Page::wait_for`] with an explicit bound.
    pub fn wait_for_within(&self, condition: &str, limit: Duration) {
        let start = Instant::now();
        let mut last: Value;
        loop {
            match self.try_eval(&format!("!!({condition})")) {
                Ok(Value::Bool(true)) => return,
                Ok(v) => last = v,
                // A navigation in progress destroys the context: try again.
                Err(e) => last = Value::String(e.to_string()),
            }
            if start.elapsed() > limit {
                let text = self.try_eval("document.body ? document.body.innerText : ''").unwrap_or_default();
                panic!(
                    "timed out after {limit:?} waiting for `{condition}` (last: {last}); JS errors: {:?}; page text:\n{}",
                    self.errors(),
                    text.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Save a PNG of the whole page (beyond the viewport) to `path`.
    pub fn screenshot(&self, path: &Path) {
        let m = self.call("Page.getLayoutMetrics", json!({}));
        let size = if m["cssContentSize"].is_object() { &m["cssContentSize"] } else { &m["contentSize"] };
        let (w, h) = (size["width"].as_f64().unwrap_or(1400.0), size["height"].as_f64().unwrap_or(1000.0));
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": w.ceil(), "height": h.ceil(), "scale": 1}}),
        );
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD.decode(data).expect("screenshot base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Uncaught exceptions and `console.error` calls seen so far (collected
    /// while the harness talks to the tab).
    pub fn errors(&self) -> Vec<String> {
        self.conn.errors.borrow().clone()
    }

    /// The DevTools target id of this tab.
    pub fn target_id(&self) -> &str {
        &self.target
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // Close the tab; the browser itself stays up.
        let _ = self.conn.call("Page.close", json!({}), Duration::from_secs(2));
    }
}

/// Fetch `http://127.0.0.1:<port><path>` with a plain GET (DevTools' HTTP
/// endpoints such as `/json/version`), for diagnostics.
pub fn devtools_http(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    use std::io::Write;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// A one-page HTTP server: answers every request with `body` as HTML.
    fn serve(body: &'static str) -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" {
                    line.clear();
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        addr
    }

    #[test]
    fn drives_a_page_and_leaves_no_process_behind() {
        let addr = serve(
            "<!doctype html><title>t</title><p id=p>0</p><script>let n=0;setInterval(()=>{document.getElementById('p').textContent=++n},30)</script>",
        );
        let browser = Browser::launch();
        let pid = browser.pid();
        let page = browser.open(&format!("http://{addr}/x"));
        assert_eq!(page.eval("document.title"), "t");
        assert_eq!(page.eval("1 + 2"), 3);
        assert_eq!(page.eval("Promise.resolve({a: [1]})"), json!({"a": [1]}));
        match page.try_eval("nope.nope") {
            Err(DevToolsError::Exception { js, text }) => {
                assert_eq!(js, "nope.nope");
                assert!(text.contains("nope is not defined"), "{text}");
            }
            other => panic!("expected a ReferenceError, got {other:?}"),
        }
        page.wait_for("+document.getElementById('p').textContent >= 5");
        let png = std::env::temp_dir().join(format!("bulwark-browser-{}.png", std::process::id()));
        page.screenshot(&png);
        let bytes = std::fs::read(&png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n"), "not a PNG");
        std::fs::remove_file(&png).ok();
        page.eval("setTimeout(() => { throw new Error('boom') }, 0); 1");
        // The exception event comes before the answer to a later call.
        page.eval("new Promise(r => setTimeout(r, 50))");
        assert!(page.errors().iter().any(|e| e.contains("boom")), "{:?}", page.errors());
        assert!(group_alive(pid));
        drop(page);
        drop(browser);
        assert!(!group_alive(pid), "chromium processes left behind");
    }
}
