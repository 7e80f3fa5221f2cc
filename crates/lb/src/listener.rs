//! Worker threads and their listeners. Each worker is an OS thread with a
//! `current_thread` runtime and its own SO_REUSEPORT socket per frontend, so
//! the kernel spreads connections across workers and a connection is
//! handled start to finish by one thread (no work stealing, no shared
//! connection pool lock).
use crate::routing::Routing;
use arc_swap::ArcSwap;
use bulwark_config::lb::{Frontend, Mode};
use bulwark_proxy::{ClientContext, ProxyBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) struct BoundFrontend {
    pub index: usize,
    pub name: String,
    pub addr: SocketAddr,
    pub mode: Mode,
    /// One socket per worker (SO_REUSEPORT), or one shared socket.
    sockets: Vec<std::net::TcpListener>,
}

fn listen_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

impl BoundFrontend {
    pub fn bind(index: usize, f: &Frontend, threads: usize) -> std::io::Result<BoundFrontend> {
        let want: SocketAddr =
            f.bind.parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
        let first = listen_socket(want, f.reuse_port)?;
        // A `:0` bind resolves to a concrete port that the other workers share.
        let addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..threads {
            if f.reuse_port {
                sockets.push(listen_socket(addr, true)?);
            } else {
                sockets.push(sockets[0].try_clone()?);
            }
        }
        Ok(BoundFrontend { index, name: f.name.clone(), addr, mode: f.mode, sockets })
    }
}

pub(crate) fn spawn_workers(
    threads: usize,
    frontends: Vec<BoundFrontend>,
    routing: Arc<ArcSwap<Routing>>,
    shutdown: CancellationToken,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    // Hand socket k of every frontend to worker k.
    let mut per_worker: Vec<Vec<(usize, String, Mode, std::net::TcpListener)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for f in frontends {
        for (k, s) in f.sockets.into_iter().enumerate() {
            per_worker[k].push((f.index, f.name.clone(), f.mode, s));
        }
    }
    let mut handles = Vec::new();
    for (k, listeners) in per_worker.into_iter().enumerate() {
        let (routing, shutdown) = (routing.clone(), shutdown.clone());
        let h = std::thread::Builder::new().name(format!("lb-worker-{k}")).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("worker {k}: cannot build runtime: {e}");
                    return;
                }
            };
            rt.block_on(worker(listeners, routing, shutdown));
        })?;
        handles.push(h);
    }
    Ok(handles)
}

async fn worker(
    listeners: Vec<(usize, String, Mode, std::net::TcpListener)>,
    routing: Arc<ArcSwap<Routing>>,
    shutdown: CancellationToken,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let tunnels = tokio_util::task::TaskTracker::new();
    let mut accepting = tokio::task::JoinSet::new();
    for (index, name, mode, std_listener) in listeners {
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(frontend = %name, "cannot register listener: {e}");
                continue;
            }
        };
        let (routing, graceful, tunnels, stop) = (routing.clone(), graceful.clone(), tunnels.clone(), shutdown.clone());
        accepting.spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            // EMFILE and friends: back off briefly instead of spinning.
                            tracing::warn!(frontend = %name, "accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                };
                let _ = stream.set_nodelay(true);
                match mode {
                    Mode::Http => serve_http(index, stream, peer, &routing, &graceful),
                    Mode::Tcp => {
                        let r = routing.load_full();
                        let upstream = r.forwarders[index].upstream.clone();
                        let t = r.config.timeouts.clone();
                        tunnels.spawn(async move {
                            bulwark_proxy::tcp::tunnel(&upstream, stream, peer, t.connect, t.tunnel).await;
                        });
                    }
                }
            }
        });
    }
    shutdown.cancelled().await;
    // Stop accepting: close the listening sockets.
    while accepting.join_next().await.is_some() {}
    let drain = routing.load().config.timeouts.drain;
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
    tunnels.close();
    let all = async {
        graceful.shutdown().await;
        tunnels.wait().await;
    };
    if tokio::time::timeout(drain, all).await.is_err() {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
}

fn serve_http(
    index: usize,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    routing: &Arc<ArcSwap<Routing>>,
    graceful: &GracefulShutdown,
) {
    let cfg = routing.load();
    let t = &cfg.config.timeouts;
    let f = &cfg.config.frontends[index];
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(t.client_header)
        .max_buf_size(f.max_header_bytes.max(8192))
        // One flat buffer per response: one send instead of a writev of
        // head and body (measured cheaper for small responses).
        .writev(false)
        .keep_alive(true);
    let routing = routing.clone();
    let ctx = Arc::new(ClientContext::new(peer, "http"));
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let fwd = routing.load().forwarders[index].clone();
        let ctx = ctx.clone();
        async move { Ok::<hyper::Response<ProxyBody>, Infallible>(fwd.forward(req, &ctx).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(client = %peer, "client connection ended: {e}");
        }
    });
}
