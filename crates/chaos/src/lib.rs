//! The chaos suite's harness: a whole topology on network
//! namespaces, one per topology host, like separate machines; a workload
//! client that records every acknowledged write and every answer; faults
//! (kill -9, SIGSTOP/SIGCONT, iptables partitions, delay and loss between
//! the db hosts by tc netem or, on kernels without it, the NFQUEUE delayer
//! `chaos-netdelay` ([`netdelay`]), lb restarts);
//! end checks (no acknowledged write lost, no duplicates, at most one
//! primary per term, every replica identical, read-your-writes, failover
//! time) and a markdown report. The floating address stacks put two lb
//! hosts behind VRRP addresses, fault the lb hosts (kill -9 of the whole
//! host, SIGSTOP, link cut, graceful stop) and measure each takeover
//! ([`floating`]).
//!
//! Owns: `crates/chaos/**`. Must not touch: the host's network. Every test
//! re-runs itself under `unshare --net --mount` ([`net::run_isolated`]):
//! the bridge, the namespaces, the iptables rules and qdiscs live and die
//! with that private namespace (the delayers are stopped by
//! [`net::restore`], or by their parent-death signal). Addresses are in
//! 198.18.0.0/24 (RFC 2544 benchmarking range).
//!
//! Apart from the suite, [`blackbox`] is `db-nemesis`, the database's
//! black-box safety check: three `bulwark db` processes on loopback (no
//! namespaces, no root), writers through the plain HTTP API only, a
//! nemesis of signals, and end checks (docs/testing.md).
//!
//! The `bulwark` binary must be built first (`cargo build -p bulwark` or
//! `cargo build --workspace`); `BULWARK_BIN` overrides its path.

pub mod blackbox;
pub mod cluster;
mod convergence;
pub mod floating;
pub mod net;
pub mod netdelay;
mod report;
pub mod scenario;
pub mod topology;
pub mod workload;

pub use cluster::Cluster;
pub use report::Outcome;
pub use scenario::{run_scenario, run_scenario_with_clients, Ctx, Expect, HEAVY_CLIENTS};
pub use topology::Stack;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub use bulwark_testkit::HttpResponse;

/// The harness's certificate from the cluster CA and the addresses that
/// require mutual TLS (the database nodes of a topology with
/// `internal_tls`), set by [`Cluster::start`]: [`http`] and the database
/// workload use it as the tiers do.
#[derive(Clone)]
pub struct InnerTls {
    pub tls: bulwark_mtls::MutualTls,
    pub addrs: Vec<SocketAddr>,
}

static INNER_TLS: std::sync::RwLock<Option<InnerTls>> = std::sync::RwLock::new(None);

/// Speak mutual TLS to `inner.addrs` from now on (None: plain HTTP).
pub fn set_inner_tls(inner: Option<InnerTls>) {
    *INNER_TLS.write().unwrap_or_else(|p| p.into_inner()) = inner;
}

/// The harness's mutual TLS, when the running topology uses it.
pub fn inner_tls() -> Option<bulwark_mtls::MutualTls> {
    INNER_TLS.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|i| i.tls.clone())
}

/// One HTTP/1.1 request on a fresh connection with connect, read and write
/// timeouts (a paused or cut-off peer must not hang the caller); over
/// mutual TLS to an address of [`set_inner_tls`].
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let tls = INNER_TLS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|i| i.addrs.contains(&addr))
        .map(|i| i.tls.client_config());
    if let Some(config) = tls {
        let name = bulwark_mtls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = bulwark_mtls::rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut s = bulwark_mtls::rustls::StreamOwned::new(conn, s);
        s.write_all(&bytes)?;
        return bulwark_testkit::read_response(&mut s);
    }
    s.write_all(&bytes)?;
    bulwark_testkit::read_response(&mut s)
}

/// FNV-1a, 64 bit: a stable checksum of table contents.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
