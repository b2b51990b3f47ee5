//! What a tailoring job will cost before it runs (`--dry-run`): the files to download, the
//! parameter count before and after, and the memory the search and the build need.

use std::path::Path;

use serde::Serialize;

use super::PipelineError;
use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::dtype::Dtype;
use crate::eval::budget::{self, Machine, Memory, MemoryPlan, Needs, Requested};
use crate::eval::tiers::{self, Tier, Transfer};
use crate::eval::DeviceKind;
use crate::hub::{HubConfig, ModelSource};
use crate::layout::Layout;
use crate::search::DepthTarget;

/// One model of the family as the job will fetch it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelFiles {
    /// Recipe name (`base`, `sib1`, …).
    pub name: String,
    /// Hub id (with `@revision` when pinned) or local folder.
    pub source: String,
    /// Whether the files still have to be downloaded (false: local folder or already cached).
    pub download: bool,
    /// (file name, size in bytes), in download order.
    pub files: Vec<(String, u64)>,
}

impl ModelFiles {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, n)| n).sum()
    }
}

/// The dry-run summary.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub models: Vec<ModelFiles>,
    pub download_bytes: u64,
    pub source_layers: usize,
    pub keep_layers: usize,
    pub params_before: u64,
    pub params_after: u64,
    /// Share of parameters removed, in percent.
    pub removed_percent: f64,
    /// Where the candidates are scored; decides the dtype the resident layers are held in.
    pub device: DeviceKind,
    /// Every model's decoder layers resident for in-memory scoring, in the compute dtype.
    pub search_resident_bytes: u64,
    /// The tailored checkpoint on disk (in the base's storage dtype).
    pub output_bytes: u64,
    /// Where each model's source tensors land on the GPU sizes planned (CUDA only).
    pub tiers: Vec<TierPlan>,
    /// The evaluator's memory bounds: for this machine on the CPU, for each GPU size
    /// planned on CUDA (label, plan).
    pub memory: Vec<(String, MemoryPlan)>,
}

/// The models' memory tiers ([`crate::eval::tiers`]) for one device size or source bound.
#[derive(Debug, Clone, Serialize)]
pub struct TierPlan {
    /// What was planned for: `80 GB GPU`, `--sources-mb 30000`, ….
    pub label: String,
    /// Device bytes left to source tensors.
    pub source_bytes: u64,
    /// (model, tier), base first.
    pub models: Vec<(String, Tier)>,
    /// Host-to-device bytes per trial whose layers are all new.
    pub transfer: Transfer,
}

/// GPU sizes `--dry-run` plans for when no `--sources-mb` is given: an 80 GB H100/A100 and a
/// 141 GB H200.
pub const PLANNED_GPUS: [(&str, u64); 2] = [("80 GB GPU", 80_000_000_000), ("141 GB GPU", 141_000_000_000)];

impl Plan {
    /// `storage` is the base's dtype on disk; CPU scoring holds layers in f32, CUDA in the
    /// storage dtype (f16/bf16), as the evaluator does.
    pub fn new(config: &ModelConfig, storage: Dtype, keep_layers: usize, device: DeviceKind, models: Vec<ModelFiles>) -> Self {
        let params_before = Layout::of_base(config, config.num_hidden_layers, storage).total_params();
        let params_after = Layout::of_base(config, keep_layers, storage).total_params();
        let compute = match device {
            DeviceKind::Cpu => Dtype::F32,
            DeviceKind::Cuda(_) => storage,
        };
        let per_model = params_before * compute.size() as u64;
        Plan {
            download_bytes: models.iter().filter(|m| m.download).map(ModelFiles::bytes).sum(),
            search_resident_bytes: per_model * models.len() as u64,
            output_bytes: params_after * storage.size() as u64,
            models,
            source_layers: config.num_hidden_layers,
            keep_layers,
            params_before,
            params_after,
            removed_percent: 100.0 * (params_before - params_after) as f64 / params_before as f64,
            device,
            tiers: Vec::new(),
            memory: Vec::new(),
        }
    }

