//! The unauthenticated probes for load balancers and monitors: `GET
//! /health` (Raft running), `/primary` (the primary with a fresh majority)
//! and `/replica` (a replica within `max_lag` seconds). Each answers 200 or
//! 503 with the node's role and nothing else.
use super::{json, query_param, NodeState, Resp};
use http::StatusCode;
use std::sync::atomic::Ordering;

fn up_or_down(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

impl NodeState {
    pub(super) fn health(&self) -> Resp {
        let m = self.metrics();
        let ok = m.running_state.is_ok();
        let body =
            serde_json::json!({"status": if ok {"ok"} else {"failed"}, "node_id": self.id, "role": self.role(&m)});
        json(up_or_down(ok), &body)
    }

    pub(super) fn primary_probe(&self) -> Resp {
        let m = self.metrics();
        let ok = self.has_quorum(&m) && !self.transferring.load(Ordering::SeqCst);
        let body = serde_json::json!({"primary": ok, "node_id": self.id, "role": self.role(&m)});
        json(up_or_down(ok), &body)
    }

    pub(super) fn replica_probe(&self, uri: &http::Uri) -> Resp {
        let m = self.metrics();
        let lag = self.lag(&m);
        let max: Option<f64> = query_param(uri, "max_lag").and_then(|v| v.parse().ok());
        let role = self.role(&m);
        let ok = role.follows() && lag.known && max.is_none_or(|mx| lag.seconds <= mx);
        let body = serde_json::json!({"replica": ok, "node_id": self.id, "role": role, "lag": lag});
        json(up_or_down(ok), &body)
    }
}
