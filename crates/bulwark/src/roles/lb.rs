//! `bulwark lb`: command-line arguments and start-up of the load balancer.
use anyhow::{Context, Result};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Path of the lb config file (TOML).
    #[arg(short, long)]
    pub config: PathBuf,
}

pub fn main(args: Args) -> Result<i32> {
    let config: bulwark_config::lb::LbConfig =
        bulwark_config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The main runtime runs health checks, the admin listener and signal
    // handling; request traffic runs on the lb's own worker threads.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let server = bulwark_lb::LbServer::bind(config).await.context("starting the load balancer")?;
        let shutdown = CancellationToken::new();
        tokio::spawn(super::shutdown_on_signal(shutdown.clone()));
        let reopen = server.reload_handle();
        tokio::spawn(super::reopen_on_sigusr1(move || reopen.reopen_access_log()));
        super::announce("lb", &server.listeners());
        tokio::spawn(reload_on_sighup(args.config.clone(), server.reload_handle()));
        tokio::spawn(reload_on_certificate_change(args.config.clone(), server.reload_handle()));
        server.run(shutdown).await?;
        Ok(0)
    })
}

/// Re-read and validate the file, then swap it in; on any error the
/// running configuration stays and the error is logged.
fn reload(path: &std::path::Path, handle: &bulwark_lb::LbReload, why: &str) {
    match bulwark_config::load::<bulwark_config::lb::LbConfig>(path) {
        Err(e) => tracing::error!("reload ({why}) rejected, keeping the running config:\n{e}"),
        Ok(cfg) => match handle.reload(cfg) {
            Ok(()) => tracing::info!(config = %path.display(), "reload: new config is live ({why})"),
            Err(e) => tracing::error!("reload ({why}) rejected, keeping the running config: {e}"),
        },
    }
}

async fn reload_on_sighup(path: PathBuf, handle: bulwark_lb::LbReload) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        reload(&path, &handle, "SIGHUP");
    }
}

/// Certificates are reloaded when their files change (renewal by an ACME
/// client, say), checked every 2 s by modification time and size.
async fn reload_on_certificate_change(path: PathBuf, handle: bulwark_lb::LbReload) {
    let stamp = |cfg: &bulwark_config::lb::LbConfig| -> Vec<Option<(std::time::SystemTime, u64)>> {
        cfg.frontends
            .iter()
            .filter_map(|f| f.tls.as_ref())
            .flat_map(|t| t.certificates.iter())
            .flat_map(|c| [&c.cert, &c.key])
            .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
            .collect()
    };
    let mut last = stamp(&handle.current().config);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tick.tick().await;
        let now = stamp(&handle.current().config);
        if now != last && !now.is_empty() {
            reload(&path, &handle, "certificate files changed");
            last = stamp(&handle.current().config);
        }
    }
}
