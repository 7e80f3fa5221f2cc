//! The access log writer shared by the lb and the web tier: renders one
//! [`AccessRecord`] a line in the configured format (Apache/nginx
//! `combined`, `json`, or a template of named fields, see
//! [`bulwark_config::access_log`]) and writes it to stderr or to a file.
//!
//! A file is opened for appending, and [`AccessLog::reopen`] (called on
//! SIGUSR1) opens the path again, so logrotate can rename the file and
//! signal: new lines go to a new file at the configured path, none is lost
//! or split (each line is one `write` on an `O_APPEND` file).
use bulwark_config::access_log::{AccessField, AccessLogFormat, TemplatePart};
use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

/// What is known of one request when its response ends. Strings borrow
/// from the request; `None` is written `-` (or `null` in JSON).
#[derive(Debug, Clone)]
pub struct AccessRecord<'a> {
    pub remote_addr: IpAddr,
    /// When the request arrived.
    pub time: SystemTime,
    pub method: &'a str,
    /// The target with its query.
    pub uri: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: &'a str,
    pub status: u16,
    /// Response body bytes sent (None: not known).
    pub body_bytes: Option<u64>,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub host: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub route: &'a str,
    /// The server that answered.
    pub upstream: Option<&'a str>,
    pub retries: u32,
    pub queue_us: Option<u64>,
    pub connect_us: Option<u64>,
    pub upstream_header_us: Option<u64>,
    pub request_time_us: u64,
}

enum Sink {
    Stderr,
    File { path: PathBuf, file: RwLock<File> },
}

/// Writes access lines in one format to one place.
pub struct AccessLog {
    format: AccessLogFormat,
    sink: Sink,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let to = match &self.sink {
            Sink::Stderr => Path::new("stderr"),
            Sink::File { path, .. } => path,
        };
        write!(f, "AccessLog({} to {})", self.format, to.display())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl AccessLog {
    /// A writer for `format` (which must be a written one, not `text`) to
    /// `file`, or to stderr.
    pub fn open(format: AccessLogFormat, file: Option<&Path>) -> io::Result<AccessLog> {
        let sink = match file {
            None => Sink::Stderr,
            Some(path) => Sink::File {
                file: RwLock::new(
                    open_append(path)
                        .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))?,
                ),
                path: path.to_owned(),
            },
        };
        Ok(AccessLog { format, sink })
    }

    /// Open the file's path again (after logrotate renamed it); no-op on
    /// stderr. On failure the old file stays in use.
    pub fn reopen(&self) -> io::Result<()> {
        if let Sink::File { path, file } = &self.sink {
            let fresh = open_append(path)?;
            *file.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        }
        Ok(())
    }

    /// The file written to, if not stderr.
    pub fn path(&self) -> Option<&Path> {
        match &self.sink {
            Sink::Stderr => None,
            Sink::File { path, .. } => Some(path),
        }
    }

    /// Write one line; a failed write is reported on stderr, never to the
    /// client.
    pub fn write(&self, record: &AccessRecord<'_>) {
        thread_local! {
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            render(&self.format, record, &mut line);
            line.push('\n');
            let written = match &self.sink {
                Sink::Stderr => io::stderr().lock().write_all(line.as_bytes()),
                Sink::File { file, .. } => {
                    let file = file.read().unwrap_or_else(|p| p.into_inner());
                    (&*file).write_all(line.as_bytes())
                }
            };
            if let Err(e) = written {
                tracing::warn!(error = %e, "could not write the access log");
            }
        });
    }
}

/// Render `record` in `format` into `out` (no newline).
pub fn render(format: &AccessLogFormat, r: &AccessRecord<'_>, out: &mut String) {
    match format {
        AccessLogFormat::Text | AccessLogFormat::Combined => {
            // %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"
            let _ = write!(out, "{} - - [", r.remote_addr);
            time_local(r.time, out);
            out.push_str("] \"");
            field(AccessField::Request, r, out, quoted);
            let _ = write!(out, "\" {} ", r.status);
            match r.body_bytes {
                Some(b) => {
                    let _ = write!(out, "{b}");
                }
                None => out.push('-'),
            }
            out.push_str(" \"");
            field(AccessField::HttpReferer, r, out, quoted);
            out.push_str("\" \"");
            field(AccessField::HttpUserAgent, r, out, quoted);
            out.push('"');
        }
        AccessLogFormat::Json => {
            let mut map = serde_json::Map::new();
            for f in AccessField::ALL {
                map.insert(f.name().to_string(), json_value(f, r));
            }
            out.push_str(&serde_json::Value::Object(map).to_string());
        }
        AccessLogFormat::Template(_, parts) => {
            for part in parts {
                match part {
                    TemplatePart::Literal(l) => out.push_str(l),
                    TemplatePart::Field(f) => field(*f, r, out, quoted),
                }
            }
        }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn json_value(f: AccessField, r: &AccessRecord<'_>) -> serde_json::Value {
    use serde_json::Value;
    let text = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.to_string()));
    let millis = |us: Option<u64>| us.map_or(Value::Null, |us| serde_json::json!(ms(us)));
    match f {
        AccessField::Status => Value::from(r.status),
        AccessField::BodyBytesSent => r.body_bytes.map_or(Value::Null, Value::from),
        AccessField::Retries => Value::from(r.retries),
        AccessField::HttpReferer => text(r.referer),
        AccessField::HttpUserAgent => text(r.user_agent),
        AccessField::Host => text(r.host),
        AccessField::RequestId => text(r.request_id),
        AccessField::Upstream => text(r.upstream),
        AccessField::QueueMs => millis(r.queue_us),
        AccessField::ConnectMs => millis(r.connect_us),
        AccessField::UpstreamHeaderMs => millis(r.upstream_header_us),
        AccessField::RequestTimeMs => millis(Some(r.request_time_us)),
        _ => {
            let mut s = String::new();
            field(f, r, &mut s, |s, out| out.push_str(s));
            Value::String(s)
        }
    }
}

