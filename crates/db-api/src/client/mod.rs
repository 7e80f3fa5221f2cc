//! [`Client`]: how the app tier talks to a database cluster.
//!
//! ```no_run
//! # async fn demo() -> Result<(), bulwark_db_api::ClientError> {
//! use bulwark_db_api::{Client, Consistency, Params, Statement};
//! let db = Client::new(["10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001"], "the-cluster-secret");
//! let w = db
//!     .execute(&[Statement::with_params("INSERT INTO msg (text) VALUES (?)", vec!["hi".into()])])
//!     .await?;
//! // Read your own write on the nearest replica:
//! let rows = db.query("SELECT text FROM msg", Params::None, Consistency::None, Some(w.token)).await?;
//! # Ok(()) }
//! ```
use crate::api::{AddMember, DbRole, ErrorBody, ExecuteRequest, NodeRef, NodeStatus, QueryRequest, BAD_TOKEN};
use crate::http_client::{HttpClient, HttpReply, TransportError};
use crate::{Consistency, ExecuteResult, Params, Rows, Statement, Token};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod error;
mod request_id;
#[cfg(test)]
mod tests;

pub use error::{AmbiguousWrite, ClientError};
pub use request_id::with_x_request_id;
use request_id::{new_request_id, x_request_id_header};

#[derive(Debug, Clone)]
struct KnownNode {
    address: String,
    role: Option<DbRole>,
    rtt: Option<Duration>,
    healthy: bool,
}

struct Inner {
    http: HttpClient,
    nodes: Mutex<Vec<KnownNode>>,
    primary: Mutex<Option<String>>,
    refreshed: Mutex<Option<Instant>>,
    deadline: Duration,
    attempt_timeout: Duration,
}

/// A client of one cluster: writes go to the primary (following redirects
/// and re-discovering it after a failover), reads to the nearest healthy
/// replica, read-your-writes tokens are carried along. Cheap to clone;
/// needs a tokio runtime.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Default of [`Client::with_attempt_timeout`].
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a node has to answer a status probe.
const STATUS_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

fn addr_of_location(loc: &str) -> Option<String> {
    let rest = loc.strip_prefix("http://").or_else(|| loc.strip_prefix("https://"))?;
    Some(rest.split('/').next()?.to_string())
}

fn error_body(r: &HttpReply) -> ErrorBody {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| ErrorBody {
        error: String::from_utf8_lossy(&r.body).into_owned(),
        code: "http".into(),
        retryable: false,
        leader: None,
    })
}

fn rejected(r: &HttpReply) -> ClientError {
    let b = error_body(r);
    if b.code == "sql" {
        ClientError::Sql(b.error)
    } else {
        ClientError::Rejected { status: r.status, code: b.code, message: b.error }
    }
}

fn decode<T: serde::de::DeserializeOwned>(r: &HttpReply) -> Result<T, ClientError> {
    serde_json::from_slice(&r.body).map_err(|e| ClientError::Unavailable(format!("malformed answer: {e}")))
}

