//! `bulwark web`: command-line arguments and start-up of the web role.
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Path of the web config file (TOML).
    #[arg(short, long)]
    pub config: PathBuf,
}

pub fn main(args: Args) -> Result<i32> {
    anyhow::bail!("the web role is not built yet ({})", args.config.display())
}
