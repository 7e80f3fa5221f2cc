//! Starting each role: load config, bind, announce ready, run until a signal.
use anyhow::{Context, Result};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Cancel `token` on SIGTERM or SIGINT.
async fn shutdown_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down gracefully"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down gracefully"),
    }
    token.cancel();
}

fn announce(role: &str, listeners: &[(String, std::net::SocketAddr)]) {
    use std::io::Write;
    let line = bulwark_telemetry::ready_line(role, listeners);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn lb(path: PathBuf) -> Result<i32> {
    let _ = (path, CancellationToken::new(), announce as fn(&str, &[(String, std::net::SocketAddr)]));
    let _ = shutdown_on_signal;
    let _: Result<()> = Err(anyhow::anyhow!("x")).context("y");
    anyhow::bail!("lb role not built yet")
}
