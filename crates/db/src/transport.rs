//! HTTP between nodes and from clients: one keep-alive connection pool that
//! always sends the cluster secret, and the Raft network over it.
use crate::raft_types::{Node, NodeId, TypeConfig};
use crate::state_machine::Applied;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Header carrying the sender primary's applied index (lag reporting).
pub const APPLIED_INDEX_HEADER: &str = "x-bulwark-applied-index";
/// Header carrying the sender primary's clock of its last applied write.
pub const APPLIED_TIME_HEADER: &str = "x-bulwark-applied-time";

/// How long a Raft RPC may keep its connection busy after openraft stopped
/// waiting for it (see [`PeerConnection`]'s `call`).
const RPC_BACKGROUND_LIMIT: Duration = Duration::from_secs(5);

/// Why an HTTP exchange failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing was sent: the peer could not be reached. Safe to retry.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// The request may have been (partly) delivered.
    #[error("request to {0} failed: {1}")]
    Io(String, String),
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
}

/// A response read completely.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub location: Option<String>,
    pub body: Bytes,
}

/// A pooled HTTP/1.1 client that sends `Authorization: Bearer <secret>`.
#[derive(Clone)]
pub struct HttpClient {
    client: HyperClient<HttpConnector, Full<Bytes>>,
    auth: Arc<str>,
}

impl HttpClient {
    /// `local_ip`: source address of outgoing connections (a node uses its
    /// own listen address so that peers see a stable identity).
    pub fn new(secret: &str, local_ip: Option<IpAddr>) -> HttpClient {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(2)));
        conn.set_local_address(local_ip);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            .build(conn);
        HttpClient { client, auth: format!("Bearer {secret}").into() }
    }

    /// Send one request to `http://{addr}{path}` and read the whole answer.
    pub async fn send(
        &self,
        method: http::Method,
        addr: &str,
        path: &str,
        body: Bytes,
        extra: &[(&'static str, String)],
        timeout: Duration,
    ) -> Result<HttpReply, TransportError> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(http::header::AUTHORIZATION, &*self.auth)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (k, v) in extra {
            b = b.header(*k, v);
        }
        let req = b.body(Full::new(body)).map_err(|e| TransportError::Connect(addr.to_string(), e.to_string()))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    TransportError::Connect(addr.to_string(), e.to_string())
                } else {
                    TransportError::Io(addr.to_string(), e.to_string())
                }
            })?;
            let status = resp.status().as_u16();
            let location = resp.headers().get(http::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| TransportError::Io(addr.to_string(), e.to_string()))?
                .to_bytes();
            Ok(HttpReply { status, location, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout(addr.to_string(), timeout)),
        }
    }

    pub async fn post_json<T: serde::Serialize>(
        &self,
        addr: &str,
        path: &str,
        value: &T,
        timeout: Duration,
    ) -> Result<HttpReply, TransportError> {
        let body = serde_json::to_vec(value).map_err(|e| TransportError::Connect(addr.to_string(), e.to_string()))?;
        self.send(http::Method::POST, addr, path, body.into(), &[], timeout).await
    }
}

/// Creates a [`PeerConnection`] per replication target.
pub struct RaftTransport {
    pub http: HttpClient,
    /// This node's applied state, sent to followers as a lag reference.
    pub applied: watch::Receiver<Applied>,
}

/// The Raft RPCs to one peer, over HTTP.
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    http: HttpClient,
    applied: watch::Receiver<Applied>,
}

impl RaftNetworkFactory<TypeConfig> for RaftTransport {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConnection {
        PeerConnection { target, addr: node.addr.clone(), http: self.http.clone(), applied: self.applied.clone() }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl PeerConnection {
    async fn call<Req, Resp, E>(&self, path: &str, req: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let a = *self.applied.borrow();
        let hints = [(APPLIED_INDEX_HEADER, a.index.to_string()), (APPLIED_TIME_HEADER, a.time_ms.to_string())];
        // openraft gives an AppendEntries one heartbeat interval and drops
        // this future when it runs out. Dropping an HTTP exchange closes its
        // connection, and the next one pays a new handshake, which on a slow
        // or lossy link again takes longer than the interval: replication
        // would never recover. So the exchange runs as a task of its own
        // with a longer limit and keeps its connection in the pool however
        // this call ends.
        let http = self.http.clone();
        let addr = self.addr.clone();
        let path = path.to_string();
        let limit = option.hard_ttl().max(RPC_BACKGROUND_LIMIT);
        let exchange = tokio::spawn(async move {
            let hints: Vec<(&'static str, String)> = hints.into();
            http.send(http::Method::POST, &addr, &path, body.into(), &hints, limit).await
        });
        let reply = exchange
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&TransportError::Io(self.addr.clone(), e.to_string()))))?
            .map_err(|e| match e {
                TransportError::Connect(..) => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        if reply.status != 200 {
            let e = TransportError::Io(
                self.addr.clone(),
                format!("HTTP {}: {}", reply.status, String::from_utf8_lossy(&reply.body)),
            );
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let res: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.body).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call("/raft/vote", &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // A dead peer is retried often enough that a restarted node rejoins
        // quickly, without spinning.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
