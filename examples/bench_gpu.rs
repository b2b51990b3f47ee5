//! The search's cost on this machine's device, without network or downloads (scripts/bench-gpu.sh
//! runs it: `cargo build --example bench_gpu`, with `--features cuda` for a GPU). An example, not a
//! subcommand: it writes its families with the test fixtures, which the product binary never
//! carries. For each shape it writes a synthetic
//! family (base + 3 siblings, random bf16 weights, the real tensor names and config of
//! Llama-2-7B/13B) into a memory-backed folder, scores a calibration stream shaped like the
//! reference's (MMLU validation 0-shot: 1,531 items over 57 subjects, 4 one-token choices;
//! WSC train: 554 items, 2 one-token choices; random tokens), and prints one table:
//! prefill tokens/s and MFU, seconds per trial at each Hyperband budget, device merge
//! seconds per layer, prefix-cache savings on the reference's warm-start stream, peak
//! memory, and the projected wall time of a 500-trial search.
//!
//! The siblings share the base's random bytes (one file, linked): the evaluator treats them
//! as distinct models (own tensors, own device copies, own cache keys), and neither merge
//! nor forward cost depends on the values. The fixture's byte-level tokenizer gives exact
//! token counts (one letter, one token); the embedding has the real 32,000 rows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::Device;
use hf_tailor::checkpoint::Family;
use hf_tailor::dtype::Dtype;
use hf_tailor::eval::tiers::Tier;
use hf_tailor::eval::weights::WeightStore;
use hf_tailor::eval::{memory, DeviceKind, EvalOptions, Evaluator, McItem, Task, TaskData};
use hf_tailor::merge::Method;
use hf_tailor::pipeline::{Depths, SearchRequest};
use hf_tailor::recipe::{LayerRule, Merge, Rule, SourceModel};
use hf_tailor::search::hyperband::brackets;
use hf_tailor::search::warmstart::warm_start;
use hf_tailor::search::{DepthTarget, SearchSpace, SpaceOptions};
use hf_tailor::testkit::fixture::{self, TinySpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What to measure.
#[derive(clap::Parser, Debug)]
#[command(name = "bench_gpu", about = "What the search costs on this machine's device, with synthetic Llama-2-shaped families.")]
struct Args {
    /// Shapes to run: tiny, 7b, 13b (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "7b,13b")]
    shapes: Vec<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    device: DeviceKind,
    /// Compute dtype (default bf16: the synthetic checkpoints are bf16).
    #[arg(long, value_parser = parse_dtype)]
    dtype: Option<Dtype>,
    /// The device's dense bf16 peak in TFLOP/s, for MFU (scripts/bench-gpu.sh reads it from
    /// the GPU's name); without it MFU is not reported.
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Folder for the synthetic checkpoints (default: /dev/shm when it exists, else the
    /// temp folder); removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Trials timed at each budget.
    #[arg(long, default_value_t = 1)]
    trials: usize,
    /// Warm-start candidates scored for the prefix-cache figure (taken evenly from the
    /// reference's three removal patterns).
    #[arg(long, default_value_t = 6)]
    warm_start: usize,
    /// Prefix-cache bound for that figure, MiB (default: the search's, derived from the
    /// device's memory).
    #[arg(long)]
    prefix_cache_mb: Option<u64>,
    /// Hyperband budgets, items per task (per subject for MMLU).
    #[arg(long, value_delimiter = ',', default_value = "111,333,1000")]
    budgets: Vec<usize>,
    /// Trials of the projected search.
    #[arg(long, default_value_t = 500)]
    project_trials: usize,
    /// Print the figures as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// A model shape and the calibration stream's scale for it.
struct Shape {
    name: &'static str,
    spec: TinySpec,
    keep: usize,
    /// Items of the MMLU-shaped and WSC-shaped tasks.
    mmlu_items: usize,
    wsc_items: usize,
    /// Context lengths: MMLU (min, max), the long subject (min, max), WSC (min, max).
    mmlu_len: (usize, usize),
    law_len: (usize, usize),
    wsc_len: (usize, usize),
}

fn llama(layers: usize, hidden: usize, intermediate: usize, heads: usize, vocab: usize) -> TinySpec {
    TinySpec {
        model_type: "llama",
        layers,
        hidden,
        intermediate,
        heads,
        kv_heads: heads,
        vocab,
        tie_embeddings: false,
        dtype: Dtype::Bf16,
        shard_bytes: None,
        head_dim: None,
        rope_scaling: None,
        sliding_window: None,
    }
}

fn shape(name: &str) -> anyhow::Result<Shape> {
    let real =
        |name, spec, keep| Shape { name, spec, keep, mmlu_items: 1531, wsc_items: 554, mmlu_len: (40, 240), law_len: (250, 600), wsc_len: (45, 110) };
    Ok(match name {
        "7b" => real("Llama-2-7B", llama(32, 4096, 11008, 32, 32000), 24),
        "13b" => real("Llama-2-13B", llama(40, 5120, 13824, 40, 32000), 30),
        "tiny" => Shape {
            name: "tiny",
            spec: llama(8, 64, 172, 4, 512),
            keep: 6,
            mmlu_items: 60,
            wsc_items: 20,
            mmlu_len: (8, 40),
            law_len: (40, 60),
            wsc_len: (8, 20),
        },
        other => bail!("unknown shape `{other}` (tiny, 7b, 13b)"),
    })
}

/// `n` random lowercase letters: exactly `n` tokens of the fixture tokenizer.
fn letters(rng: &mut impl Rng, n: usize) -> String {
    (0..n).map(|_| (b'a' + rng.random_range(0..26u8)) as char).collect()
}

/// MMLU-shaped and WSC-shaped tasks. MMLU: 57 subjects, the last one (professional law)
/// holding ~11 % of the items with long contexts, as in the validation split.
fn calibration(s: &Shape, seed: u64) -> (Vec<Task>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let law = s.mmlu_items / 9;
    let mut mmlu = Vec::with_capacity(s.mmlu_items);
    let mut lengths = Vec::new();
    for i in 0..s.mmlu_items {
        let (subject, (lo, hi)) = if i < law { (56, s.law_len) } else { (i % 56, s.mmlu_len) };
        let n = rng.random_range(lo..=hi);
        lengths.push(n);
        let choices = ["A", "B", "C", "D"].map(String::from).to_vec();
        mmlu.push(McItem { context: letters(&mut rng, n), choices, label: rng.random_range(0..4), subject: Some(format!("subject_{subject:02}")) });
    }
    let mut wsc = Vec::with_capacity(s.wsc_items);
    for _ in 0..s.wsc_items {
        let n = rng.random_range(s.wsc_len.0..=s.wsc_len.1);
        lengths.push(n);
        wsc.push(McItem { context: letters(&mut rng, n), choices: vec!["B".into(), "A".into()], label: rng.random_range(0..2), subject: None });
    }
    let tasks = vec![Task::new("mmlu", TaskData::MultipleChoice(mmlu)), Task::new("wsc", TaskData::MultipleChoice(wsc))];
    (tasks, lengths)
}

/// xorshift64*: fast random bf16 weights (~N-ish(0, 0.02), norms near 1) for tens of GB.
fn fill_random(buf: &mut [u8], seed: u64, norm: bool) {
    let mut x = seed | 1;
    for pair in buf.chunks_exact_mut(2) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let u = ((r >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
        let v = if norm { 1.0 + 0.1 * u } else { 0.07 * u };
        pair.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes());
    }
}

/// Write `model.safetensors` of `spec` (bf16, random) streaming, in parallel chunks.
fn write_checkpoint(dir: &Path, spec: &TinySpec) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let shapes = fixture::shapes(spec);
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in &shapes {
        let n = shape.iter().product::<usize>() * 2;
        header.insert(name.clone(), serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}));
        offset += n;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut h = serde_json::to_vec(&header)?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let path = dir.join("model.safetensors");
    let mut f = std::io::BufWriter::with_capacity(1 << 24, std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
    f.write_all(&(h.len() as u64).to_le_bytes())?;
    f.write_all(&h)?;
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1);
    const CHUNK: usize = 1 << 26;
    let mut buf = vec![0u8; CHUNK * threads];
    for (t, (name, shape)) in shapes.iter().enumerate() {
        let norm = name.ends_with("norm.weight");
        let mut left = shape.iter().product::<usize>() * 2;
        let mut round = 0u64;
        while left > 0 {
            let n = left.min(buf.len());
            std::thread::scope(|s| {
                for (c, chunk) in buf[..n].chunks_mut(CHUNK).enumerate() {
                    let seed = (t as u64) << 40 ^ round << 20 ^ c as u64;
                    s.spawn(move || fill_random(chunk, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), norm));
                }
            });
            f.write_all(&buf[..n])?;
            left -= n;
            round += 1;
        }
    }
    f.flush()?;
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&fixture::config_json(spec))?)?;
    fixture::write_tokenizer_files(dir)?;
    Ok(())
}

