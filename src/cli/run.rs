//! `hf-tailor` with no subcommand: the whole pipeline.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`hf-tailor run` is not wired yet")
}
