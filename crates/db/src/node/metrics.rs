//! `GET /metrics`: the node's Prometheus text.
use super::{NodeState, Resp};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use std::sync::atomic::Ordering;

impl NodeState {
    pub(super) fn metrics_response(&self) -> Resp {
        let mut r = Response::new(Full::new(Bytes::from(self.prometheus())));
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
        r
    }

    /// Prometheus text: role, term, log and applied index, replication lag,
    /// request counts and latencies, process metrics.
    fn prometheus(&self) -> String {
        use std::fmt::Write;
        let st = self.status();
        let mut out = String::with_capacity(4096);
        let node = format!("node=\"{}\"", self.id);
        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{node}}} {v}");
        };
        gauge(
            "bulwark_db_is_primary",
            "1 on the primary (Raft leader), else 0.",
            f64::from(u8::from(st.role == "primary")),
        );
        gauge("bulwark_db_term", "Current Raft term.", st.term as f64);
        gauge("bulwark_db_last_log_index", "Index of the last entry in this node's log.", st.last_log_index as f64);
        gauge("bulwark_db_applied_index", "Index of the last entry applied to the database.", st.applied_index as f64);
        gauge("bulwark_db_replication_lag_entries", "Entries this node is behind the primary.", st.lag.entries as f64);
        gauge("bulwark_db_replication_lag_seconds", "Commit-time lag behind the primary, seconds.", st.lag.seconds);
        gauge("bulwark_db_quorum", "1 when this node sees a working majority.", f64::from(u8::from(st.quorum)));
        let _ = writeln!(out, "# HELP bulwark_db_role Role of this node.\n# TYPE bulwark_db_role gauge");
        for role in ["primary", "replica", "learner", "candidate", "stopped"] {
            let _ = writeln!(out, "bulwark_db_role{{{node},role=\"{role}\"}} {}", u8::from(st.role == role));
        }
        let _ = writeln!(
            out,
            "# HELP bulwark_db_replication_sent_ahead_total Append-entries this primary sent before openraft's own, by the replica's answer.\n# TYPE bulwark_db_replication_sent_ahead_total counter"
        );
        for (result, n) in [("accepted", &self.ahead_stats.accepted), ("refused", &self.ahead_stats.refused)] {
            let _ = writeln!(
                out,
                "bulwark_db_replication_sent_ahead_total{{{node},result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bulwark_db_replication_covered_total openraft append-entries answered from accepted ones sent ahead, without a round trip.\n# TYPE bulwark_db_replication_covered_total counter\nbulwark_db_replication_covered_total{{{node}}} {}",
            self.ahead_stats.covered.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP bulwark_db_requests_total SQL requests served, by kind and result.\n# TYPE bulwark_db_requests_total counter");
        for (kind, counts) in [("execute", &self.stats.executes), ("query", &self.stats.queries)] {
            for (i, result) in ["ok", "error"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "bulwark_db_requests_total{{{node},kind=\"{kind}\",result=\"{result}\"}} {}",
                    counts[i].load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# HELP bulwark_db_request_duration_seconds SQL request latency (writes include the majority commit).\n# TYPE bulwark_db_request_duration_seconds histogram");
        self.stats.execute_latency.write_prometheus(
            &mut out,
            "bulwark_db_request_duration_seconds",
            &format!("{node},kind=\"execute\""),
        );
        self.stats.query_latency.write_prometheus(
            &mut out,
            "bulwark_db_request_duration_seconds",
            &format!("{node},kind=\"query\""),
        );
        out.push_str(&self.disk_metrics());
        out.push_str(&self.archive.as_ref().map(|a| a.prometheus(&node)).unwrap_or_default());
        out.push_str(&bulwark_telemetry::process::process_metrics());
        out
    }
}
