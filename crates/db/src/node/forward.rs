//! Requests only the primary serves, sent on from another node: proxied
//! to it, or the client redirected there.
use super::{ApiError, NodeState, Resp, FORWARDED_HEADER, PRIMARY_HEADER};
use bulwark_db_api::api::ErrorBody;
use bulwark_db_api::http_client::TransportError;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::Response;
use std::time::Duration;

impl NodeState {
    /// Send a request that only the primary can serve to it: proxy it, or
    /// redirect the client there.
    pub(super) async fn to_primary(&self, path: &str, body: Bytes, forwarded: bool, proxy: bool) -> Resp {
        let m = self.metrics();
        let Some((lid, addr)) = self.leader(&m) else {
            return ApiError::NoLeader { message: "no primary is known right now; retry".into(), leader: None }
                .response();
        };
        if lid == self.id || forwarded {
            return ApiError::NotPrimary {
                message: "this node is not the primary (any more); retry".into(),
                leader: Some(addr),
            }
            .response();
        }
        if !proxy {
            return Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(http::header::LOCATION, format!("{}://{addr}{path}", self.http.scheme()))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(
                    serde_json::to_vec(&ErrorBody {
                        error: format!("served by the primary at {addr}"),
                        code: "redirect".into(),
                        retryable: true,
                        leader: Some(addr.clone()),
                    })
                    .unwrap_or_default(),
                )))
                .expect("valid response");
        }
        let extra = [(FORWARDED_HEADER, self.id.to_string())];
        match self.http.send(Method::POST, &addr, path, body, &extra, self.write_timeout + Duration::from_secs(1)).await
        {
            // Says where the primary is: a client that sent its write here
            // sends the next one there, without this hop.
            Ok(r) => Response::builder()
                .status(r.status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(PRIMARY_HEADER, &addr)
                .body(Full::new(r.body))
                .expect("valid response"),
            Err(e @ TransportError::Connect(..)) => {
                ApiError::NoLeader { message: format!("primary unreachable: {e}"), leader: Some(addr) }.response()
            }
            Err(e) => ApiError::ForwardFailed {
                message: format!("forwarding to the primary failed, the outcome is unknown: {e}"),
                leader: addr,
            }
            .response(),
        }
    }
}