/// The synthetic family under `root`: the base written, each sibling a folder whose files
/// link to the base's.
fn write_family(root: &Path, spec: &TinySpec) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let base = root.join("base");
    write_checkpoint(&base, spec)?;
    let mut out = vec![("base".to_string(), base.clone())];
    for s in 1..=3 {
        let dir = root.join(format!("sib{s}"));
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&base)? {
            let entry = entry?;
            std::fs::hard_link(entry.path(), dir.join(entry.file_name()))
                .or_else(|_| std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())))?;
        }
        out.push((format!("sib{s}"), dir));
    }
    Ok(out)
}

fn open_family(models: &[(String, PathBuf)]) -> anyhow::Result<(Family, Vec<SourceModel>)> {
    let sources: Vec<SourceModel> = models.iter().map(|(name, dir)| SourceModel::local(name, dir.clone())).collect();
    let dir = |m: &SourceModel| Ok(models.iter().find(|(name, _)| *name == m.name).expect("a model written above").1.clone());
    Ok((Family::open(&sources[0], &sources[1..], dir)?, sources))
}

/// `n` candidates of the reference's warm-start stream, in its order, taken evenly from its
/// removal patterns (the first ones of each kept-layer set), so that the sample shares layer
/// prefixes the way the whole stream does (the patterns keep the same lower layers).
fn warm_start_sample(space: &SearchSpace, n: usize) -> Vec<hf_tailor::search::space::Candidate> {
    let mut groups: Vec<(Vec<usize>, Vec<hf_tailor::search::space::Candidate>)> = Vec::new();
    for c in warm_start(space) {
        let kept: Vec<usize> = c.kept().collect();
        match groups.iter_mut().find(|(k, _)| *k == kept) {
            Some((_, g)) => g.push(c),
            None => groups.push((kept, vec![c])),
        }
    }
    let per = n.div_ceil(groups.len().max(1));
    groups.into_iter().flat_map(|(_, g)| g.into_iter().take(per)).take(n).collect()
}

