//! Command-line interface: the root command runs the whole pipeline; every stage is also a
//! subcommand that reads what the previous stage wrote.

use clap::{Parser, Subcommand};

mod build;
mod card;
mod demo;
mod eval;
mod gguf;
mod heal;
mod mergekit;
mod pull;
mod push;
mod run;
mod search;
mod signals;
mod sources;
mod test_hooks;
mod worker;

const EXAMPLES: &str = "\
Examples:
  # Tailor the built-in demo family end to end, offline
  hf-tailor demo

  # The whole job: pull, search, build, verify, card, push (removes 25% of the layers)
  hf-tailor --base meta-llama/Llama-2-13b-hf --finetunes finetunes.txt \\
    --push you/tailored

  # What would it download, and how much memory would it need?
  hf-tailor --base meta-llama/Llama-2-7b-hf --finetunes finetunes.txt \\
    --keep-layers 23 --dry-run

  # Stage by stage: stop, inspect or edit the recipe, go on
  hf-tailor pull --base meta-llama/Llama-2-7b-hf --finetunes finetunes.txt \\
    --out work
  hf-tailor search --help

finetunes.txt lists one Hub id (optionally @revision) or local folder per line; blank
lines and # comments are allowed. The Hub token comes from HF_TOKEN or `hf auth login`.";

#[derive(Parser, Debug)]
#[command(
    name = "hf-tailor",
    version,
    about = "Cut and stitch transformer layers from a base model and its fine-tunes into a smaller model, and publish it on the Hugging Face Hub.",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
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
    Search(Box<search::Args>),
    /// Single-model depth-pruning baselines (ShortGPT, angular distance, SLEB).
    Baselines(search::BaselinesArgs),
    /// Write the tailored checkpoint a recipe describes.
    Build(build::Args),
    /// Write GGUF files (f16, q8_0, ...) for llama.cpp and Ollama beside a model's safetensors.
    Gguf(gguf::Args),
    /// Score a model folder or a recipe on calibration tasks.
    Eval(eval::Args),
    /// Heal a recipe's cuts without training: fit a map per gap, fused into down_proj.
    Heal(heal::Args),
    /// Render the model card (README.md + lineage.svg) for a built model.
    Card(card::Args),
    /// Upload a folder to a Hub model repo.
    Push(push::Args),
    /// Convert recipes to and from mergekit YAML.
    Mergekit(mergekit::Args),
    /// Tailor the built-in demo family end to end, offline.
    Demo(demo::Args),
    /// Score the trials of a search study kept in PostgreSQL (`search --storage URL`).
    Worker(worker::Args),
    /// Write a study kept in PostgreSQL as a journal file that `search --resume` reads.
    Export(worker::ExportArgs),
}

// Headings of `--help` (`search`, `baselines` and the root command group their flags so).
pub const H_MODELS: &str = "Models";
pub const H_DEPTH: &str = "Depth";
pub const H_TASKS: &str = "Tasks and objective";
pub const H_OPTIMISER: &str = "Optimiser";
pub const H_ENGINE: &str = "Engine and memory";
pub const H_DISTRIBUTED: &str = "Distributed search (PostgreSQL)";
pub const H_OUTPUT: &str = "Output";