    /// The evaluator's memory bounds ([`budget`]): on the CPU for `host` (this machine), on
    /// CUDA for each of [`PLANNED_GPUS`] (with the models' tiers); `req`: the bounds set on
    /// the command line (refused, on the CPU, when they exceed what is available). The search's merged layers are capped at what its space (the
    /// siblings, task arithmetic) can produce.
    pub fn with_memory(mut self, config: &ModelConfig, storage: Dtype, host: &Machine, req: Requested) -> Result<Self, PipelineError> {
        let (memory, compute) = match self.device {
            DeviceKind::Cpu => (Memory::Host, Dtype::F32),
            DeviceKind::Cuda(_) => (Memory::Device, storage),
        };
        let rules = crate::search::space::rules_per_layer(self.models.len().saturating_sub(1), 1);
        let needs = Needs {
            model_bytes: self.models.iter().map(|_| config.total_params(config.num_hidden_layers) * storage.size() as u64).collect(),
            merged_layers: Some(rules.saturating_mul(self.params_before).saturating_mul(compute.size() as u64)),
        };
        match self.device {
            DeviceKind::Cpu => {
                let plan = budget::derive(memory, host, &needs, &req).map_err(|e| PipelineError::Plan(e.to_string()))?;
                self.memory.push(("this machine".into(), plan));
            }
            DeviceKind::Cuda(_) => {
                for (label, total) in PLANNED_GPUS {
                    let gpu = Machine { device: Some((total, total)), ..host.clone() };
                    // An explicit --sources-mb larger than this GPU plans nothing for it.
                    if let Ok(plan) = budget::derive(memory, &gpu, &needs, &req) {
                        self.memory.push((label.to_string(), plan));
                    }
                }
            }
        }
        Ok(self)
    }

    /// Plan the models' tiers with `source_bytes` given explicitly (`--sources-mb`), or for
    /// [`PLANNED_GPUS`] with the evaluator's derived bounds ([`Plan::with_memory`] first).
    /// Sources stay in their storage dtype (`storage`) on the device; a decoder layer is
    /// `params_per_layer` of them.
    pub fn with_tiers(mut self, config: &ModelConfig, storage: Dtype, source_bytes: Option<u64>) -> Self {
        let model_bytes: Vec<u64> = self.models.iter().map(|_| config.total_params(config.num_hidden_layers) * storage.size() as u64).collect();
        let layer = config.params_per_layer() * storage.size() as u64;
        let bounds: Vec<(String, u64)> = match source_bytes {
            Some(b) => vec![(format!("--sources-mb {}", b >> 20), b)],
            None => self.memory.iter().map(|(label, plan)| (label.clone(), plan.sources.bytes)).collect(),
        };
        self.tiers = bounds
            .into_iter()
            .map(|(label, bound)| {
                let t = tiers::assign(&model_bytes, bound);
                TierPlan {
                    label,
                    source_bytes: bound,
                    transfer: tiers::transfer_per_trial(&vec![layer; t.len()], &t, self.keep_layers),
                    models: self.models.iter().map(|m| m.name.clone()).zip(t).collect(),
                }
            })
            .collect();
        self
    }

    /// The human-readable summary `--dry-run` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for m in &self.models {
            let what = if m.download { "download" } else { "use" };
            s += &format!("{what} {} ({}): {} files, {}\n", m.name, m.source, m.files.len(), human_bytes(m.bytes()));
            for (f, n) in &m.files {
                s += &format!("    {f:<40} {:>10}\n", human_bytes(*n));
            }
        }
        s += &format!("to download: {}\n", human_bytes(self.download_bytes));
        s += &format!("layers: {} -> {} ({} removed)\n", self.source_layers, self.keep_layers, self.source_layers - self.keep_layers);
        s += &format!(
            "parameters: {} -> {} ({:.1}% removed)\n",
            human_count(self.params_before),
            human_count(self.params_after),
            self.removed_percent
        );
        s += &format!(
            "memory for the search ({}): {} to keep all {} models' layers resident\n",
            self.device,
            human_bytes(self.search_resident_bytes),
            self.models.len()
        );
        for t in &self.tiers {
            let names = |tier: Tier| {
                let v: Vec<&str> = t.models.iter().filter(|(_, x)| *x == tier).map(|(m, _)| m.as_str()).collect();
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            s += &format!(
                "tiers, {} ({} for source weights): on the device: {}; in host memory: {}; transfer per trial: {} expected, {} at most\n",
                t.label,
                human_bytes(t.source_bytes),
                names(Tier::Device),
                names(Tier::Host),
                human_bytes(t.transfer.expected),
                human_bytes(t.transfer.worst),
            );
        }
        for (label, m) in &self.memory {
            s += &m.render().replacen("memory plan (", &format!("memory plan, {label} ("), 1);
        }
        s += &format!("tailored checkpoint: {}\n", human_bytes(self.output_bytes));
        s
    }
}

