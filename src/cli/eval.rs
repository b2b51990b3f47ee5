//! `hf-tailor eval`.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`hf-tailor eval` is not wired yet")
}