/// How candidates are scored: shared by `eval`, `search` and `baselines`.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// cpu, cuda or cuda:N (cuda needs a build with `--features cuda`); for `search`, also
    /// several CUDA devices (`cuda:0,cuda:1`) or `cuda:all`, one evaluator each.
    #[arg(long, default_value = "cpu")]
    pub device: Devices,
    /// Memory for merged layers (materialised weights), in MiB. Default: derived at start
    /// from the memory available, a quarter of the caches' budget (README, "Memory").
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub weight_cache_mb: Option<u64>,
    /// Most padded tokens per forward batch.
    #[arg(long, default_value_t = 2048, value_parser = positive())]
    pub batch_tokens: usize,
    /// Memory for the hidden states of batches in flight, in MiB: larger calibration sets
    /// are scored in groups of batches that fit. Default: a quarter of the caches' budget.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub state_mb: Option<u64>,
    /// Memory for the hidden states of layer prefixes shared between candidates, in MiB
    /// (0 turns prefix sharing off). Default: half of the caches' budget, which is half of
    /// the host memory available at start above a reserve (on CUDA: the device memory the
    /// source weights leave). Bounds set above what is available are refused; all of them
    /// are lowered during a run when the machine's available memory falls.
    #[arg(long, value_name = "MIB")]
    pub prefix_cache_mb: Option<u64>,
    /// Device memory for the family's source tensors, in MiB: models are placed base first
    /// while they fit, the rest stream from host memory a layer ahead. Default: on CUDA the
    /// whole models that fit in 7/8 of the free memory less a tenth of the device; on CPU 0.
    #[arg(long, value_name = "MIB")]
    pub sources_mb: Option<u64>,
    /// Compute dtype of the scoring: bf16, f16 or f32 (default: bf16 on CUDA, or f16 for
    /// f16 checkpoints, which bf16 would round; f32 on CPU).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<hf_tailor::dtype::Dtype>,
}

/// `--dtype`: bf16, f16 or f32 (the spellings configs use are accepted too).
pub fn parse_dtype(s: &str) -> Result<hf_tailor::dtype::Dtype, String> {
    hf_tailor::dtype::Dtype::parse(s).ok_or_else(|| format!("`{s}` is not bf16, f16 or f32"))
}

/// A count that must be at least 1 (`--budget 0` is a usage error, not an empty run).
pub fn positive() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

/// `--device`: one device, a comma-separated list of devices, or every CUDA device.
#[derive(Debug, Clone, PartialEq)]
pub enum Devices {
    List(Vec<hf_tailor::eval::DeviceKind>),
    AllCuda,
}

impl std::str::FromStr for Devices {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "cuda:all" {
            return Ok(Devices::AllCuda);
        }
        let list = s.split(',').map(|d| d.trim().parse()).collect::<Result<Vec<hf_tailor::eval::DeviceKind>, _>>()?;
        let mut seen = std::collections::BTreeSet::new();
        if let Some(d) = list.iter().find(|d| !seen.insert(format!("{d:?}"))) {
            return Err(format!("device {d:?} is listed twice (use --workers for several evaluators per device)"));
        }
        Ok(Devices::List(list))
    }
}

impl Devices {
    /// The first device (the one for commands that score on one device).
    pub fn first(&self) -> hf_tailor::eval::DeviceKind {
        match self {
            Devices::List(l) => l[0],
            Devices::AllCuda => hf_tailor::eval::DeviceKind::Cuda(0),
        }
    }

    /// Every device named (`cuda:all` resolved to the devices present).
    pub fn resolve(&self) -> anyhow::Result<Vec<hf_tailor::eval::DeviceKind>> {
        match self {
            Devices::List(l) => Ok(l.clone()),
            Devices::AllCuda => {
                let n = hf_tailor::eval::cuda_device_count();
                if n == 0 {
                    let why = if cfg!(feature = "cuda") { "" } else { " (this build has no CUDA support; rebuild with `--features cuda`)" };
                    return Err(UsageError(format!("--device cuda:all found no CUDA device{why}")).into());
                }
                Ok((0..n).map(hf_tailor::eval::DeviceKind::Cuda).collect())
            }
        }
    }

    /// The one device of a command that scores on one device.
    pub fn single(&self) -> anyhow::Result<hf_tailor::eval::DeviceKind> {
        match self {
            Devices::List(l) if l.len() == 1 => Ok(l[0]),
            _ => Err(UsageError("this command scores on one device: give --device cpu, cuda or cuda:N".into()).into()),
        }
    }
}

impl EngineArgs {
    pub fn options(&self) -> hf_tailor::eval::EvalOptions {
        hf_tailor::eval::EvalOptions {
            device: self.device.first(),
            weight_cache_bytes: self.weight_cache_mb.map(|m| m << 20),
            max_batch_tokens: self.batch_tokens,
            state_bytes: self.state_mb.map(|m| m << 20),
            prefix_cache_bytes: self.prefix_cache_mb.map(|m| m << 20),
            source_bytes: self.sources_mb.map(|m| m << 20),
            dtype: self.dtype,
            ..hf_tailor::eval::EvalOptions::default()
        }
    }
}

