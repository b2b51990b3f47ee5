//! `hf-tailor search` and `hf-tailor baselines`.

#[derive(clap::Args, Debug)]
pub struct Args {}

#[derive(clap::Args, Debug)]
pub struct BaselinesArgs {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`hf-tailor search` is not wired yet")
}

pub fn run_baselines(_args: BaselinesArgs) -> anyhow::Result<()> {
    anyhow::bail!("`hf-tailor baselines` is not wired yet")
}
