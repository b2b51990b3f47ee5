//! `hf-tailor demo`: tailor the built-in demo family end to end, offline.

use std::path::PathBuf;

use anyhow::Context;
use hf_tailor::eval::TaskSpec;
use hf_tailor::hub::{self, HubConfig, ModelSource};
use hf_tailor::pipeline::{self, demo, Depths, JobOptions, SearchRequest};
use hf_tailor::search::DepthTarget;

use super::{run::print_outcome, run::StderrProgress, usage};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  hf-tailor demo\n  hf-tailor demo --out /tmp/demo --trials 40 --force\n  hf-tailor demo --keep-layers 4..7 --pick 5\n\n\
The family: a tiny Llama base trained on three synthetic skills (arith: last digit of a sum;\n\
reverse: write a word backwards; recall: look a key up) and three siblings, each fine-tuned\n\
from the base to sharpen one skill. The search keeps 6 of its 8 layers; `--keep-layers 4..7`
searches every depth from 4 to 7 in one study (a size–quality front) and builds the picked point."
)]
pub struct Args {
    /// Working folder: the family, the search journal, recipe, report and tailored model.
    #[arg(long, value_name = "DIR", default_value = "tailored-demo")]
    pub out: PathBuf,
    /// Search budget in trials.
    #[arg(long, value_name = "N", default_value_t = 120, value_parser = super::positive())]
    pub trials: usize,
    /// Layers to keep of the family's 8, or a range `A..B` (e.g. 4..7) for a size–quality
    /// front from one search (the picked point is built; see --pick).
    #[arg(long, value_name = "K", default_value = "6", value_parser = super::search::parse_layer_range)]
    pub keep_layers: (usize, usize),
    #[command(flatten)]
    pub pick: super::search::PickArgs,
    /// Seed of the search.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use this family folder instead of the embedded one (layout of assets/demo-family).
    #[arg(long, value_name = "DIR")]
    pub family: Option<PathBuf>,
    /// Replace the results of an earlier demo run in --out.
    #[arg(long)]
    pub force: bool,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The card's one-line reproduction: the demo command with the options that change the model.
fn reproduce_line(args: &Args) -> String {
    let mut cmd = String::from("hf-tailor demo");
    let (lo, hi) = args.keep_layers;
    if (lo, hi) != (6, 6) {
        cmd.push_str(&if lo == hi { format!(" --keep-layers {lo}") } else { format!(" --keep-layers {lo}..{hi}") });
    }
    if let Some(k) = args.pick.pick {
        cmd.push_str(&format!(" --pick {k}"));
    }
    if let Some(n) = args.pick.pick_max_params {
        cmd.push_str(&format!(" --pick-max-params {n}"));
    }
    if args.trials != 120 {
        cmd.push_str(&format!(" --trials {}", args.trials));
    }
    if args.seed != 0 {
        cmd.push_str(&format!(" --seed {}", args.seed));
    }
    let family = if args.family.is_some() { "the family folder it was given" } else { "the demo family built into hf-tailor" };
    format!(
        "This is a model of hf-tailor's demo: `{cmd}` rebuilds it from {family}, offline, on any machine ({} trials, seed {}).",
        args.trials, args.seed
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (lo, hi) = args.keep_layers;
    let request = SearchRequest {
        pick: args.pick.chosen(),
        trials: args.trials,
        seed: args.seed,
        // The calibration splits hold 200 items a task: three fidelities, η = 3.
        budgets: Some(vec![22, 66, 200]),
        ..SearchRequest::new(Depths::between(DepthTarget::KeepLayers(lo), DepthTarget::KeepLayers(hi)))
    };
    request.check()?;
    // A family of the user's is never written into (the embedded one is ours, in --out).
    if let Some(dir) = &args.family {
        pipeline::out_folder::check_apart(&args.out, &[ModelSource::Local(dir.clone())], &HubConfig::from_env())?;
    }
    let _lock = super::lock_out(&args.out)?;
    // Before the family is written into it: never overwrite files that are not ours.
    pipeline::check_out_folder(&args.out, None, args.force)?;
    let journal = args.out.join(pipeline::tailor::JOURNAL_FILE);
    if journal.exists() {
        if !args.force {
            usage!("{} holds an earlier demo run; pass --force to replace it or --out to choose another folder", args.out.display())
        }
        std::fs::remove_file(&journal).with_context(|| format!("removing {}", journal.display()))?;
    }
    let family = match &args.family {
        Some(dir) => demo::layout(dir),
        None => demo::write_family(&args.out.join("family")).with_context(|| format!("writing the demo family to {}", args.out.display()))?,
    };
    let outcome = tailor_family(&args, request, &family);
    // A job refused before it wrote anything of its own (no sources.yaml) takes the embedded
    // family it wrote with it: a refused job leaves nothing.
    if outcome.is_err() && args.family.is_none() && !args.out.join(pipeline::tailor::SOURCES_FILE).exists() {
        let _ = std::fs::remove_dir_all(args.out.join("family"));
    }
    print_outcome(&outcome?, args.json)
}

/// The job on the demo family (pulled offline from its folders).
fn tailor_family(args: &Args, request: SearchRequest, family: &demo::DemoFamily) -> anyhow::Result<pipeline::JobOutcome> {
    // Served from local folders through the same pull stage a Hub job uses (offline).
    let mut cfg = HubConfig::from_env();
    cfg.offline = true;
    let base = ModelSource::parse(&family.base.display().to_string())?;
    let siblings = family.siblings.iter().map(|p| ModelSource::parse(&p.display().to_string())).collect::<Result<Vec<_>, _>>()?;
    let pulled = hub::pull_family(&cfg, &base, &siblings)?;

    let load = |paths: &[PathBuf], split: &str| -> anyhow::Result<Vec<hf_tailor::eval::Task>> {
        paths
            .iter()
            .map(|p| {
                let mut t = TaskSpec::parse(&format!("mc={}", p.display()))?.load()?;
                demo::describe(&mut t, split);
                Ok(t)
            })
            .collect()
    };
    let calibration = load(&family.calibration, "calibration")?;
    let test = load(&family.test, "test")?;

    let mut opts = JobOptions::new(args.out.clone(), "hf-tailor-demo", request);
    opts.force = args.force;
    opts.out_checked = true;
    opts.reproduce = Some(reproduce_line(args));
    let mut progress = StderrProgress::new(args.json);
    let outcome = pipeline::tailor(&pulled, calibration, test, &opts, &mut progress)?;
    progress.finish();
    Ok(outcome)
}
