//! The control socket of a running `bulwark up`: a Unix socket under the
//! data directory speaking one JSON request and one JSON reply per line.
//! `bulwark status`, `bulwark stop NODE` and `bulwark start NODE` use it;
//! `kill` (SIGKILL, kept down until `start`) is for chaos tests.
//!
//! Whoever can use the socket can stop the site, so it is mode 0600 (in a
//! 0700 data directory) and, should those modes be loosened, every
//! connection is still checked with `SO_PEERCRED`: only the supervisor's
//! own user and root are served; anyone else gets one refusal line.
use crate::supervisor::{ChildStatus, Supervisor};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum ControlRequest {
    Status,
    Stop {
        node: String,
    },
    /// SIGKILL the node and keep it down until `start`.
    Kill {
        node: String,
    },
    Start {
        node: String,
    },
    Restart {
        node: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ControlReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub children: Vec<ChildStatus>,
}

impl Supervisor {
    /// Serve the control socket at `path` until `stop`.
    pub async fn serve_control(&self, path: &Path, stop: CancellationToken) -> Result<(), crate::SupervisorError> {
        let _ = std::fs::remove_file(path);
        let control_err = |e| crate::SupervisorError::Control(path.display().to_string(), e);
        let listener = tokio::net::UnixListener::bind(path).map_err(control_err)?;
        crate::private::tighten(path).map_err(control_err)?;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                };
                let me = me.clone();
                tokio::spawn(async move {
                    if let Err(why) = peer_allowed(&stream) {
                        tracing::warn!("control socket: {why}");
                        refuse(stream, why.to_string()).await;
                        return;
                    }
                    let (r, mut w) = stream.into_split();
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let reply = match serde_json::from_str::<ControlRequest>(&line) {
                            Err(e) => {
                                ControlReply { ok: false, error: Some(format!("bad request: {e}")), children: vec![] }
                            }
                            Ok(req) => me.handle(req).await,
                        };
                        let mut out = serde_json::to_string(&reply).unwrap_or_default();
                        out.push('\n');
                        if w.write_all(out.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(())
    }

    async fn handle(&self, req: ControlRequest) -> ControlReply {
        let result = match &req {
            ControlRequest::Status => Ok(()),
            ControlRequest::Stop { node } => self.set_wanted(node, false),
            ControlRequest::Kill { node } => self.kill_and_hold(node),
            ControlRequest::Start { node } => self.set_wanted(node, true),
            ControlRequest::Restart { node } => self.set_wanted(node, false),
        };
        if let Err(e) = result {
            return ControlReply { ok: false, error: Some(e.to_string()), children: self.status() };
        }
        match &req {
            ControlRequest::Stop { node } | ControlRequest::Kill { node } => {
                self.wait_state(node, "stopped", std::time::Duration::from_secs(30)).await;
            }
            ControlRequest::Restart { node } => {
                self.wait_state(node, "stopped", std::time::Duration::from_secs(30)).await;
                let _ = self.set_wanted(node, true);
                let _ = self.wait_ready(node).await;
            }
            ControlRequest::Start { node } => {
                if let Err(e) = self.wait_ready(node).await {
                    return ControlReply { ok: false, error: Some(e.to_string()), children: self.status() };
                }
            }
            ControlRequest::Status => {}
        }
        ControlReply { ok: true, error: None, children: self.status() }
    }
}

/// Why a peer of the control socket is turned away: it is the client's
/// fault, and asking again as the same user cannot help.
#[derive(Debug, thiserror::Error)]
enum PeerRefused {
    #[error("refused: cannot read the peer's credentials: {0}")]
    NoCredentials(#[source] std::io::Error),
    #[error("refused: this control socket serves only uid {ours} and root, not uid {uid}{}", pid.map(|p| format!(", pid {p}")).unwrap_or_default())]
    OtherUser { ours: u32, uid: u32, pid: Option<i32> },
}

/// Only the supervisor's own user and root may use the control socket.
fn peer_allowed(stream: &tokio::net::UnixStream) -> Result<(), PeerRefused> {
    let ours = nix::unistd::geteuid().as_raw();
    let peer = stream.peer_cred().map_err(PeerRefused::NoCredentials)?;
    if peer.uid() == ours || peer.uid() == 0 {
        return Ok(());
    }
    Err(PeerRefused::OtherUser { ours, uid: peer.uid(), pid: peer.pid() })
}

/// Answer a refused peer's request with the reason, without acting on it.
async fn refuse(stream: tokio::net::UnixStream, why: String) {
    let (r, mut w) = stream.into_split();
    // Read the request line first (bounded in size and time): a client
    // still writing into a socket closed under it would see EPIPE, not why.
    let mut line = String::new();
    let mut request = BufReader::new(r.take(64 * 1024));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), request.read_line(&mut line)).await;
    let reply = ControlReply { ok: false, error: Some(why), children: vec![] };
    let mut out = serde_json::to_string(&reply).unwrap_or_default();
    out.push('\n');
    let _ = w.write_all(out.as_bytes()).await;
}

/// Send one request to the control socket at `path`.
pub async fn request(path: &Path, req: &ControlRequest) -> std::io::Result<ControlReply> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(req).map_err(std::io::Error::other)?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    let mut lines = BufReader::new(r).lines();
    let reply = lines.next_line().await?.ok_or_else(|| std::io::Error::other("control socket closed"))?;
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}
