//! `hf-tailor demo`.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`hf-tailor demo` is not wired yet")
}
