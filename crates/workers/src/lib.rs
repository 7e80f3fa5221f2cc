//! The worker model the lb and web roles share (nginx's): a fixed number
//! of OS threads, each running a `current_thread` tokio runtime with a
//! `LocalSet`, each with its own listening socket per listen address. With
//! SO_REUSEPORT the kernel spreads new connections across the workers'
//! sockets, so a connection is handled start to finish by one thread: no
//! work stealing, and per-thread state (connection pools, file caches)
//! needs no lock.
//!
//! Owns: binding a listen address once per worker ([`WorkerListeners`]),
//! starting the worker threads and handing socket `k` of every address to
//! worker `k` ([`spawn`]), and taking the next connection off a socket
//! until shutdown ([`next_connection`]).
//!
//! Must not touch: what a worker does with a connection (limits, TLS,
//! HTTP, draining); the roles pass that in as a closure.

use socket2::{Domain, Protocol, Socket, Type};
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Pending connections the kernel queues per socket before `accept`.
const LISTEN_BACKLOG: i32 = 4096;

/// How the workers share one listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketSharing {
    /// One SO_REUSEPORT socket per worker: the kernel spreads connections
    /// across them, and another process that also sets SO_REUSEPORT can
    /// share the port (a second lb or web beside a crashed one).
    ReusePort,
    /// One socket, cloned into every worker: they accept from one queue,
    /// and no other process can bind the port.
    Shared,
}

/// One listen address, bound once per worker.
#[derive(Debug)]
pub struct WorkerListeners {
    addr: SocketAddr,
    sockets: Vec<TcpListener>,
}

impl WorkerListeners {
    /// Bind `addr` for `workers` workers (at least one). A `:0` port is
    /// chosen by the first bind and shared by the others.
    pub fn bind(addr: SocketAddr, workers: usize, sharing: SocketSharing) -> io::Result<WorkerListeners> {
        let reuse_port = sharing == SocketSharing::ReusePort;
        let first = listen_socket(addr, reuse_port)?;
        let addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers {
            let next = if reuse_port { listen_socket(addr, true)? } else { sockets[0].try_clone()? };
            sockets.push(next);
        }
        Ok(WorkerListeners { addr, sockets })
    }

    /// The address bound (with the port the kernel chose for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A non-blocking listening TCP socket with SO_REUSEADDR, TCP_NODELAY
/// (inherited by accepted connections) and, if asked, SO_REUSEPORT.
fn listen_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG)?;
    Ok(s.into())
}

/// Start `workers` threads named `{role}-worker-{k}`. Worker `k` gets
/// socket `k` of every listen address, each beside its label, and runs the
/// future `serve(k, sockets)` on its own `current_thread` runtime inside a
/// `LocalSet` (so it may `spawn_local`) until that future ends.
///
/// Every [`WorkerListeners`] must have been bound for the same `workers`.
pub fn spawn<L, F, Fut>(
    role: &str,
    workers: usize,
    listeners: Vec<(L, WorkerListeners)>,
    serve: F,
) -> io::Result<Vec<JoinHandle<()>>>
where
    L: Send + Clone + 'static,
    F: Fn(usize, Vec<(L, TcpListener)>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut per_worker: Vec<Vec<(L, TcpListener)>> = (0..workers).map(|_| Vec::new()).collect();
    for (label, bound) in listeners {
        if bound.sockets.len() != workers {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} was bound for {} workers, not {workers}", bound.addr, bound.sockets.len()),
            ));
        }
        for (k, socket) in bound.sockets.into_iter().enumerate() {
            per_worker[k].push((label.clone(), socket));
        }
    }
    let mut handles = Vec::with_capacity(workers);
    for (k, sockets) in per_worker.into_iter().enumerate() {
        let serve = serve.clone();
        let handle = std::thread::Builder::new().name(format!("{role}-worker-{k}")).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("worker {k}: cannot build runtime: {e}");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, serve(k, sockets));
        })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// The next connection on `listener` with its peer address, or `None` once
