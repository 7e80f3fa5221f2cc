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

/// Cancel `token` on SIGTERM or SIGINT. The handlers are installed when
/// this is called (not when the future is first polled), so call it before
/// printing the ready line: a supervisor may signal right after reading it.
pub fn shutdown_on_signal(token: CancellationToken) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            tracing::error!("cannot install SIGTERM/SIGINT handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down gracefully"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down gracefully"),
            _ = token.cancelled() => {}
        }
        token.cancel();
    }
}

/// Run `reopen` on every SIGUSR1 (logrotate's `postrotate`: the access
/// log file was renamed). The handler is installed by this call, so a
/// signal right after it never kills the process.
pub fn reopen_on_sigusr1(reopen: impl Fn() -> std::io::Result<()>) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let usr1 = signal(SignalKind::user_defined1());
    async move {
        let Ok(mut usr1) = usr1 else {
            tracing::error!("cannot install the SIGUSR1 handler");
            return;
        };
        while usr1.recv().await.is_some() {
            match reopen() {
                Ok(()) => tracing::info!("SIGUSR1: access log reopened"),
                Err(e) => tracing::error!("SIGUSR1: cannot reopen the access log, still writing the old file: {e}"),
            }
        }
    }
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

/// Print a failed line on stdout and flush:
/// `{"failed":{"role":"app","pid":1234,"error":"..."}}`. A role that stays
/// up but cannot do its job yet (the app role whose program does not
/// start) says so; `up` reports it naming the role instead of waiting for
/// readiness. The role keeps retrying and prints nothing more once it is
/// ready (its health check answers 200).
pub fn announce_failure(role: &str, error: &str) {
    use std::io::Write;
    let line = serde_json::json!({ "failed": { "role": role, "pid": std::process::id(), "error": error } });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    tracing::error!(role, "{error}");
}

/// A multi-threaded tokio runtime with `threads` workers (0 = one per core).
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        b.worker_threads(threads);
    }
    b.enable_all().build()
}

/// For one-shot commands that print to stdout: when the reader goes away
/// (`bulwark db status | head -1`), end at once as Unix tools do (SIGPIPE's
/// default action) instead of panicking in `println!`. Never for the
/// servers, which keep SIGPIPE ignored. Call before any thread is started.
pub fn stop_quietly_on_closed_stdout() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: restores the default disposition of SIGPIPE (no handler code
    // runs), before this process starts any other thread.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
