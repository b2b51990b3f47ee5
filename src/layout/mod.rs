//! The output layout of a recipe: every tensor the tailored model has (output name, the
//! source tensor it is made from, the recipe rule, the row cut of the common vocabulary,
//! shape and dtype), whether its output projection is tied to the embeddings, and the
//! output `config.json` ([`config`]).
//!
//! This is the one place that decides "which tensor comes from where". The writer
//! materialises a layout on disk and the evaluator materialises the same layout in memory
//! (as mergekit's one plan feeds its two executors), so the search scores exactly the model
//! the writer writes; parameter counts (card, `--dry-run`, build report) come from it too.
//!
//! **Tied models.** A base with `tie_word_embeddings: true` has no `lm_head`: its output
//! projection *is* its embedding matrix. When a recipe takes the embeddings and the head
//! from the same rule, the output stays tied. When they differ, one matrix cannot be both:
//! the output is untied, `model.embed_tokens.weight` follows the embeddings rule and
//! `lm_head.weight` is the *head* rule applied to the sources' embedding matrices (each
//! source's own output projection), together with the head rule's final norm.

mod config;

use crate::arch::{Arch, Role};
use crate::checkpoint::Family;
use crate::config::ModelConfig;
use crate::dtype::Dtype;
use crate::recipe::{LayerRule, Recipe, Rule};

pub use config::output_config;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("the recipe does not fit the base: {0}")]
    Mismatch(String),
    #[error("output config.json: {0}")]
    Config(String),
}

/// What an output tensor is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Embeddings,
    /// Output layer `index`, made from source layer `from`.
    Layer {
        index: usize,
        from: usize,
        role: Role,
    },
    FinalNorm,
    /// The untied output projection (`lm_head.weight`).
    OutputProjection,
}

/// One tensor of the output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Name in the output (layers renumbered `0..k-1`).
    pub name: String,
    /// Name of the tensor it is made from in every source model.
    pub source: String,
    pub rule: Rule,
    /// Keep only the first rows (the family's common vocabulary).
    pub rows: Option<usize>,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub slot: Slot,
    /// A fitted heal map fused into this tensor (a down_proj before a gap): the output is
    /// `Tᵀ · source` ([`crate::heal::fuse`]), with T the maps file's tensor named here.
    pub fused: Option<FusedMap>,
}

/// A heal map fused into an output tensor: its name in the recipe's maps file, and its
/// sha256 (which tells cached weights of different maps apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusedMap {
    pub name: String,
    pub sha256: String,
}

impl FusedMap {
    /// The map fused into output layer `index` of `recipe`, if the recipe heals that layer.
    pub fn of(recipe: &Recipe, index: usize) -> Option<Self> {
        let g = recipe.heal.as_ref()?.gap_at(index)?;
        Some(Self { name: g.map.clone(), sha256: g.sha256.clone() })
    }
}

impl OutputTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

/// The outside-the-layers part of a layout: what the evaluator needs besides the layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Edges {
    pub embeddings: OutputTensor,
    pub final_norm: OutputTensor,
    /// `None` when the output ties its projection to `embeddings`.
    pub output_projection: Option<OutputTensor>,
    /// Set when the recipe forced an untied output from a tied base.
    pub note: Option<String>,
}

impl Edges {
    /// The matrix the output projects with: its own, or the (tied) embeddings.
    pub fn projection(&self) -> &OutputTensor {
        self.output_projection.as_ref().unwrap_or(&self.embeddings)
    }

    pub fn tied(&self) -> bool {
        self.output_projection.is_none()
    }
}

/// The tensors of output layer `index` made from `layer` (in the architecture table's order);
/// `fused`: the heal map fused into its down_proj, if any ([`FusedMap::of`]).
pub fn layer_tensors(config: &ModelConfig, index: usize, layer: &LayerRule, dtype: Dtype, fused: Option<&FusedMap>) -> Vec<OutputTensor> {
    let arch = config.arch;
    arch.layer_tensors
        .iter()
        .map(|t| OutputTensor {
            name: arch.layer_tensor_name(index, t.suffix),
            source: arch.layer_tensor_name(layer.from, t.suffix),
            rule: layer.rule.clone(),
            rows: None,
            shape: config.layer_tensor_shape(t.role),
            dtype,
            slot: Slot::Layer { index, from: layer.from, role: t.role },
            fused: if t.role == Role::Down { fused.cloned() } else { None },
        })
        .collect()
}

