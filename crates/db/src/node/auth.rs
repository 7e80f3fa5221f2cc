//! Who may call which endpoint of a database node.
//!
//! A node knows up to three credentials, each sent as
//! `Authorization: Bearer <value>`:
//! - the **peer** secret (db↔db): Raft (`/raft/*`), membership changes,
//!   promote, and requests one node forwards to the primary;
//! - the **client** secret (app→db): the SQL API and status;
//! - the read-only **monitoring** token: `/metrics` and `/v1/status` only,
//!   never SQL and never a cluster change.
//!
//! A config with one secret uses it as both peer and client secret (the
//! single-secret setup): that secret then opens everything.
//! `/health`, `/primary` and `/replica` are open and are answered before
//! this check. Raft's own listener takes the peer secret alone
//! ([`Credentials::check_peer`]).
use bulwark_config::Secret;
use http::{HeaderMap, Method, StatusCode};

/// Which credential a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    Peer,
    Client,
    Monitor,
}

/// What an endpoint does, for the purpose of authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// `GET /v1/status`, `GET /metrics`.
    ReadStatus,
    /// `/v1/execute`, `/v1/query`.
    Sql,
    /// `/raft/*`, `/v1/members/*`, `/v1/promote`.
    Cluster,
    /// Anything else (answered 404 after the check).
    Other,
}

impl Access {
    pub(crate) fn of(method: &Method, path: &str) -> Access {
        match (method, path) {
            (&Method::GET, "/v1/status" | "/metrics") => Access::ReadStatus,
            (_, "/v1/execute" | "/v1/query") => Access::Sql,
            (_, "/v1/promote" | "/v1/members/add" | "/v1/members/remove") => Access::Cluster,
            (_, p) if p.starts_with("/raft/") => Access::Cluster,
            _ => Access::Other,
        }
    }
}

impl Caller {
    /// Whether this caller may use an endpoint of kind `access`. A peer
    /// sends SQL only when it forwards a client's request to the primary.
    pub(crate) fn may(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Caller::Peer, _)
                | (Caller::Client, Access::ReadStatus | Access::Sql | Access::Other)
                | (Caller::Monitor, Access::ReadStatus)
        )
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No credential, or one this node does not know: 401.
    Unknown,
    /// A known credential that does not open this endpoint: 403.
    NotAllowed(Caller),
}

impl Refusal {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Refusal::Unknown => StatusCode::UNAUTHORIZED,
            Refusal::NotAllowed(_) => StatusCode::FORBIDDEN,
        }
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            Refusal::Unknown => "unauthorized",
            Refusal::NotAllowed(_) => "forbidden",
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::Unknown => "missing or wrong credential (Authorization: Bearer <secret>)",
            Refusal::NotAllowed(Caller::Client) => {
                "the client secret does not open this endpoint: Raft, membership and promote take the peer secret"
            }
            Refusal::NotAllowed(Caller::Monitor) => "the monitoring token opens only /metrics and /v1/status",
            Refusal::NotAllowed(Caller::Peer) => "not allowed",
        }
    }
}

/// The credentials a node accepts, as the exact `Authorization` values.
pub(crate) struct Credentials {
    peer: Vec<u8>,
    client: Vec<u8>,
    monitor: Option<Vec<u8>>,
}

fn bearer(s: &Secret) -> Vec<u8> {
    format!("Bearer {}", s.expose()).into_bytes()
}

impl Credentials {
    pub(crate) fn new(peer: &Secret, client: &Secret, monitor: Option<&Secret>) -> Credentials {
        Credentials { peer: bearer(peer), client: bearer(client), monitor: monitor.map(bearer) }
    }

    /// The caller behind `Authorization`, most privileged first when two
    /// credentials are equal. Every comparison runs in constant time.
    pub(crate) fn identify(&self, headers: &HeaderMap) -> Option<Caller> {
        let given = headers.get(http::header::AUTHORIZATION)?.as_bytes();
        let is = |want: &[u8]| super::same(given, want);
        let (peer, client) = (is(&self.peer), is(&self.client));
        let monitor = self.monitor.as_deref().is_some_and(is);
        if peer {
            Some(Caller::Peer)
        } else if client {
            Some(Caller::Client)
        } else if monitor {
            Some(Caller::Monitor)
        } else {
            None
        }
    }

