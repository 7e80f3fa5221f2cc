//! `bulwark web`: command-line arguments and start-up of the web role.
use anyhow::{Context, Result};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Path of the web config file (TOML).
    #[arg(short, long)]
    pub config: PathBuf,
}

pub fn main(args: Args) -> Result<i32> {
    let config: bulwark_config::web::WebConfig =
        bulwark_config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The main runtime only handles signals; requests run on the web
    // role's own worker threads.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        // Proxy health checks run on this (main) runtime until shutdown.
        let server = bulwark_web::WebServer::bind(config, &shutdown).context("starting the web server")?;
        tokio::spawn(super::shutdown_on_signal(shutdown.clone()));
        let log = server.access_log();
        tokio::spawn(super::reopen_on_sigusr1(move || log.as_ref().map_or(Ok(()), |l| l.reopen())));
        // Let the signal task install its handlers before the ready line:
        // a SIGTERM right after it must drain, not kill the process.
        tokio::task::yield_now().await;
        super::announce("web", &server.listeners());
        server.run(shutdown).await?;
        Ok(0)
    })
}