/// Embeddings, final norm and output projection of `recipe` over a base with `config`,
/// cut to `vocab` rows. See the module docs for the tying rule.
pub fn edges(config: &ModelConfig, recipe: &Recipe, vocab: usize, dtype: Dtype) -> Edges {
    let arch: &Arch = config.arch;
    let h = config.hidden_size;
    let matrix = |name: &str, source: &str, rule: &Rule, slot: Slot| OutputTensor {
        name: name.into(),
        source: source.into(),
        rule: rule.clone(),
        rows: Some(vocab),
        shape: vec![vocab, h],
        dtype,
        slot,
        fused: None,
    };
    let embeddings = matrix(arch.embed, arch.embed, &recipe.embeddings, Slot::Embeddings);
    let final_norm = OutputTensor {
        name: arch.final_norm.into(),
        source: arch.final_norm.into(),
        rule: recipe.head.clone(),
        rows: None,
        shape: vec![h],
        dtype,
        slot: Slot::FinalNorm,
        fused: None,
    };
    let (output_projection, note) = if !config.tie_word_embeddings {
        (Some(matrix(arch.lm_head, arch.lm_head, &recipe.head, Slot::OutputProjection)), None)
    } else if recipe.embeddings == recipe.head {
        (None, None)
    } else {
        let note = format!(
            "the base ties lm_head to the embeddings, but the recipe takes embeddings from `{}` and the head from `{}`: \
             the output is untied and lm_head.weight is `{}`'s embedding matrix",
            recipe.embeddings.label(),
            recipe.head.label(),
            recipe.head.label()
        );
        (Some(matrix(arch.lm_head, arch.embed, &recipe.head, Slot::OutputProjection)), Some(note))
    };
    Edges { embeddings, final_norm, output_projection, note }
}

/// Every tensor of the output of a recipe, in write order (embeddings, layers, final norm,
/// lm_head), and the facts derived from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub tensors: Vec<OutputTensor>,
    pub dtype: Dtype,
    /// Output vocabulary rows (the family's common rows).
    pub vocab: usize,
    /// Whether the output ties lm_head to the embeddings (no `lm_head.weight` written).
    pub tied: bool,
    /// Source layer of each output layer, in order.
    pub kept: Vec<usize>,
    pub source_layers: usize,
    /// Decisions worth reporting (e.g. embeddings untied).
    pub notes: Vec<String>,
}

impl Layout {
    /// The layout of `recipe` over a base with `config`, `vocab` common vocabulary rows and
    /// output `dtype`. Checks only that the recipe is for this config (see [`Layout::check`]).
    pub fn new(config: &ModelConfig, recipe: &Recipe, vocab: usize, dtype: Dtype) -> Result<Self, LayoutError> {
        if recipe.architecture != config.arch.model_type || recipe.source_layers != config.num_hidden_layers {
            return Err(LayoutError::Mismatch(format!(
                "the recipe is for {} with {} layers, but the base is {} with {} layers",
                recipe.architecture, recipe.source_layers, config.arch.model_type, config.num_hidden_layers
            )));
        }
        if let Some(l) = recipe.layers.iter().find(|l| l.from >= config.num_hidden_layers) {
            return Err(LayoutError::Mismatch(format!("source layer {} does not exist (the base has {})", l.from, config.num_hidden_layers)));
        }
        let edges = edges(config, recipe, vocab, dtype);
        let mut tensors = vec![edges.embeddings.clone()];
        for (index, layer) in recipe.layers.iter().enumerate() {
            tensors.extend(layer_tensors(config, index, layer, dtype, FusedMap::of(recipe, index).as_ref()));
        }
        tensors.push(edges.final_norm.clone());
        let tied = edges.tied();
        tensors.extend(edges.output_projection);
        Ok(Self {
            tensors,
            dtype,
            vocab,
            tied,
            kept: recipe.layers.iter().map(|l| l.from).collect(),
            source_layers: recipe.source_layers,
            notes: edges.note.into_iter().collect(),
        })
    }

    /// The layout of `recipe` over an opened `family`: its common vocabulary, the recipe's
    /// output dtype (else the base's storage dtype), every shape checked against the base.
    ///
    /// This is the one "does this recipe fit this family" check: the evaluator and the writer
    /// both work from the layout it returns. The family must hold every model the recipe
    /// names, with the recipe's base as its base.
    pub fn for_family(family: &Family, recipe: &Recipe) -> Result<Self, LayoutError> {
        if let Some(m) = recipe.models().find(|m| family.get(&m.name).is_none()) {
            return Err(LayoutError::Mismatch(format!(
                "model `{}` ({}) is not among the family's models ({})",
                m.name,
                m.source,
                family.names.join(", ")
            )));
        }
        if recipe.base.name != family.base_name() {
            return Err(LayoutError::Mismatch(format!("the recipe's base is `{}`, the family's is `{}`", recipe.base.name, family.base_name())));
        }
        let base = &family.base;
        let dtype = recipe.dtype.unwrap_or_else(|| base.storage_dtype());
        let layout = Self::new(&base.config, recipe, family.info.common_vocab, dtype)?;
        layout.check(|name| base.info(name).ok().map(|i| i.shape.clone()))?;
        Ok(layout)
    }