    /// Allow a request on the Raft listener, which only the peer
    /// credential opens, or say why not.
    pub(crate) fn check_peer(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        match self.identify(headers).ok_or(Refusal::Unknown)? {
            Caller::Peer => Ok(Caller::Peer),
            other => Err(Refusal::NotAllowed(other)),
        }
    }

    /// Allow the request, or say why not.
    pub(crate) fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let caller = self.identify(headers).ok_or(Refusal::Unknown)?;
        if caller.may(Access::of(method, path)) {
            Ok(caller)
        } else {
            Err(Refusal::NotAllowed(caller))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    const PEER: &str = "peer-secret-0123456789";
    const CLIENT: &str = "client-secret-0123456789";
    const MONITOR: &str = "monitor-token-0123456789";

    fn creds() -> Credentials {
        Credentials::new(&Secret::new(PEER), &Secret::new(CLIENT), Some(&Secret::new(MONITOR)))
    }

    #[test]
    fn each_credential_opens_only_its_endpoints() {
        let c = creds();
        let cases: &[(&str, Method, &str, Result<Caller, Refusal>)] = &[
            (PEER, Method::POST, "/raft/append", Ok(Caller::Peer)),
            (PEER, Method::POST, "/v1/members/add", Ok(Caller::Peer)),
            (PEER, Method::POST, "/v1/execute", Ok(Caller::Peer)),
            (CLIENT, Method::POST, "/v1/execute", Ok(Caller::Client)),
            (CLIENT, Method::POST, "/v1/query", Ok(Caller::Client)),
            (CLIENT, Method::GET, "/v1/status", Ok(Caller::Client)),
            (CLIENT, Method::POST, "/raft/append", Err(Refusal::NotAllowed(Caller::Client))),
            (CLIENT, Method::POST, "/raft/vote", Err(Refusal::NotAllowed(Caller::Client))),
            (CLIENT, Method::POST, "/v1/promote", Err(Refusal::NotAllowed(Caller::Client))),
            (CLIENT, Method::POST, "/v1/members/remove", Err(Refusal::NotAllowed(Caller::Client))),
            (MONITOR, Method::GET, "/metrics", Ok(Caller::Monitor)),
            (MONITOR, Method::GET, "/v1/status", Ok(Caller::Monitor)),
            (MONITOR, Method::POST, "/v1/execute", Err(Refusal::NotAllowed(Caller::Monitor))),
            (MONITOR, Method::POST, "/v1/query", Err(Refusal::NotAllowed(Caller::Monitor))),
            (MONITOR, Method::POST, "/v1/status", Err(Refusal::NotAllowed(Caller::Monitor))),
            (MONITOR, Method::POST, "/raft/append", Err(Refusal::NotAllowed(Caller::Monitor))),
            ("someone-else-0123456789", Method::GET, "/v1/status", Err(Refusal::Unknown)),
        ];
        for (token, method, path, want) in cases {
            assert_eq!(c.check(method, path, &headers(token)), *want, "{token} {method} {path}");
        }
        assert_eq!(c.check(&Method::GET, "/v1/status", &HeaderMap::new()), Err(Refusal::Unknown));
    }

    #[test]
    fn the_raft_listener_takes_the_peer_secret_alone() {
        let c = creds();
        assert_eq!(c.check_peer(&headers(PEER)), Ok(Caller::Peer));
        assert_eq!(c.check_peer(&headers(CLIENT)), Err(Refusal::NotAllowed(Caller::Client)));
        assert_eq!(c.check_peer(&headers(MONITOR)), Err(Refusal::NotAllowed(Caller::Monitor)));
        assert_eq!(c.check_peer(&headers("someone-else-0123456789")), Err(Refusal::Unknown));
        assert_eq!(c.check_peer(&HeaderMap::new()), Err(Refusal::Unknown));
    }

    #[test]
    fn one_secret_alone_opens_everything() {
        let one = Secret::new(CLIENT);
        let c = Credentials::new(&one, &one, None);
        for path in ["/raft/append", "/v1/promote", "/v1/execute", "/v1/status"] {
            assert_eq!(c.check(&Method::POST, path, &headers(CLIENT)), Ok(Caller::Peer), "{path}");
        }
        assert_eq!(c.check(&Method::GET, "/metrics", &headers(MONITOR)), Err(Refusal::Unknown));
    }
}