pub fn main() -> anyhow::Result<()> {
    signals::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => return Err(UsageError(one_line(&e)).into()),
    };
    match cli.command {
        None => run::run(cli.run),
        Some(Command::Pull(a)) => pull::run(a),
        Some(Command::Search(a)) => search::run(*a),
        Some(Command::Baselines(a)) => search::run_baselines(a),
        Some(Command::Build(a)) => build::run(a),
        Some(Command::Gguf(a)) => gguf::run(a),
        Some(Command::Eval(a)) => eval::run(a),
        Some(Command::Heal(a)) => heal::run(a),
        Some(Command::Card(a)) => card::run(a),
        Some(Command::Push(a)) => push::run(a),
        Some(Command::Mergekit(a)) => mergekit::run(a),
        Some(Command::Demo(a)) => demo::run(a),
        Some(Command::Worker(a)) => worker::run(a),
        Some(Command::Export(a)) => worker::export(a),
    }
}

/// Lock the output folder for this job (see `hf_tailor::pipeline::out_folder`), saying so
/// when the lock of a job that was killed is taken over.
pub fn lock_out(out: &std::path::Path) -> anyhow::Result<hf_tailor::pipeline::OutFolderLock> {
    let lock = hf_tailor::pipeline::OutFolderLock::acquire(out)?;
    if let Some(note) = lock.note() {
        eprintln!("hf-tailor: {note}");
    }
    Ok(lock)
}

/// A mistake in how hf-tailor was called (a missing flag, a value out of range): the user
/// fixes the command line. Exits with status 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A clap error as one line: the message and its tip, without the usage block.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.trim_start_matches("error: ").to_string());
        }
    }
    parts.push("(see --help)".into());
    parts.join("; ").replacen("; (see --help)", " (see --help)", 1)
}

/// Shorthand: return a [`UsageError`].
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::cli::UsageError(format!($($arg)*))))
    };
}
pub(crate) use usage;

/// Exit status for an error: 2 for usage mistakes and bad input the user can fix (a malformed
/// recipe, finetunes list, mergekit config, task spec, journal or model folder, an unusable
/// output folder, a missing repo or token), 1 for everything else (network, disk, bugs).
/// This is the one place that decides; every typed library error is classified here.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<UsageError>() {
            return 2;
        }
        if let Some(code) = library_code(cause) {
            return code;
        }
        // A file the command line names that is not there (read through an anyhow context).
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            return io_code(e).unwrap_or(1);
        }
    }
    1
}

/// A file that is not there, or an input refused by its type, size or encoding, is the
/// user's to fix (2); other I/O failures are ours (1).
fn io_code(source: &std::io::Error) -> Option<u8> {
    let theirs = source.kind() == std::io::ErrorKind::NotFound || hf_tailor::fsutil::InputRefused::of(source).is_some();
    Some(if theirs { 2 } else { 1 })
}

