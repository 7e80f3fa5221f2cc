//! `bulwark db`: command-line arguments and start-up of the db role.
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Path of the db config file (TOML).
    #[arg(short, long)]
    pub config: PathBuf,
}

pub fn main(args: Args) -> Result<i32> {
    anyhow::bail!("the db role is not built yet ({})", args.config.display())
}
