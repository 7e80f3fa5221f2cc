//! `bulwark app`: command-line arguments and start-up of the application server.
use anyhow::{Context, Result};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Path of the app config file (TOML).
    #[arg(short, long)]
    pub config: PathBuf,
}

pub fn main(args: Args) -> Result<i32> {
    let config: bulwark_config::app::AppConfig =
        bulwark_config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = super::runtime(config.threads)?;
    rt.block_on(async move {
        let server = bulwark_app::AppServer::bind(config).await.context("starting the application server")?;
        let shutdown = CancellationToken::new();
        tokio::spawn(super::shutdown_on_signal(shutdown.clone()));
        super::announce("app", &server.listeners());
        server.run(shutdown).await;
        Ok(0)
    })
}