/// Write one field's value; text that came from the client goes through
/// `escape`.
fn field(f: AccessField, r: &AccessRecord<'_>, out: &mut String, escape: fn(&str, &mut String)) {
    let text = |s: Option<&str>, out: &mut String| match s {
        Some(s) if !s.is_empty() => escape(s, out),
        _ => out.push('-'),
    };
    let millis = |us: Option<u64>, out: &mut String| match us {
        Some(us) => {
            let _ = write!(out, "{:.3}", us as f64 / 1000.0);
        }
        None => out.push('-'),
    };
    match f {
        AccessField::RemoteAddr => {
            let _ = write!(out, "{}", r.remote_addr);
        }
        AccessField::TimeLocal => time_local(r.time, out),
        AccessField::TimeIso8601 => time_iso8601(r.time, out),
        AccessField::Request => {
            escape(r.method, out);
            out.push(' ');
            escape(r.uri, out);
            out.push(' ');
            out.push_str(r.protocol);
        }
        AccessField::RequestMethod => escape(r.method, out),
        AccessField::RequestUri => escape(r.uri, out),
        AccessField::ServerProtocol => out.push_str(r.protocol),
        AccessField::Status => {
            let _ = write!(out, "{}", r.status);
        }
        AccessField::BodyBytesSent => match r.body_bytes {
            Some(b) => {
                let _ = write!(out, "{b}");
            }
            None => out.push('-'),
        },
        AccessField::HttpReferer => text(r.referer, out),
        AccessField::HttpUserAgent => text(r.user_agent, out),
        AccessField::Host => text(r.host, out),
        AccessField::RequestId => text(r.request_id, out),
        AccessField::Route => text(Some(r.route), out),
        AccessField::Upstream => text(r.upstream, out),
        AccessField::Retries => {
            let _ = write!(out, "{}", r.retries);
        }
        AccessField::QueueMs => millis(r.queue_us, out),
        AccessField::ConnectMs => millis(r.connect_us, out),
        AccessField::UpstreamHeaderMs => millis(r.upstream_header_us, out),
        AccessField::RequestTimeMs => millis(Some(r.request_time_us), out),
    }
}

/// nginx's escaping inside quoted fields: `"`, `\`, control and non-ASCII
/// bytes as `\xHH`, so a client cannot forge a field or a line.
fn quoted(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// `10/Oct/2000:13:55:36 +0000` from httpdate's `Tue, 10 Oct 2000 13:55:36 GMT`.
fn time_local(t: SystemTime, out: &mut String) {
    let d = httpdate::fmt_http_date(t);
    let _ = write!(out, "{}/{}/{}:{} +0000", &d[5..7], &d[8..11], &d[12..16], &d[17..25]);
}

/// `2000-10-10T13:55:36Z`.
fn time_iso8601(t: SystemTime, out: &mut String) {
    let d = httpdate::fmt_http_date(t);
    let month = MONTHS.iter().position(|m| *m == &d[8..11]).unwrap_or(0) + 1;
    let _ = write!(out, "{}-{month:02}-{}T{}Z", &d[12..16], &d[5..7], &d[17..25]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            remote_addr: "192.0.2.7".parse().unwrap(),
            time: UNIX_EPOCH + Duration::from_secs(971_186_136),
            method: "GET",
            uri: "/a?b=\"1\"",
            protocol: "HTTP/1.1",
            status: 200,
            body_bytes: Some(2326),
            referer: None,
            user_agent: Some("curl/8.5.0"),
            host: Some("example.test"),
            request_id: Some("abc"),
            route: "www",
            upstream: Some("web1"),
            retries: 1,
            queue_us: Some(120),
            connect_us: Some(0),
            upstream_header_us: Some(1500),
            request_time_us: 2001,
        }
    }

    fn line(format: &str) -> String {
        let mut out = String::new();
        render(&AccessLogFormat::try_from(format.to_string()).unwrap(), &record(), &mut out);
        out
    }

    #[test]
    fn combined_is_apaches_and_escapes_quotes() {
        assert_eq!(
            line("combined"),
            r#"192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] "GET /a?b=\x221\x22 HTTP/1.1" 200 2326 "-" "curl/8.5.0""#
        );
    }

    #[test]
    fn json_has_every_field_and_timings_in_milliseconds() {
        let v: serde_json::Value = serde_json::from_str(&line("json")).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["upstream"], "web1");
        assert_eq!(v["retries"], 1);
        assert_eq!(v["upstream_header_ms"], 1.5);
        assert_eq!(v["request_time_ms"], 2.001);
        assert_eq!(v["http_referer"], serde_json::Value::Null);
        assert_eq!(v["request_uri"], "/a?b=\"1\"", "JSON escapes by itself");
        assert_eq!(v["time_iso8601"], "2000-10-10T13:55:36Z");
        assert_eq!(v.as_object().unwrap().len(), AccessField::ALL.len());
    }

    #[test]
    fn a_template_writes_its_fields() {
        assert_eq!(
            line("$remote_addr $status ${request_time_ms}ms id=$request_id $http_referer"),
            "192.0.2.7 200 2.001ms id=abc -"
        );
    }

    #[test]
    fn reopen_follows_the_path_after_a_rename() {
        let dir = std::env::temp_dir().join(format!("bulwark-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let log = AccessLog::open(AccessLogFormat::Combined, Some(&path)).unwrap();
        log.write(&record());
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        log.write(&record());
        log.reopen().unwrap();
        log.write(&record());
        let old = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!((old.lines().count(), new.lines().count()), (2, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
