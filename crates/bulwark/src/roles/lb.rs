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
        super::announce("lb", &server.listeners());
        let shutdown = CancellationToken::new();
        tokio::spawn(super::shutdown_on_signal(shutdown.clone()));
        tokio::spawn(reload_on_sighup(args.config.clone(), server.reload_handle()));
        server.run(shutdown).await?;
        Ok(0)
    })
}

/// SIGHUP: re-read and validate the file, then swap it in; on any error the
/// running configuration stays and the error is logged.
async fn reload_on_sighup(path: PathBuf, handle: bulwark_lb::LbReload) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        match bulwark_config::load::<bulwark_config::lb::LbConfig>(&path) {
            Err(e) => tracing::error!("reload rejected, keeping the running config:\n{e}"),
            Ok(cfg) => match handle.reload(cfg) {
                Ok(()) => tracing::info!(config = %path.display(), "reload: new config is live"),
                Err(e) => tracing::error!("reload rejected, keeping the running config: {e}"),
            },
        }
    }
}