    /// The base cut to its first `depth` layers, with its own vocabulary, edges and tying:
    /// at full depth, what "parameters before" counts; at `k`, any `k`-layer output whose
    /// embeddings and head keep the base's tying (what `--dry-run` plans before a search).
    pub fn of_base(config: &ModelConfig, depth: usize, dtype: Dtype) -> Self {
        let base = crate::recipe::SourceModel::local("base", "base");
        let take = Rule::Take(base.name.clone());
        let layers = (0..depth.min(config.num_hidden_layers)).map(|from| LayerRule { from, rule: take.clone() }).collect();
        let recipe = Recipe::new(config.arch.model_type, config.num_hidden_layers, base, vec![], layers, crate::recipe::EdgePolicy::Base);
        Self::new(config, &recipe, config.vocab_size, dtype).expect("the base's own layers fit its config")
    }

    /// Check every planned shape against the tensors a source actually has (`shape_of`
    /// returns a source tensor's shape, if present).
    pub fn check(&self, shape_of: impl Fn(&str) -> Option<Vec<usize>>) -> Result<(), LayoutError> {
        for t in &self.tensors {
            let Some(mut found) = shape_of(&t.source) else {
                return Err(LayoutError::Mismatch(format!("the base has no tensor `{}` (needed for `{}`)", t.source, t.name)));
            };
            if let Some(r) = t.rows {
                if found.is_empty() || found[0] < r {
                    return Err(LayoutError::Mismatch(format!("`{}` has {:?}, fewer than the {r} vocabulary rows", t.source, found)));
                }
                found[0] = r;
            }
            if found != t.shape {
                return Err(LayoutError::Mismatch(format!("`{}` is {:?} in the base, but the config implies {:?}", t.source, found, t.shape)));
            }
        }
        Ok(())
    }

    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.nbytes() as u64).sum()
    }

    pub fn total_params(&self) -> u64 {
        self.tensors.iter().map(|t| t.numel() as u64).sum()
    }

    /// The output's `config.json`, from the base's.
    pub fn output_config(&self, base: &serde_json::Value, arch: &Arch) -> Result<serde_json::Value, LayoutError> {
        output_config(base, arch, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{EdgePolicy, SourceModel};
    use serde_json::json;

    fn config(tied: bool) -> ModelConfig {
        let raw = json!({"model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 3,
            "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 20, "tie_word_embeddings": tied});
        ModelConfig::from_value(raw, "t").unwrap()
    }

    fn src(name: &str) -> SourceModel {
        SourceModel::local(name, name)
    }

    fn recipe(first: &str, last: &str) -> Recipe {
        let layers = vec![LayerRule { from: 0, rule: Rule::Take(first.into()) }, LayerRule { from: 2, rule: Rule::Take(last.into()) }];
        Recipe::new("llama", 3, src("b"), vec![src("s")], layers, EdgePolicy::FollowLayers)
    }

    #[test]
    fn a_tied_base_stays_tied_when_embeddings_and_head_agree() {
        let l = Layout::new(&config(true), &recipe("s", "s"), 18, Dtype::F32).unwrap();
        assert!(l.tied);
        assert!(l.tensors.iter().all(|t| t.slot != Slot::OutputProjection));
        // 18 rows x 8 + 2 layers x (8*8 + 2*4*8 + 8*8 + 3*8*16 + 2*8) + final norm 8
        assert_eq!(l.total_params(), 18 * 8 + 2 * (64 + 64 + 64 + 384 + 16) + 8);
        assert!(l.notes.is_empty());
    }

    #[test]
    fn a_tied_base_is_untied_with_the_head_rules_embedding_matrix_when_they_differ() {
        let l = Layout::new(&config(true), &recipe("s", "b"), 18, Dtype::F32).unwrap();
        assert!(!l.tied);
        let e = edges(&config(true), &recipe("s", "b"), 18, Dtype::F32);
        let p = e.projection();
        assert_eq!((p.name.as_str(), p.source.as_str(), &p.rule), ("lm_head.weight", "model.embed_tokens.weight", &Rule::Take("b".into())));
        assert_eq!(e.embeddings.rule, Rule::Take("s".into()));
        assert_eq!(e.final_norm.rule, Rule::Take("b".into()));
        assert_eq!(l.tensors.last().unwrap(), p);
        assert_eq!(l.notes.len(), 1);
    }

    #[test]
    fn an_untied_base_projects_with_its_own_lm_head() {
        let e = edges(&config(false), &recipe("s", "b"), 18, Dtype::F32);
        assert_eq!(e.projection().source, "lm_head.weight");
        for tied in [false, true] {
            for depth in 1..=3 {
                assert_eq!(Layout::of_base(&config(tied), depth, Dtype::F32).total_params(), config(tied).total_params(depth));
            }
        }
    }
}
