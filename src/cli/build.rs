//! `hf-tailor build`: write the checkpoint a recipe describes.

use std::path::PathBuf;

use hf_tailor::human::human_count;
use hf_tailor::writer::{self, BuildOptions};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  hf-tailor build --recipe tailor.yaml --out tailored\n  hf-tailor build --recipe tailor.yaml --out tailored --shard-size 2GB --force --json"
)]
pub struct Args {
    /// Recipe file (YAML or JSON), as written by `hf-tailor search`, or a mergekit YAML;
    /// Hub sources are resolved as `search` resolves them (cache, then download).
    #[arg(long)]
    pub recipe: PathBuf,
    /// Output folder; must be absent or empty unless --force.
    #[arg(long)]
    pub out: PathBuf,
    /// Largest shard (tensor bytes), e.g. 5GB, 500MB, 2GiB.
    #[arg(long, default_value = "5GB")]
    pub shard_size: String,
    /// Replace a non-empty output folder (only once the new one is complete).
    #[arg(long)]
    pub force: bool,
    /// Also write GGUF files of these types into the output folder (f16, q8_0, bf16, f32;
    /// comma-separated), for llama.cpp and Ollama.
    #[arg(long, value_name = "TYPES", value_parser = super::gguf::parse_types)]
    pub gguf: Option<super::gguf::TypeList>,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// Print the build report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = BuildOptions { shard_size: writer::parse_size(&args.shard_size)?, force: args.force };
    let mut recipe = super::sources::load_recipe(&args.recipe)?;
    let family = super::sources::open_family(&recipe)?;
    let notes =
        hf_tailor::checkpoint::choose_tokenizer(&family, &mut recipe, args.tokenizer.source.as_deref(), args.tokenizer.chat_template.as_deref())?;
    let report = writer::build(&family, &recipe, &args.out, &opts)?;
    for w in notes.iter().chain(&report.warnings) {
        eprintln!("hf-tailor: warning: {w}");
    }
    // The folder was just written (or replaced): no GGUF of a previous model is left in it.
    let gguf = match &args.gguf {
        Some(types) => super::gguf::write_after_build(&args.out, types, true, args.json)?,
        None => Vec::new(),
    };
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if args.gguf.is_some() {
            v["gguf"] = serde_json::to_value(&gguf)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let removed = 100.0 * (1.0 - report.params_after as f64 / report.params_before.max(1) as f64);
        println!(
            "wrote {}: {} of {} layers, {} -> {} parameters ({removed:.1}% removed), {} shard(s), {:.1} MB {} in {:.1} s",
            report.out,
            report.layers_after,
            report.layers_before,
            human_count(report.params_before),
            human_count(report.params_after),
            report.shards,
            report.bytes as f64 / 1e6,
            report.dtype,
            report.seconds
        );
    }
    Ok(())
}

/// Which tokenizer and chat template the written model carries (`build` and the root command).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TokenizerArgs {
    /// Whose tokenizer files and generation config the model carries: `base` or a sibling's
    /// name in the recipe (default: the recipe's choice, else the base). Its vocabulary must
    /// match the family's.
    #[arg(long = "tokenizer-source", value_name = "base|NAME")]
    pub source: Option<String>,
    /// The model's chat template: `auto` (the template the siblings that have one share, else
    /// the base's), `base`, a model's name in the recipe, or a Jinja file (default: the
    /// recipe's choice, else auto).
    #[arg(long, value_name = "auto|base|NAME|FILE")]
    pub chat_template: Option<String>,
}
