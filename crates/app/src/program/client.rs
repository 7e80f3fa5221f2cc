//! The role's HTTP client towards its program, over whichever socket the
//! program listens on ([`ProgramAddress`]).
use super::ProgramAddress;
use hyper::body::Body;
use hyper_util::client::legacy::{connect::HttpConnector, Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyperlocal::UnixConnector;
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
    unix: Client<UnixConnector, B>,
}

impl<B> ProgramClient<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A client that keeps idle connections open (`keep_idle`) or closes
    /// each after its answer (the health probe: a probe must not hold one of
    /// the program's few connections).
    pub(crate) fn new(keep_idle: bool) -> ProgramClient<B> {
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
        ProgramClient { tcp: builder.build(connector), unix: builder.build(UnixConnector) }
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