/// The files a job reads from a local model folder, with their sizes, and the opened
/// checkpoint (the base's gives the plan its config and storage dtype).
fn local_files(name: &str, dir: &Path) -> Result<(ModelFiles, Checkpoint), PipelineError> {
    let ckpt = Checkpoint::open_named(dir, name)?;
    let mut files = Vec::new();
    let entries = std::fs::read_dir(&ckpt.dir).map_err(|e| PipelineError::io(dir, e))?;
    let mut names: Vec<String> = entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for n in names {
        let wanted = n == "config.json" || n.ends_with(".safetensors") || n == crate::checkpoint::INDEX_FILE || crate::checkpoint::is_side_file(&n);
        if wanted {
            let len = std::fs::metadata(ckpt.dir.join(&n)).map_err(|e| PipelineError::io(dir, e))?.len();
            files.push((n, len));
        }
    }
    Ok((ModelFiles { name: name.into(), source: dir.display().to_string(), download: false, files }, ckpt))
}

/// The plan of a job: local folders and cached Hub snapshots are read in place; a Hub model
/// not yet cached is planned remotely (config.json and the shard index fetched, every other
/// file sized with a HEAD request), so a dry run downloads no weights.
/// On CUDA the plan also says which models' sources fit the device (`source_bytes`: the
/// `--sources-mb` bound, or `None` for the standard GPU sizes).
pub fn plan_job(
    cfg: &HubConfig,
    base: &ModelSource,
    finetunes: &[ModelSource],
    depth: DepthTarget,
    device: DeviceKind,
    requested: Requested,
) -> Result<Plan, PipelineError> {
    let mut offline = cfg.clone();
    offline.offline = true;
    let mut models = Vec::new();
    let mut base_shape = None;
    let mut taken = std::collections::BTreeSet::from(["base".to_string()]);
    for (i, m) in std::iter::once(base).chain(finetunes).enumerate() {
        let name = if i == 0 { "base".to_string() } else { crate::hub::pull::unique_name(m, &mut taken) };
        let in_place = |dir: &Path| -> Result<_, PipelineError> {
            let (files, ckpt) = local_files(&name, dir)?;
            Ok((files, (i == 0).then(|| (ckpt.config.clone(), ckpt.storage_dtype()))))
        };
        let (mut files, shape) = match m {
            ModelSource::Local(dir) => in_place(dir)?,
            ModelSource::Hub { repo, revision } => match crate::hub::pull_model(&offline, &name, m, false) {
                Ok(cached) => in_place(&cached.dir)?,
                Err(_) => remote_files(cfg, &name, repo, revision.as_deref().unwrap_or("main"), i == 0)?,
            },
        };
        files.source = m.to_string();
        models.push(files);
        if let Some(shape) = shape {
            base_shape.get_or_insert(shape);
        }
    }
    let (config, storage) = base_shape.expect("the base is always planned first");
    let keep = depth.keep_layers(config.num_hidden_layers, |k| config.total_params(k))?;
    let plan = Plan::new(&config, storage, keep, device, models);
    let (available, limit) = budget::HostReader::default().available();
    let host = Machine { host_available: available, host_limit: limit, device: None };
    let plan = plan.with_memory(&config, storage, &host, requested)?;
    Ok(match device {
        DeviceKind::Cuda(_) => plan.with_tiers(&config, storage, requested.sources),
        DeviceKind::Cpu => plan,
    })
}

/// A Hub model that is not cached: its files and sizes from the Hub, and (for the base) its
/// config and storage dtype, the one `torch_dtype`/`dtype` declares (f32 when it declares none,
/// as transformers loads it).
fn remote_files(
    cfg: &HubConfig,
    name: &str,
    repo: &str,
    revision: &str,
    want_shape: bool,
) -> Result<(ModelFiles, Option<(ModelConfig, Dtype)>), PipelineError> {
    if cfg.offline {
        return Err(PipelineError::Plan(format!(
            "{repo}@{revision} is not in the Hub cache and HF_HUB_OFFLINE is set: run `hf-tailor pull` first, or plan online"
        )));
    }
    let remote = crate::hub::pull::plan_hub_model(cfg, repo, revision)?;
    let shape = if want_shape {
        let config = ModelConfig::from_file(&remote.config).map_err(crate::checkpoint::CheckpointError::from)?;
        let storage = config.declared_dtype.as_deref().and_then(Dtype::parse).unwrap_or(Dtype::F32);
        Some((config, storage))
    } else {
        None
    };
    Ok((ModelFiles { name: name.into(), source: String::new(), download: true, files: remote.files }, shape))
}

