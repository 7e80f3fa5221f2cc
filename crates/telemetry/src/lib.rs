//! Process-wide observability plumbing shared by every role.
//!
//! Owns: log initialisation (tracing to stderr, optional JSON), the access
//! log writer ([`access_log`]), the
//! machine-readable "ready" line every role prints on stdout once its
//! listeners are bound, the process's monotonic and wall clocks
//! ([`clock`]), the metrics exposition every role serves ([`metrics`]),
//! dashboard assets and alert rules.
//!
//! Must not touch: request handling or role logic; roles call in here, never
//! the other way round.

pub mod access_log;
pub mod clock;
pub mod dashboard;
mod histogram;
pub mod metrics;
pub mod process;

pub use access_log::{AccessLog, AccessRecord};
pub use dashboard::DASHBOARD_HTML;
pub use histogram::{LatencyHistogram, LATENCY_BUCKETS_US};

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Once;

/// Install the global tracing subscriber: human-readable lines on stderr,
/// or JSON objects with `json = true`. `RUST_LOG` overrides `default_filter`.
/// Lines are coloured only when stderr is a terminal and `NO_COLOR` is not
/// set: a log file, a pipe or the journal gets plain text.
pub fn init_logging(default_filter: &str, json: bool) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
        let ansi = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(true)
            .with_ansi(ansi);
        if json {
            builder.json().init();
        } else {
            builder.init();
        }
    });
}

/// Whether log lines get colour codes: only for a person at a terminal,
/// and never when `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
fn use_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The one line a role prints on stdout when it is ready to serve:
/// `{"ready":{"role":"lb","pid":1234,"listeners":{"www":"127.0.0.1:40123"}}}`.
/// Supervisors and tests read it to learn the ports chosen for `:0` binds.
pub fn ready_line(role: &str, listeners: &[(String, SocketAddr)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        listeners.iter().map(|(name, addr)| (name.clone(), serde_json::Value::String(addr.to_string()))).collect();
    serde_json::json!({
        "ready": { "role": role, "pid": std::process::id(), "listeners": map }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ready_line_is_one_json_object() {
        let l = super::ready_line("lb", &[("www".into(), "127.0.0.1:80".parse().unwrap())]);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["ready"]["listeners"]["www"], "127.0.0.1:80");
        assert!(!l.contains('\n'));
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use super::use_colour;
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("".into())), "an empty NO_COLOR does not count");
        assert!(!use_colour(true, Some("1".into())));
        assert!(!use_colour(false, None));
    }

    #[test]
    fn dashboard_is_self_contained() {
        let page = super::DASHBOARD_HTML;
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("\"api/overview\""), "relative data URL");
        assert!(page.contains("id=\"offline\""));
        for external in ["http://", "https://", "//cdn", "src=\"/", "href=\"/"] {
            let hits: Vec<_> = page.match_indices(external).map(|(i, _)| &page[i..(i + 40).min(page.len())]).collect();
            let hits: Vec<_> = hits.into_iter().filter(|h| !h.starts_with("http://www.w3.org/2000/svg")).collect();
            assert!(hits.is_empty(), "external reference in the dashboard: {hits:?}");
        }
    }
}
