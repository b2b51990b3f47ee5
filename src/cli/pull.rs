//! `hf-tailor pull`: fetch the base and its fine-tunes into the Hub cache and write the
//! source list (repo, resolved commit and sha256 of every file) that later stages read.

use std::path::PathBuf;

use anyhow::Context;
use hf_tailor::hub::{self, HubConfig, ModelSource, SourceList};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  hf-tailor pull --base meta-llama/Llama-2-13b-hf --finetunes finetunes.txt\n  HF_HUB_OFFLINE=1 hf-tailor pull --base ./base --finetunes list.txt --out sources.yaml"
)]
pub struct Args {
    /// Base model: Hub id (`owner/name[@revision]`) or local folder.
    #[arg(long)]
    pub base: String,
    /// Fine-tunes list: one Hub id[@revision] or folder a line; `#` comments allowed (or
    /// the siblings themselves, comma-separated).
    #[arg(long)]
    pub finetunes: Option<String>,
    /// Where to write the source list (YAML; `.json` for JSON).
    #[arg(long, default_value = "sources.yaml")]
    pub out: PathBuf,
    /// Use only the local cache (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Print the source list as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = HubConfig::from_env();
    cfg.offline |= args.offline;
    let base = ModelSource::parse(&args.base)?;
    let finetunes = hub::parse_finetunes_arg(args.finetunes.as_slice())?;
    let family = hub::pull_family(&cfg, &base, &finetunes)?;
    let list = SourceList::from(&family);
    list.save(&args.out).with_context(|| format!("writing {}", args.out.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for m in std::iter::once(&family.base).chain(&family.siblings) {
            println!("{:<24} {}  {} files  {}", m.source.name, m.source.source, m.source.files.len(), m.dir.display());
        }
        println!("wrote {}", args.out.display());
    }
    Ok(())
}