fn sync(device: &Device) -> anyhow::Result<()> {
    device.synchronize().context("device synchronisation")
}

/// Peak memory in use: the device's (total − free) on CUDA, the process's peak RSS on CPU.
struct PeakMemory {
    device: Device,
    peak: u64,
}

impl PeakMemory {
    fn sample(&mut self) {
        let used = match memory::device_memory(&self.device) {
            Ok(Some((free, total))) => total - free,
            _ => std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
                .map(|kb| kb << 10)
                .unwrap_or(0),
        };
        self.peak = self.peak.max(used);
    }
}

#[derive(Debug, serde::Serialize)]
struct Figures {
    shape: String,
    device: String,
    dtype: String,
    params: u64,
    layers: usize,
    keep: usize,
    write_seconds: f64,
    load_seconds: f64,
    prefill_tokens: usize,
    prefill_tokens_per_s: f64,
    mfu: Option<f64>,
    /// (budget, seconds per trial of a new random candidate, no prefix sharing)
    trial_seconds: Vec<(usize, f64)>,
    /// (method, seconds per layer) with the sources resident.
    merge_seconds_per_layer: Vec<(String, f64)>,
    warm_start_trials: usize,
    prefix_saved_fraction: f64,
    /// Warm-start mean s/trial with the prefix cache over s/trial without, same budget.
    prefix_time_ratio: f64,
    peak_memory_bytes: u64,
    memory_tiers: Vec<(String, Tier)>,
    projected_trials: usize,
    projected_hours: f64,
}

