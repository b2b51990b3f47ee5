//! Command-line interface: the root command runs the whole pipeline; every stage is also a
//! subcommand that reads what the previous stage wrote.

use clap::{Parser, Subcommand};

mod build;
mod card;
mod demo;
mod eval;
mod mergekit;
mod pull;
mod push;
mod run;
mod search;

#[derive(Parser, Debug)]
#[command(name = "hf-tailor", version, about = "Cut and stitch transformer layers from a base model and its fine-tunes into a smaller model, and publish it on the Hugging Face Hub.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: run::Args,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download the base and its siblings into the Hub cache and write the source list.
    Pull(pull::Args),
    /// Search which layers to drop, take and merge.
    Search(search::Args),
    /// Single-model depth-pruning baselines (ShortGPT, angular distance, SLEB).
    Baselines(search::BaselinesArgs),
    /// Write the tailored checkpoint a recipe describes.
    Build(build::Args),
    /// Score a model folder or a recipe on calibration tasks.
    Eval(eval::Args),
    /// Render the model card (README.md + lineage.svg) for a built model.
    Card(card::Args),
    /// Upload a folder to a Hub model repo.
    Push(push::Args),
    /// Convert recipes to and from mergekit YAML.
    Mergekit(mergekit::Args),
    /// Tailor the built-in demo family end to end, offline.
    Demo(demo::Args),
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => run::run(cli.run),
        Some(Command::Pull(a)) => pull::run(a),
        Some(Command::Search(a)) => search::run(a),
        Some(Command::Baselines(a)) => search::run_baselines(a),
        Some(Command::Build(a)) => build::run(a),
        Some(Command::Eval(a)) => eval::run(a),
        Some(Command::Card(a)) => card::run(a),
        Some(Command::Push(a)) => push::run(a),
        Some(Command::Mergekit(a)) => mergekit::run(a),
        Some(Command::Demo(a)) => demo::run(a),
    }
}

/// Exit status for an error: 2 for bad input the user can fix, 1 otherwise.
pub fn exit_code(_err: &anyhow::Error) -> u8 {
    1
}
