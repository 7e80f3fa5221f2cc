//! The role's HTTP client towards its program, over whichever socket the
//! program listens on ([`ProgramAddress`]).
//!
//! A Unix socket is reached through [`ProgramSocket`], written here rather
//! than taken from `hyperlocal`: the role (often root) must talk to its
//! program and nothing else. The socket's directory belongs to the
//! program's user, so a compromised program could put a link to another
//! socket in its place (the Docker socket, `bulwark up`'s control socket),
//! which a root `connect` would follow. Every connection's peer must
//! therefore run as the program's user. (A listener of another service
//! running as that same user, behind a directory that user cannot enter,
//! would still pass: connecting with the program's file-system
//! credentials would close that too.)
use super::ProgramAddress;
use hyper::body::Body;
use hyper_util::client::legacy::{connect::HttpConnector, Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long a connection to the program may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle kept connection is kept (a program whose workers close
/// each connection leaves none).
const POOL_IDLE: Duration = Duration::from_secs(30);

/// One pool per kind of socket; requests go to the program's address of
/// the moment.
pub(crate) struct ProgramClient<B> {
    tcp: Client<HttpConnector, B>,
    unix: Client<ProgramSocket, B>,
}

impl<B> ProgramClient<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A client that keeps idle connections open (`keep_idle`) or closes
    /// each after its answer (the health probe: a probe must not hold one of
    /// the program's few connections). Over a Unix socket it talks only to
    /// a peer running as `program_uid`.
    pub(crate) fn new(keep_idle: bool, program_uid: u32) -> ProgramClient<B> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_timer(TokioTimer::new());
        if keep_idle {
            builder.pool_idle_timeout(POOL_IDLE);
        } else {
            builder.pool_max_idle_per_host(0);
        }
        ProgramClient { tcp: builder.build(connector), unix: builder.build(ProgramSocket { program_uid }) }
    }

    /// Send `req`, whose URI is `to.uri(..)`, to the program at `to`. A
    /// connection to a Unix socket opens or fails at once (a full backlog
    /// refuses it), so only TCP needs the connect timeout.
    pub(crate) fn request(&self, to: &ProgramAddress, req: http::Request<B>) -> ResponseFuture {
        match to {
            ProgramAddress::Tcp(_) => self.tcp.request(req),
            ProgramAddress::Unix(_) => self.unix.request(req),
        }
    }
}

/// Why a connection to the program's Unix socket was not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketConnectError {
    #[error("`{0}` does not name a socket of the program")]
    NotASocketUri(http::Uri),
    #[error("connecting to {}", path.display())]
    Connect { path: PathBuf, source: std::io::Error },
    #[error(
        "refused {}: its listener runs as uid {peer}, not as the program's user (uid {program}); \
         was the socket replaced?",
        path.display()
    )]
    NotTheProgram { path: PathBuf, peer: u32, program: u32 },
}

/// Connects to the socket path a [`ProgramAddress::uri`] carries, and
/// keeps the connection only when its listener runs as the program's user.
#[derive(Clone, Copy)]
pub(crate) struct ProgramSocket {
    program_uid: u32,
}

impl tower_service::Service<http::Uri> for ProgramSocket {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = SocketConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let program = self.program_uid;
        Box::pin(async move {
            let path = socket_path(&uri).ok_or(SocketConnectError::NotASocketUri(uri))?;
            let connect = |source| SocketConnectError::Connect { path: path.clone(), source };
            let stream = tokio::net::UnixStream::connect(&path).await.map_err(connect)?;
            let peer = stream.peer_cred().map_err(connect)?.uid();
            if peer != program {
                return Err(SocketConnectError::NotTheProgram { path, peer, program });
            }
            Ok(TokioIo::new(stream))
        })
    }
}

/// The socket path of a `unix://HEX:0/...` URI (the path's bytes, exactly).
fn socket_path(uri: &http::Uri) -> Option<PathBuf> {
    if uri.scheme_str() != Some("unix") {
        return None;
    }
    let bytes = hex::decode(uri.host()?).ok()?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_uri_carries_its_path_byte_for_byte() {
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/d\xffir/program-7.sock"));
        let uri = ProgramAddress::Unix(path.clone()).uri("/a/b?c=d").unwrap();
        assert_eq!(uri.path_and_query().unwrap().as_str(), "/a/b?c=d");
        assert_eq!(socket_path(&uri), Some(path));
        assert_eq!(socket_path(&"http://127.0.0.1:80/".parse().unwrap()), None);
        assert_eq!(socket_path(&"unix://zz:0/".parse().unwrap()), None);
    }
}