fn run_shape(args: &Args, s: &Shape, root: &Path, device_kind: DeviceKind) -> anyhow::Result<Figures> {
    let dir = root.join(s.name);
    let _ = std::fs::remove_dir_all(&dir);
    let t0 = Instant::now();
    let models = write_family(&dir, &s.spec)?;
    let write_seconds = t0.elapsed().as_secs_f64();
    let result = measure(args, s, &models, device_kind, write_seconds);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn options(args: &Args, device: DeviceKind, prefix: bool) -> EvalOptions {
    EvalOptions {
        device,
        dtype: Some(args.dtype.unwrap_or(Dtype::Bf16)),
        // Every model resident when the device has room (the tier rule decides).
        source_bytes: None,
        prefix_cache_bytes: if prefix { None } else { Some(0) },
        ..EvalOptions::default()
    }
}

fn measure(args: &Args, s: &Shape, models: &[(String, PathBuf)], device_kind: DeviceKind, write_seconds: f64) -> anyhow::Result<Figures> {
    let (family, sources) = open_family(models)?;
    let family = Arc::new(family);
    let (tasks, lengths) = calibration(s, 7);
    let config = family.base.config.clone();
    let request = SearchRequest {
        space: SpaceOptions { methods: vec![Method::TaskArithmetic, Method::Ties, Method::Dare], ..SpaceOptions::default() },
        ..SearchRequest::new(Depths::one(DepthTarget::KeepLayers(s.keep)))
    };
    let space = request.space(&family, sources[0].clone(), sources[1..].to_vec())?;
    let top = *args.budgets.iter().max().context("no budget")?;

    // Load and warm up: the base's first layers kept, every kernel compiled once.
    let t0 = Instant::now();
    let mut ev = Evaluator::new(family.clone(), tasks.clone(), options(args, device_kind, false))?;
    let device = match device_kind {
        DeviceKind::Cpu => Device::Cpu,
        DeviceKind::Cuda(n) => Device::new_cuda(n)?,
    };
    let mut peak = PeakMemory { device: device.clone(), peak: 0 };
    let kept: Vec<usize> = (0..s.keep).collect();
    let base_recipe = space.to_recipe(&space.base_only(&kept));
    let warm_budget = *args.budgets.iter().min().context("no budget")?;
    ev.evaluate(&base_recipe, warm_budget)?;
    sync(&device)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    peak.sample();

    // Prefill throughput: the same recipe at the full budget, weights already materialised.
    let tokens = ev.planned_tokens(top)?;
    let t = Instant::now();
    ev.evaluate(&base_recipe, top)?;
    sync(&device)?;
    let secs = t.elapsed().as_secs_f64();
    peak.sample();
    let prefill_tokens_per_s = tokens as f64 / secs;
    // Model FLOPs of the decoder layers: 2 per parameter per token, plus attention's
    // QKᵀ and PV (2·2·d per key position, over the causal half) at the stream's lengths.
    let mean_len = lengths.iter().map(|l| (l * l) as f64).sum::<f64>() / lengths.iter().sum::<usize>() as f64;
    let flops_per_token = s.keep as f64 * (2.0 * config.params_per_layer() as f64 + 2.0 * config.hidden_size as f64 * mean_len);
    let mfu = args.peak_tflops.map(|p| prefill_tokens_per_s * flops_per_token / (p * 1e12));

    // Seconds per trial of new random candidates (every layer new: merges included).
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut trial_seconds = Vec::new();
    for &b in &args.budgets {
        let mut total = 0.0;
        for _ in 0..args.trials {
            let r = space.to_recipe(&space.sample(&mut rng));
            let t = Instant::now();
            ev.evaluate(&r, b)?;
            sync(&device)?;
            total += t.elapsed().as_secs_f64();
            peak.sample();
        }
        trial_seconds.push((b, total / args.trials.max(1) as f64));
    }
    let memory_tiers = ev.memory().tiers;
    drop(ev);

    // Device merges per layer, sources resident (uploaded by a first, untimed pass).
    let dtype = hf_tailor::eval::candle_dtype(args.dtype.unwrap_or(Dtype::Bf16));
    let n_models = family.names.len();
    let mut store = WeightStore::new(family.clone(), device.clone(), dtype, 1, &vec![Tier::Device; n_models], u64::MAX);
    let siblings: Vec<String> = family.names[1..].to_vec();
    let layers = 2.min(s.spec.layers);
    for l in 0..layers {
        for m in &family.names {
            store.layer(l, &LayerRule { from: l, rule: Rule::Take(m.clone()) }, None)?;
        }
    }
    sync(&device)?;
    peak.sample();
    let methods = [
        ("task_arithmetic", Merge::TaskArithmetic { models: siblings.clone(), lambda: 0.5 }),
        ("ties", Merge::Ties { models: siblings.clone(), lambda: 0.5, density: 0.5 }),
        ("dare", Merge::Dare { models: siblings.clone(), lambda: 0.5, density: 0.5, seed: 0 }),
    ];
    let mut merge_seconds_per_layer = Vec::new();
    for (name, m) in methods {
        let t = Instant::now();
        for l in 0..layers {
            store.layer(l, &LayerRule { from: l, rule: Rule::Merge(m.clone()) }, None)?;
        }
        sync(&device)?;
        merge_seconds_per_layer.push((name.to_string(), t.elapsed().as_secs_f64() / layers as f64));
        peak.sample();
    }
    drop(store);

    // The reference's warm-start stream with the prefix cache, against the same candidates'
    // cost without it (the budget phase above, at the smallest budget).
    let stream = warm_start_sample(&space, args.warm_start);
    let mut ev = Evaluator::new(
        family.clone(),
        tasks,
        EvalOptions { prefix_cache_bytes: args.prefix_cache_mb.map(|m| m << 20), ..options(args, device_kind, true) },
    )?;
    let t = Instant::now();
    for c in &stream {
        ev.evaluate(&space.to_recipe(c), warm_budget)?;
    }
    sync(&device)?;
    let warm_secs = t.elapsed().as_secs_f64() / stream.len().max(1) as f64;
    peak.sample();
    let prefix_saved_fraction = ev.stats().saved_fraction();
    drop(ev);
    let uncached = trial_seconds.first().map(|(_, s)| *s).unwrap_or(f64::NAN);

    // The projected search: Hyperband's evaluations per budget over the trials.
    let plans = brackets(&args.budgets, 3);
    let mut per_iteration = 0.0;
    let mut evals = 0usize;
    for p in &plans {
        for (n, b) in &p.stages {
            let secs = trial_seconds.iter().find(|(x, _)| x == b).map(|(_, s)| *s).unwrap_or(0.0);
            per_iteration += *n as f64 * secs;
            evals += n;
        }
    }
    let projected_hours = per_iteration / evals.max(1) as f64 * args.project_trials as f64 / 3600.0;

    Ok(Figures {
        shape: s.name.to_string(),
        device: format!("{device_kind:?}").to_lowercase(),
        dtype: format!("{dtype:?}").to_lowercase(),
        params: config.total_params(config.num_hidden_layers),
        layers: config.num_hidden_layers,
        keep: s.keep,
        write_seconds,
        load_seconds,
        prefill_tokens: tokens,
        prefill_tokens_per_s,
        mfu,
        trial_seconds,
        merge_seconds_per_layer,
        warm_start_trials: stream.len(),
        prefix_saved_fraction,
        prefix_time_ratio: warm_secs / uncached,
        peak_memory_bytes: peak.peak,
        memory_tiers,
        projected_trials: args.project_trials,
        projected_hours,
    })
}

fn render(rows: &[Figures]) -> String {
    let mut s = String::new();
    let cols: Vec<&Figures> = rows.iter().collect();
    let line = |label: &str, f: &dyn Fn(&Figures) -> String| {
        let mut l = format!("{label:<34}");
        for r in &cols {
            l += &format!(" {:>22}", f(r));
        }
        l + "\n"
    };
    s += &line("shape", &|r| format!("{} ({}/{} layers)", r.shape, r.keep, r.layers));
    s += &line("device / dtype", &|r| format!("{} / {}", r.device, r.dtype));
    s += &line("params (per model)", &|r| hf_tailor::human::human_count(r.params));
    s += &line("family written / loaded+warm (s)", &|r| format!("{:.1} / {:.1}", r.write_seconds, r.load_seconds));
    s += &line("prefill tokens/s (full budget)", &|r| format!("{:.0} ({} tok)", r.prefill_tokens_per_s, r.prefill_tokens));
    s += &line("MFU vs bf16 peak", &|r| r.mfu.map(|m| format!("{:.1} %", 100.0 * m)).unwrap_or_else(|| "n/a (no peak)".into()));
    let budgets: Vec<usize> = rows.first().map(|r| r.trial_seconds.iter().map(|(b, _)| *b).collect()).unwrap_or_default();
    for (i, b) in budgets.iter().enumerate() {
        s += &line(&format!("s/trial, budget {b}"), &|r| format!("{:.2}", r.trial_seconds[i].1));
    }
    for (i, (m, _)) in rows.first().map(|r| r.merge_seconds_per_layer.clone()).unwrap_or_default().iter().enumerate() {
        s += &line(&format!("device merge s/layer, {m}"), &|r| format!("{:.3}", r.merge_seconds_per_layer[i].1));
    }
    s += &line("prefix cache: layer-forwards saved", &|r| format!("{:.1} % ({} warm-start)", 100.0 * r.prefix_saved_fraction, r.warm_start_trials));
    s += &line("prefix cache: time vs uncached", &|r| format!("{:.2}x", r.prefix_time_ratio));
    s += &line("peak memory in use", &|r| hf_tailor::human::human_bytes(r.peak_memory_bytes));
    s += &line("models on the device", &|r| {
        format!("{} of {}", r.memory_tiers.iter().filter(|(_, t)| *t == Tier::Device).count(), r.memory_tiers.len())
    });
    s += &line("projected search (h)", &|r| format!("{:.2} ({} trials)", r.projected_hours, r.projected_trials));
    s
}

fn parse_dtype(s: &str) -> Result<Dtype, String> {
    Dtype::parse(s).ok_or_else(|| format!("`{s}` is not bf16, f16 or f32"))
}

fn main() -> std::process::ExitCode {
    let args = <Args as clap::Parser>::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("bench_gpu: error: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let shapes = args.shapes.iter().map(|n| shape(n.trim())).collect::<anyhow::Result<Vec<_>>>()?;
    if args.budgets.is_empty() || args.budgets.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--budgets must be increasing");
    }
    let root = match &args.dir {
        Some(d) => d.clone(),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    }
    .join(format!("hf-tailor-bench-{}", std::process::id()));
    let mut rows = Vec::new();
    for s in &shapes {
        eprintln!("bench_gpu: {} ({} layers, hidden {}) on {:?}", s.name, s.spec.layers, s.spec.hidden, args.device);
        let r = run_shape(&args, s, &root, args.device);
        let _ = std::fs::remove_dir_all(&root);
        rows.push(r?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", render(&rows));
    }
    Ok(())
}
