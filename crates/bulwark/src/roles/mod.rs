//! Starting each role: load config, bind, announce ready, run until a signal.
//!
//! Every role follows the same lifecycle: load and validate its config,
//! bind its listeners (so `:0` ports are known), print the ready line on
//! stdout, then serve until SIGTERM/SIGINT cancels the shutdown token.

pub mod app;
pub mod db;
pub mod lb;
pub mod up;
pub mod web;

use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Cancel `token` on SIGTERM or SIGINT.
pub async fn shutdown_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down gracefully"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down gracefully"),
        _ = token.cancelled() => {}
    }
    token.cancel();
}

/// Print the ready line (see `bulwark_telemetry::ready_line`) and flush.
pub fn announce(role: &str, listeners: &[(String, SocketAddr)]) {
    use std::io::Write;
    let line = bulwark_telemetry::ready_line(role, listeners);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    tracing::info!(role, ?listeners, "ready");
}

/// A multi-threaded tokio runtime with `threads` workers (0 = one per core).
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        b.worker_threads(threads);
    }
    b.enable_all().build()
}