/// The exit status a library error implies, when it is one hf-tailor knows; None lets the
/// caller look at the error's cause (a wrapper that says nothing of its own).
fn library_code(cause: &(dyn std::error::Error + 'static)) -> Option<u8> {
    use hf_tailor::card::CardError as D;
    use hf_tailor::checkpoint::CheckpointError as C;
    use hf_tailor::config::ConfigError as K;
    use hf_tailor::eval::EvalError as E;
    use hf_tailor::gguf::GgufError as G;
    use hf_tailor::hub::HubError as H;
    use hf_tailor::mergekit::MergekitError as M;
    use hf_tailor::pipeline::PipelineError as P;
    use hf_tailor::recipe::RecipeError as R;
    use hf_tailor::search::SearchError as S;
    use hf_tailor::writer::BuildError as B;
    let bad_input = |yes: bool| Some(if yes { 2 } else { 1 });
    // A recipe that does not fit its base, or a text that names no model, is the user's.
    if cause.is::<hf_tailor::layout::LayoutError>() || cause.is::<hf_tailor::source::BadSource>() {
        return Some(2);
    }
    if let Some(e) = cause.downcast_ref::<P>() {
        return match e {
            P::Hub(h) => library_code(h),
            P::Checkpoint(c) => library_code(c),
            P::Recipe(r) => library_code(r),
            P::Eval(v) => library_code(v),
            P::Search(s) => library_code(s),
            P::Build(b) => library_code(b),
            P::Card(c) => library_code(c),
            P::Gguf(g) => library_code(g),
            P::Plan(_) | P::OutFolder { .. } => Some(2),
            P::Io { source, .. } => io_code(source),
            P::Verify(_) => Some(1),
        };
    }
    if let Some(e) = cause.downcast_ref::<R>() {
        return match e {
            R::Io { source, .. } => io_code(source),
            _ => Some(2),
        };
    }
    if let Some(e) = cause.downcast_ref::<K>() {
        return match e {
            K::Io { source, .. } => io_code(source),
            _ => Some(2),
        };
    }
    if let Some(e) = cause.downcast_ref::<C>() {
        return match e {
            C::Config(k) => library_code(k),
            C::Io { source, .. } => io_code(source),
            _ => Some(2),
        };
    }
    if let Some(e) = cause.downcast_ref::<E>() {
        return match e {
            E::Checkpoint(c) => library_code(c),
            E::Recipe(r) => library_code(r),
            E::Io { source, .. } => io_code(source),
            E::Heal(h) => library_code(h),
            E::Spec(_) | E::Data { .. } | E::Unsupported(_) | E::Tokenizer(_) | E::Layout(_) | E::NonFinite(_) | E::OverBudget(_) => Some(2),
            _ => Some(1),
        };
    }
    if let Some(e) = cause.downcast_ref::<B>() {
        return match e {
            B::Checkpoint(c) => library_code(c),
            B::RecipeFile(r) => library_code(r),
            B::Heal(h) => library_code(h),
            B::Io { .. } | B::Verify(_) => Some(1),
            _ => Some(2),
        };
    }
    if let Some(e) = cause.downcast_ref::<G>() {
        return match e {
            G::Checkpoint(c) => library_code(c),
            G::Io { .. } | G::Size { .. } => Some(1),
            _ => Some(2),
        };
    }
    if let Some(e) = cause.downcast_ref::<S>() {
        return match e {
            S::Space(_) | S::Journal { .. } => Some(2),
            S::JournalIo { source, .. } => io_code(source),
            S::Study(e) => Some(if e.is_usage() { 2 } else { 1 }),
            // The scorer's own error (the cause) decides.
            S::Score { .. } => None,
            _ => Some(1),
        };
    }
    if let Some(e) = cause.downcast_ref::<hf_tailor::heal::HealError>() {
        return Some(if matches!(e, hf_tailor::heal::HealError::Io { .. }) { 1 } else { 2 });
    }
    if let Some(e) = cause.downcast_ref::<M>() {
        return match e {
            M::Recipe(r) => library_code(r),
            _ => Some(2),
        };
    }
    if let Some(e) = cause.downcast_ref::<D>() {
        return match e {
            D::Input(_) => Some(2),
            D::Io { source, .. } => io_code(source),
            D::Template { .. } => Some(1),
        };
    }
    if let Some(e) = cause.downcast_ref::<H>() {
        if let H::Config(k) = e {
            return library_code(k);
        }
        return bad_input(
            matches!(
                e,
                H::ListLine { .. }
                    | H::DuplicateEntry { .. }
                    | H::BadModelRef { .. }
                    | H::NoSuchFolder { .. }
                    | H::PushTarget { .. }
                    | H::BaseAmongFinetunes { .. }
                    | H::RepoNotFound { .. }
                    | H::RevisionNotFound { .. }
                    | H::EntryNotFound { .. }
                    | H::Unauthorized { .. }
                    | H::Forbidden { .. }
                    | H::NotCached { .. }
                    | H::NoToken { .. }
                    | H::NoConfig { .. }
                    | H::NoWeights { .. }
            ) || matches!(e, H::Io { source, .. } if io_code(source) == Some(2)),
        );
    }
    None
}