impl Client {
    /// A client for the cluster reachable at any of `nodes` (`host:port`
    /// of node APIs; more are learned from the cluster), authenticating
    /// with the cluster `secret`.
    pub fn new<I, S>(nodes: I, secret: &str) -> Client
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Client::with_tls(nodes, secret, None)
    }

    /// [`Client::new`], over mutual TLS when `tls` is set: the client
    /// presents its role's certificate and accepts only nodes whose
    /// certificate chains to the cluster CA and names the host of the
    /// node's address (see `bulwark_mtls`).
    pub fn with_tls<I, S>(nodes: I, secret: &str, tls: Option<bulwark_mtls::MutualTls>) -> Client
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let nodes =
            nodes.into_iter().map(|a| KnownNode { address: a.into(), role: None, rtt: None, healthy: true }).collect();
        Client {
            inner: Arc::new(Inner {
                http: HttpClient::new(secret, None, tls),
                nodes: Mutex::new(nodes),
                primary: Mutex::new(None),
                refreshed: Mutex::new(None),
                deadline: Duration::from_secs(10),
                attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            }),
        }
    }

    /// How long one call may keep retrying (failover, no primary yet)
    /// before it gives up with [`ClientError::Unavailable`]. Default 10 s.
    pub fn with_deadline(self, deadline: Duration) -> Client {
        self.rebuilt(deadline, self.inner.attempt_timeout)
    }

    /// How long one attempt of a retryable call (a read, or a write with a
    /// request id) waits for a node before it re-discovers the cluster and
    /// tries again: a paused or partitioned node holds the call this long,
    /// not the whole deadline. Default 1 s.
    pub fn with_attempt_timeout(self, attempt: Duration) -> Client {
        self.rebuilt(self.inner.deadline, attempt)
    }

    fn rebuilt(&self, deadline: Duration, attempt_timeout: Duration) -> Client {
        let inner = Inner {
            http: self.inner.http.clone(),
            nodes: Mutex::new(self.inner.nodes.lock().unwrap().clone()),
            primary: Mutex::new(self.inner.primary.lock().unwrap().clone()),
            refreshed: Mutex::new(None),
            deadline,
            attempt_timeout,
        };
        Client { inner: Arc::new(inner) }
    }

    /// Run `statements` as one transaction on the primary. Returns after a
    /// majority has the write, with a token for reading it back anywhere.
    ///
    /// The call carries a fresh request id, so the client retries it safely
    /// through a failover (a retry never applies the write twice).
    pub async fn execute(&self, statements: &[Statement]) -> Result<ExecuteResult, ClientError> {
        self.execute_once(&new_request_id(), statements).await
    }

    /// Like [`Client::execute`] with the caller's idempotency id: within
    /// an hour, every call with the same `request_id` gets the outcome of
    /// the first one that was applied (`replayed = true` on the others),
    /// whichever client or node it came through.
    pub async fn execute_once(&self, request_id: &str, statements: &[Statement]) -> Result<ExecuteResult, ClientError> {
        crate::api::check_request_id(request_id).map_err(|e| ClientError::Rejected {
            status: 400,
            code: "bad_request".into(),
            message: e.to_string(),
        })?;
        let body = ExecuteRequest { statements: statements.to_vec(), request_id: Some(request_id.to_string()) };
        let r = self.to_primary_with("/v1/execute", &body, true).await.map_err(|e| match e {
            ClientError::Ambiguous(mut a) => {
                a.request_id = Some(request_id.to_string());
                ClientError::Ambiguous(a)
            }
            e => e,
        })?;
        decode(&r)
    }

    /// Run a read-only statement. `Consistency::Strong` goes to the
    /// primary; otherwise the nearest healthy replica serves it, waiting
    /// for `token`'s write if given (or redirecting to the primary).
    ///
    /// A token the cluster refuses (`bad_token`: beyond the primary's log
    /// or of a term it never had, so forged or from another cluster) does
    /// not fail the read: it is sent again to the primary without the
    /// token, which has every committed write.
    pub async fn query(
        &self,
        sql: &str,
        params: Params,
        consistency: Consistency,
        token: Option<Token>,
    ) -> Result<Rows, ClientError> {
        let body = QueryRequest::new(sql, params, consistency, token);
        match self.query_request(&body, consistency == Consistency::Strong).await {
            Err(ClientError::Rejected { code, message, .. }) if body.token.is_some() && code == BAD_TOKEN => {
                tracing::debug!("token refused ({message}); reading from the primary without it");
                let body = QueryRequest { token: None, ..body };
                decode(&self.to_primary_with("/v1/query", &body, true).await?)
            }
            r => r,
        }
    }

    async fn query_request(&self, body: &QueryRequest, strong: bool) -> Result<Rows, ClientError> {
        if strong {
            return decode(&self.to_primary_with("/v1/query", body, true).await?);
        }
        let start = Instant::now();
        let mut last = String::from("no node answered");
        while start.elapsed() < self.inner.deadline {
            for addr in self.read_candidates().await {
                let remaining = self.inner.deadline.saturating_sub(start.elapsed()).max(Duration::from_millis(100));
                let attempt = remaining.min(self.read_attempt_timeout(body));
                let sent = match serde_json::to_vec(body) {
                    Ok(json) => {
                        let extra = x_request_id_header();
                        self.inner.http.send(http::Method::POST, &addr, "/v1/query", json.into(), &extra, attempt).await
                    }
                    Err(e) => return Err(ClientError::Unavailable(format!("encoding the request: {e}"))),
                };
                match sent {
                    Ok(r) if r.status == 200 => return decode(&r),
                    Ok(r) if r.status == 307 => {
                        // The replica could not serve it fresh enough: primary.
                        return decode(&self.to_primary_with("/v1/query", body, true).await?);
                    }
                    Ok(r) if r.status == 503 || r.status == 502 => {
                        last = error_body(&r).error;
                        self.mark(&addr, false);
                    }
                    Ok(r) => return Err(rejected(&r)),
                    Err(e) => {
                        last = e.to_string();
                        self.mark(&addr, false);
                    }
                }
            }
            self.refresh().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ClientError::Unavailable(last))
    }

    /// `/v1/status` of every known node that answers.
    pub async fn statuses(&self) -> Vec<NodeStatus> {
        self.refresh_inner(true).await
    }

    /// Make node `node_id` the primary (leadership transfer).
    pub async fn promote(&self, node_id: u64) -> Result<serde_json::Value, ClientError> {
        decode(&self.to_primary("/v1/promote", &NodeRef { node_id }).await?)
    }

    /// Add a node (voter or learner) online, known by its client API
    /// `address` and its Raft listener `raft_address`; returns the
    /// primary's status.
    pub async fn add_node(
        &self,
        node_id: u64,
        address: &str,
        raft_address: &str,
        voter: bool,
    ) -> Result<NodeStatus, ClientError> {
        let body = AddMember { node_id, address: address.to_string(), raft_address: raft_address.to_string(), voter };
        let status: NodeStatus = decode(&self.to_primary("/v1/members/add", &body).await?)?;
        self.learn_members(&status);
        Ok(status)
    }

    /// Remove a node from the cluster online; returns the primary's status.
    pub async fn remove_node(&self, node_id: u64) -> Result<NodeStatus, ClientError> {
        decode(&self.to_primary("/v1/members/remove", &NodeRef { node_id }).await?)
    }

    fn learn_members(&self, status: &NodeStatus) {
        let mut nodes = self.inner.nodes.lock().unwrap();
        for m in &status.members {
            if !nodes.iter().any(|n| n.address == m.address) {
                nodes.push(KnownNode { address: m.address.clone(), role: None, rtt: None, healthy: true });
            }
        }
    }

    fn mark(&self, addr: &str, healthy: bool) {
        if let Some(n) = self.inner.nodes.lock().unwrap().iter_mut().find(|n| n.address == addr) {
            n.healthy = healthy;
        }
    }

    /// Healthy replicas by round-trip time, then the primary, then the rest.
    async fn read_candidates(&self) -> Vec<String> {
        let stale = self.inner.refreshed.lock().unwrap().is_none_or_older(Duration::from_secs(5));
        if self.inner.refreshed.lock().unwrap().is_none() {
            self.refresh().await;
        } else if stale {
            let c = self.clone();
            tokio::spawn(async move { c.refresh().await });
        }
        let mut nodes = self.inner.nodes.lock().unwrap().clone();
        let rank = |n: &KnownNode| {
            let class = match (n.healthy, n.role) {
                (true, Some(r)) if r.follows() => 0,
                (true, Some(DbRole::Primary)) => 1,
                (true, _) => 2,
                _ => 3,
            };
            (class, n.rtt.unwrap_or(Duration::MAX))
        };
        nodes.sort_by_key(rank);
        nodes.into_iter().map(|n| n.address).collect()
    }

    async fn refresh(&self) {
        self.refresh_inner(false).await;
    }

    /// Ask every known node for its status (in parallel); learn roles,
    /// round-trip times, new members and the primary. Unless `every_node`,
    /// returns as soon as a primary with a majority has answered (the other
    /// probes go on and update the node list when they finish), so a silent
    /// node does not hold up a failover; the statuses returned are then
    /// only those received so far.
    async fn refresh_inner(&self, every_node: bool) -> Vec<NodeStatus> {
        let addrs: Vec<String> = self.inner.nodes.lock().unwrap().iter().map(|n| n.address.clone()).collect();
        let probes = addrs.len();
        let (tx, mut rx) = tokio::sync::mpsc::channel(probes.max(1));
        for a in addrs {
            let http = self.inner.http.clone();
            let tx = tx.clone();
            let client = self.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let r = http
                    .send(http::Method::GET, &a, "/v1/status", bytes::Bytes::new(), &[], STATUS_PROBE_TIMEOUT)
                    .await;
                let status = match r {
                    Ok(r) if r.status == 200 => serde_json::from_slice::<NodeStatus>(&r.body).ok(),
                    _ => None,
                };
                client.learn_status(&a, status.as_ref(), t.elapsed());
                let _ = tx.send((a, status)).await;
            });
        }
        drop(tx);
        let mut out = Vec::new();
        let mut silent = Vec::new();
        let mut primary = None;
        while let Some((addr, status)) = rx.recv().await {
            match status {
                Some(s) if s.role == DbRole::Primary && s.quorum => {
                    primary = Some(s.address.clone());
                    out.push(s);
                    if !every_node && out.len() + silent.len() < probes {
                        // Found it: do not wait for slow or silent nodes.
                        break;
                    }
                }
                Some(s) => out.push(s),
                None => silent.push(addr),
            }
        }
        if primary.is_none() {
            // No node says it is a working primary: take the leader the
            // others name, unless it did not answer itself.
            primary = out.iter().filter_map(|s| s.leader_address.clone()).find(|l| !silent.contains(l));
        }
        if primary.is_some() {
            *self.inner.primary.lock().unwrap() = primary;
        }
        *self.inner.refreshed.lock().unwrap() = Some(Instant::now());
        out
    }

    /// Record what one status probe of `addr` found.
    fn learn_status(&self, addr: &str, status: Option<&NodeStatus>, rtt: Duration) {
        let mut nodes = self.inner.nodes.lock().unwrap();
        if let Some(n) = nodes.iter_mut().find(|n| n.address == addr) {
            n.healthy = status.is_some();
            n.role = status.map(|s| s.role);
            n.rtt = status.map(|_| rtt);
        }
        if let Some(s) = status {
            for m in &s.members {
                if !nodes.iter().any(|n| n.address == m.address) {
                    nodes.push(KnownNode { address: m.address.clone(), role: None, rtt: None, healthy: true });
                }
            }
        }
    }

    /// How long one read attempt may take: a token read may wait on the
    /// replica (`read_wait`, 2 s by default) before it answers.
    fn read_attempt_timeout(&self, body: &QueryRequest) -> Duration {
        let wait = if body.token.is_some() { Duration::from_secs(2) } else { Duration::ZERO };
        self.inner.attempt_timeout * 2 + wait
    }

    /// Send to the primary; see [`Client::to_primary_with`]. Not
    /// idempotent: retried only when the request surely did not arrive.
    async fn to_primary<T: serde::Serialize>(&self, path: &str, body: &T) -> Result<HttpReply, ClientError> {
        self.to_primary_with(path, body, false).await
    }

    /// Send to the primary: follow redirects and re-discover it on failure.
    /// An `idempotent` request (a read, or a write with a request id) is
    /// retried after any failure, each attempt bounded by the attempt
    /// timeout; any other is retried only when it surely did not arrive.
    async fn to_primary_with<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
        idempotent: bool,
    ) -> Result<HttpReply, ClientError> {
        let start = Instant::now();
        // Keep the member list fresh so a failover finds nodes added since.
        if self.inner.refreshed.lock().unwrap().is_none_or_older(Duration::from_secs(5)) {
            let c = self.clone();
            tokio::spawn(async move { c.refresh().await });
        }
        let body = bytes::Bytes::from(
            serde_json::to_vec(body).map_err(|e| ClientError::Unavailable(format!("encoding the request: {e}")))?,
        );
        let extra = x_request_id_header();
        let mut target: Option<String> = None;
        let mut last = String::from("no primary found");
        // An attempt that may have reached a primary: if the deadline ends
        // after one, the outcome is unknown rather than "not written".
        let mut maybe_delivered = false;
        let mut pause = Duration::from_millis(20);
        let give_up = |last: String, maybe_delivered: bool| {
            if maybe_delivered {
                ClientError::Ambiguous(AmbiguousWrite::new(last))
            } else {
                ClientError::Unavailable(last)
            }
        };
        while start.elapsed() < self.inner.deadline {
            // Bind first: a guard in the match scrutinee would live across
            // the awaits below and make this future !Send.
            let known = target.take().or_else(|| self.inner.primary.lock().unwrap().clone());
            let addr = match known {
                Some(a) => a,
                None => {
                    self.refresh().await;
                    let primary = self.inner.primary.lock().unwrap().clone();
                    match primary {
                        Some(a) => a,
                        None => {
                            // Try any node: a replica forwards or redirects.
                            let any =
                                self.inner.nodes.lock().unwrap().iter().find(|n| n.healthy).map(|n| n.address.clone());
                            match any {
                                Some(a) => a,
                                None => {
                                    tokio::time::sleep(pause).await;
                                    pause = (pause * 2).min(Duration::from_millis(200));
                                    continue;
                                }
                            }
                        }
                    }
                }
            };
            let remaining = self.inner.deadline.saturating_sub(start.elapsed()).max(Duration::from_millis(100));
            let attempt = if idempotent { remaining.min(self.inner.attempt_timeout) } else { remaining };
            let sent = self.inner.http.send(http::Method::POST, &addr, path, body.clone(), &extra, attempt).await;
            match sent {
                Ok(r) if r.status == 200 => {
                    *self.inner.primary.lock().unwrap() = Some(addr);
                    return Ok(r);
                }
                Ok(r) if r.status == 307 => {
                    target = r.location.as_deref().and_then(addr_of_location);
                    *self.inner.primary.lock().unwrap() = target.clone();
                }
                Ok(r) if r.status == 503 || r.status == 502 => {
                    let b = error_body(&r);
                    if !b.retryable && !idempotent {
                        return Err(ClientError::Ambiguous(AmbiguousWrite::new(b.error)));
                    }
                    maybe_delivered |= !b.retryable;
                    last = b.error;
                    *self.inner.primary.lock().unwrap() = None;
                    target = b.leader.filter(|l| *l != addr);
                    if target.is_none() {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(200));
                    }
                }
                Ok(r) => return Err(rejected(&r)),
                Err(e @ TransportError::Connect(..)) => {
                    last = e.to_string();
                    self.mark(&addr, false);
                    *self.inner.primary.lock().unwrap() = None;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(e) if idempotent => {
                    // Timed out or cut off: the node may be paused, dead or
                    // cut off from the rest; look for the primary again.
                    tracing::debug!(node = %addr, "retrying elsewhere after: {e}");
                    last = e.to_string();
                    maybe_delivered = true;
                    self.mark(&addr, false);
                    *self.inner.primary.lock().unwrap() = None;
                }
                Err(e) => return Err(ClientError::Ambiguous(AmbiguousWrite::new(e.to_string()))),
            }
        }
        Err(give_up(last, maybe_delivered))
    }
}

trait Staleness {
    fn is_none_or_older(&self, age: Duration) -> bool;
}

impl Staleness for Option<Instant> {
    fn is_none_or_older(&self, age: Duration) -> bool {
        self.is_none_or(|t| t.elapsed() > age)
    }
}