pub use crate::human::{human_bytes, human_count};

#[cfg(test)]
mod tests {
    use super::*;

    fn llama2_7b() -> ModelConfig {
        let raw = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 4096, "tie_word_embeddings": false, "torch_dtype": "float16"
        });
        ModelConfig::from_value(raw, "config.json").expect("valid")
    }

    #[test]
    fn llama2_7b_keeping_23_of_32_layers_matches_the_paper() {
        let files = |name: &str| ModelFiles {
            name: name.into(),
            source: format!("org/{name}"),
            download: true,
            files: vec![("model.safetensors".into(), 13_476_839_424)],
        };
        let plan = Plan::new(&llama2_7b(), Dtype::F16, 23, DeviceKind::Cuda(0), vec![files("base"), files("a"), files("b")]);
        // Llama-2-7B has 6,738,415,616 parameters and 202,383,360 per layer; the paper
        // reports ~27.1% removed at 23 layers (9 x 202M = 27.03% of the whole model).
        assert_eq!(plan.params_before, 6_738_415_616);
        assert_eq!(plan.params_after, 6_738_415_616 - 9 * 202_383_360);
        assert!((plan.removed_percent - 27.03).abs() < 0.01, "{}", plan.removed_percent);
        assert_eq!(plan.download_bytes, 3 * 13_476_839_424);
        assert_eq!(plan.search_resident_bytes, 3 * 6_738_415_616 * 2);
        assert_eq!(plan.output_bytes, plan.params_after * 2);
        let text = plan.render();
        assert!(text.contains("layers: 32 -> 23 (9 removed)"), "{text}");
        assert!(text.contains("parameters: 6.74B -> 4.92B (27.0% removed)"), "{text}");
        // CPU scoring holds f32 layers: twice the memory.
        let cpu = Plan::new(&llama2_7b(), Dtype::F16, 23, DeviceKind::Cpu, vec![files("base")]);
        assert_eq!(cpu.search_resident_bytes, 6_738_415_616 * 4);
    }

    #[test]
    fn a_13b_family_of_four_fits_a_141_gb_gpu_and_half_of_it_an_80_gb_one() {
        let raw = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 5120,
            "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40,
            "num_key_value_heads": 40, "vocab_size": 32000, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 4096, "tie_word_embeddings": false, "torch_dtype": "float16"
        });
        let c = ModelConfig::from_value(raw, "config.json").expect("valid");
        assert_eq!(c.total_params(40), 13_015_864_320);
        let files = |name: &str| ModelFiles { name: name.into(), source: name.into(), download: false, files: vec![] };
        let models = vec![files("base"), files("a"), files("b"), files("c")];
        let host = Machine { host_available: 64 << 30, host_limit: "MemAvailable".into(), device: None };
        let plan = Plan::new(&c, Dtype::F16, 30, DeviceKind::Cuda(0), models)
            .with_memory(&c, Dtype::F16, &host, Requested::default())
            .unwrap()
            .with_tiers(&c, Dtype::F16, None);
        // 26.0 GB a model; 7/8 of 80 GB less 8 GB headroom is 63 GB: two fit.
        let gpu80 = &plan.tiers[0];
        let tiers: Vec<Tier> = gpu80.models.iter().map(|(_, t)| *t).collect();
        assert_eq!(tiers, vec![Tier::Device, Tier::Device, Tier::Host, Tier::Host]);
        assert_eq!(gpu80.transfer.worst, 30 * 2 * 317_204_480 * 2);
        assert_eq!(gpu80.transfer.expected, 30 * 317_204_480 * 2 / 2);
        // 7/8 of 141 GB less 14.1 GB is 111.0 GB: all four (104.1 GB).
        assert!(plan.tiers[1].models.iter().all(|(_, t)| *t == Tier::Device));
        let text = plan.render();
        assert!(text.contains("tiers, 80 GB GPU ("), "{text}");
        assert!(text.contains("in host memory: b, c;"), "{text}");
        assert!(text.contains("memory plan, 141 GB GPU (device memory"), "{text}");
        assert!(text.contains("source weights    97.0 GiB  4 of 4 models fit"), "{text}");
        let explicit = Plan::new(&c, Dtype::F16, 30, DeviceKind::Cuda(0), vec![files("base"), files("a")]).with_tiers(&c, Dtype::F16, Some(30 << 30));
        assert_eq!(explicit.tiers[0].models, vec![("base".to_string(), Tier::Device), ("a".to_string(), Tier::Host)]);
    }
}
