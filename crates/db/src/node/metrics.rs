//! `GET /metrics`: the node's metrics through the shared exposition
//! (`bulwark_telemetry::metrics`, OpenMetrics text), every family labelled
//! with the node's id.
use super::{NodeState, Resp};
use bulwark_db_api::api::DbRole;
use bulwark_telemetry::metrics::{self, Exposition};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl NodeState {
    pub(super) fn metrics_response(self: &Arc<Self>) -> Resp {
        let state = self.clone();
        let text = metrics::render(vec![metrics::from_fn(move |out| state.encode_metrics(out))]);
        let mut r = Response::new(Full::new(Bytes::from(text)));
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(metrics::CONTENT_TYPE));
        r
    }

    /// Role, term, log and applied index, replication lag, request counts
    /// and latencies, disk and log archive (the process metrics are added
    /// by the exposition).
    fn encode_metrics(&self, out: &mut Exposition<'_>) -> fmt::Result {
        let st = self.status();
        let node_id = self.id.to_string();
        let id = node_id.as_str();
        let node = [("node", id)];
        let gauge = |out: &mut Exposition<'_>, name: &str, help: &str, v: u64| out.gauges(name, help, [(node, v)]);
        gauge(
            out,
            "bulwark_db_is_primary",
            "1 on the primary (Raft leader), else 0.",
            u64::from(st.role == DbRole::Primary),
        )?;
        gauge(out, "bulwark_db_term", "Current Raft term.", st.term)?;
        gauge(out, "bulwark_db_last_log_index", "Index of the last entry in this node's log.", st.last_log_index)?;
        gauge(out, "bulwark_db_applied_index", "Index of the last entry applied to the database.", st.applied_index)?;
        gauge(out, "bulwark_db_replication_lag_entries", "Entries this node is behind the primary.", st.lag.entries)?;
        out.gauges(
            "bulwark_db_replication_lag_seconds",
            "Commit-time lag behind the primary, seconds.",
            [(node, st.lag.seconds)],
        )?;
        gauge(out, "bulwark_db_quorum", "1 when this node sees a working majority.", u64::from(st.quorum))?;
        out.gauges(
            "bulwark_db_role",
            "Role of this node.",
            DbRole::ALL.map(|role| ([("node", id), ("role", role.as_str())], u64::from(st.role == role))),
        )?;
        let ahead = &self.ahead_stats;
        out.counters(
            "bulwark_db_replication_sent_ahead",
            "Append-entries this primary sent before openraft's own, by the replica's answer.",
            [("accepted", &ahead.accepted), ("refused", &ahead.refused)]
                .map(|(result, n)| ([("node", id), ("result", result)], n.load(Ordering::Relaxed))),
        )?;
        out.counters(
            "bulwark_db_replication_covered",
            "openraft append-entries answered from accepted ones sent ahead, without a round trip.",
            [(node, ahead.covered.load(Ordering::Relaxed))],
        )?;
        let s = &self.stats;
        let requests = [("execute", &s.executes), ("query", &s.queries)].into_iter().flat_map(|(kind, counts)| {
            ["ok", "error"]
                .into_iter()
                .zip(counts)
                .map(move |(result, n)| ([("node", id), ("kind", kind), ("result", result)], n.load(Ordering::Relaxed)))
        });
        out.counters("bulwark_db_requests", "SQL requests served, by kind and result.", requests)?;
        out.histograms(
            "bulwark_db_request_duration_seconds",
            "SQL request latency (writes include the majority commit).",
            [
                ([("node", id), ("kind", "execute")], &s.execute_latency),
                ([("node", id), ("kind", "query")], &s.query_latency),
            ],
        )?;
        self.encode_disk_metrics(id, out)?;
        match &self.archive {
            Some(archive) => archive.encode_metrics(id, out),
            None => Ok(()),
        }
    }
}
