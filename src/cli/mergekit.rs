//! `hf-tailor mergekit`: convert recipes to and from mergekit YAML.

use std::path::PathBuf;

use anyhow::Context;
use hf_tailor::mergekit::{self, ImportOptions};
use hf_tailor::recipe::Recipe;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print (or write) the mergekit config equivalent to a recipe.
    #[command(after_help = "Example:\n  hf-tailor mergekit export tailor.yaml -o mergekit.yaml")]
    Export {
        /// Recipe file (YAML or JSON).
        recipe: PathBuf,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Read a mergekit passthrough / task_arithmetic config into a recipe.
    #[command(
        after_help = "Example:\n  hf-tailor mergekit import merge.yaml -o tailor.yaml\n  hf-tailor mergekit import merge.yaml --source-layers 40 --architecture llama -o tailor.yaml"
    )]
    Import {
        /// mergekit YAML config.
        config: PathBuf,
        /// Decoder layers in the source models (mergekit configs do not say); read from the
        /// base's config.json (a local folder's; a Hub model's: cache, then download).
        #[arg(long)]
        source_layers: Option<usize>,
        /// model_type of the sources; read from the base's config.json like --source-layers.
        #[arg(long)]
        architecture: Option<String>,
        /// Recipe file to write (.yaml or .json).
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// Whether the recipe's base ties lm_head to its embeddings, from its config.json in a
/// local folder or the Hub cache (never the network); None when it cannot be found.
pub(super) fn base_ties_embeddings(recipe: &Recipe) -> Option<bool> {
    super::sources::cached_config(&recipe.base.source).map(|c| c.tie_word_embeddings)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Export { recipe, output } => {
            let recipe = Recipe::load(&recipe)?;
            let yaml = mergekit::export(&recipe, base_ties_embeddings(&recipe))?;
            match output {
                Some(path) => hf_tailor::fsutil::write_atomic(&path, yaml.as_bytes()).with_context(|| format!("writing {}", path.display()))?,
                None => print!("{yaml}"),
            }
        }
        Command::Import { config, source_layers, architecture, output } => {
            let text = hf_tailor::fsutil::read_text_input(&config, hf_tailor::limits::MAX_CONFIG_BYTES as u64)
                .with_context(|| format!("reading {}", config.display()))?;
            // The base's config (cache, then download) supplies what the flags leave out.
            let base_source = mergekit::base_source(&text)?;
            let base_config = match (&source_layers, &architecture) {
                (Some(_), Some(_)) => None,
                _ => Some(super::sources::base_config(&base_source)?),
            };
            let recipe = mergekit::import(&text, &ImportOptions { source_layers, architecture, base_config })
                .with_context(|| format!("importing {}", config.display()))?;
            recipe.save(&output)?;
            eprintln!(
                "wrote {} ({} of {} layers kept, {} merged)",
                output.display(),
                recipe.layers.len(),
                recipe.source_layers,
                recipe.merge_count()
            );
        }
    }
    Ok(())
}
