//! `hf-tailor` with no subcommand: the whole pipeline.

use std::path::PathBuf;

use super::usage;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

impl From<DeviceArg> for hf_tailor::pipeline::Device {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => Self::Cpu,
            DeviceArg::Cuda => Self::Cuda,
        }
    }
}

/// The root command's flags (the whole job).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base model: Hub id (optionally @revision) or local folder.
    #[arg(long, value_name = "ID")]
    pub base: Option<String>,
    /// File listing the fine-tuned siblings, one Hub id (optionally @revision) or folder a line.
    #[arg(long, value_name = "FILE")]
    pub finetunes: Option<PathBuf>,
    /// Push the tailored model to this Hub repo (user/name); without it the model stays in --out.
    #[arg(long, value_name = "REPO")]
    pub push: Option<String>,
    /// Number of layers to keep (default: remove --remove-ratio of them).
    #[arg(long, value_name = "K", conflicts_with = "remove_ratio")]
    pub keep_layers: Option<usize>,
    /// Fraction of layers to remove when --keep-layers is not given.
    #[arg(long, value_name = "R", default_value_t = 0.25)]
    pub remove_ratio: f64,
    /// Calibration tasks, comma-separated: built-in names (mmlu, wsc) or JSONL files.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "mmlu,wsc")]
    pub tasks: Vec<String>,
    /// Search budget in trials (the reference uses 500).
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub trials: usize,
    /// Seed of the search (same seed and inputs give the same result).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where candidates are scored.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Working folder: source list, search journal, recipe, report and the tailored model.
    #[arg(long, value_name = "DIR", default_value = "tailored")]
    pub out: PathBuf,
    /// Continue the search journal in --out after an interruption.
    #[arg(long)]
    pub resume: bool,
    /// Create the pushed repo as private.
    #[arg(long, requires = "push")]
    pub private: bool,
    /// Print what would be downloaded, the parameter count before/after and the memory needed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print machine-readable JSON on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// The checks clap cannot express; each failure is a one-line usage error (exit 2).
    fn validate(&self) -> anyhow::Result<(&str, &PathBuf)> {
        let Some(base) = self.base.as_deref() else {
            usage!("missing --base: give the base model's Hub id or folder (or run a subcommand, e.g. `hf-tailor demo`; see --help)")
        };
        let Some(finetunes) = self.finetunes.as_ref() else {
            usage!("missing --finetunes: give a file listing the fine-tuned siblings, one Hub id or folder a line")
        };
        if !(self.remove_ratio > 0.0 && self.remove_ratio < 1.0) {
            usage!("--remove-ratio must be between 0 and 1 (exclusive), got {}", self.remove_ratio)
        }
        if self.keep_layers == Some(0) {
            usage!("--keep-layers must be at least 1")
        }
        if self.trials == 0 {
            usage!("--trials must be at least 1")
        }
        if self.tasks.iter().any(|t| t.trim().is_empty()) {
            usage!("--tasks has an empty entry: give names or files separated by commas")
        }
        if let Some(repo) = &self.push {
            let parts: Vec<&str> = repo.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                usage!("--push wants a Hub repo id `user/name`, got `{repo}`")
            }
        }
        Ok((base, finetunes))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (_base, _finetunes) = args.validate()?;
    anyhow::bail!("the whole pipeline is not wired yet: run the stages one by one (see --help)")
}