/// `stop` is cancelled. A failed accept (out of file descriptors and the
/// like) is logged under `name` and tried again after a short pause instead
/// of spinning.
pub async fn next_connection(
    listener: &tokio::net::TcpListener,
    stop: &CancellationToken,
    name: &str,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    const ACCEPT_FAILURE_PAUSE: Duration = Duration::from_millis(10);
    loop {
        tokio::select! {
            // Stop first: once stopped, a waiting connection is not taken.
            biased;
            _ = stop.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => {
                    tracing::warn!(listener = %name, "accept failed: {e}");
                    tokio::time::sleep(ACCEPT_FAILURE_PAUSE).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn loopback_any_port() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn a_zero_port_is_chosen_once_and_shared_by_every_worker() {
        for sharing in [SocketSharing::ReusePort, SocketSharing::Shared] {
            let bound = WorkerListeners::bind(loopback_any_port(), 3, sharing).unwrap();
            assert_ne!(bound.local_addr().port(), 0);
            assert_eq!(bound.sockets.len(), 3);
            for s in &bound.sockets {
                assert_eq!(s.local_addr().unwrap(), bound.local_addr(), "{sharing:?}");
            }
        }
    }

    #[test]
    fn reuse_port_lets_another_process_share_the_port_and_shared_does_not() {
        let reusing = WorkerListeners::bind(loopback_any_port(), 1, SocketSharing::ReusePort).unwrap();
        let second = WorkerListeners::bind(reusing.local_addr(), 2, SocketSharing::ReusePort).unwrap();
        assert_eq!(second.local_addr(), reusing.local_addr());

        let exclusive = WorkerListeners::bind(loopback_any_port(), 2, SocketSharing::Shared).unwrap();
        let err = WorkerListeners::bind(exclusive.local_addr(), 1, SocketSharing::ReusePort).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn worker_k_gets_socket_k_of_every_address_and_accepts_on_it() {
        let workers = 2;
        let a = WorkerListeners::bind(loopback_any_port(), workers, SocketSharing::Shared).unwrap();
        let b = WorkerListeners::bind(loopback_any_port(), workers, SocketSharing::Shared).unwrap();
        let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
        let (tx, rx) = mpsc::channel();
        let handles = spawn("test", workers, vec![("a", a), ("b", b)], move |k, sockets| {
            let tx = tx.clone();
            async move {
                let name = std::thread::current().name().unwrap_or_default().to_string();
                let labels: Vec<_> = sockets.iter().map(|(l, s)| (*l, s.local_addr().unwrap())).collect();
                // The runtime and its LocalSet are live: spawn_local and
                // a tokio listener both work here.
                let (label, socket) = sockets.into_iter().next().unwrap();
                let listener = tokio::net::TcpListener::from_std(socket).unwrap();
                let accepted = tokio::task::spawn_local(async move { listener.accept().await.is_ok() });
                tx.send((k, name, labels, label)).unwrap();
                assert!(accepted.await.unwrap());
            }
        })
        .unwrap();
        let mut seen = Vec::new();
        for _ in 0..workers {
            let (k, name, labels, _) = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
            assert_eq!(name, format!("test-worker-{k}"));
            assert_eq!(labels, vec![("a", a_addr), ("b", b_addr)]);
            seen.push(k);
        }
        seen.sort();
        assert_eq!(seen, vec![0, 1]);
        // Each worker waits on one accept of the shared socket "a".
        let _c1 = std::net::TcpStream::connect(a_addr).unwrap();
        let _c2 = std::net::TcpStream::connect(a_addr).unwrap();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[tokio::test]
    async fn next_connection_takes_connections_until_stopped() {
        let listener = tokio::net::TcpListener::bind(loopback_any_port()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_, peer) = next_connection(&listener, &stop, "test").await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        stop.cancel();
        // Stopped: no connection, even with one waiting.
        let _waiting = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(next_connection(&listener, &stop, "test").await.is_none());
    }

    #[test]
    fn listeners_bound_for_another_worker_count_are_refused() {
        let bound = WorkerListeners::bind(loopback_any_port(), 2, SocketSharing::Shared).unwrap();
        let err = spawn("test", 3, vec![((), bound)], |_, _| async {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
