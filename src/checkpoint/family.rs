//! A base and its fine-tuned siblings, checked against each other before anything runs.

use serde_json::Value;

use super::{Checkpoint, CheckpointError};

/// The base and its siblings, opened and checked compatible.
#[derive(Debug)]
pub struct Family {
    pub base: Checkpoint,
    pub siblings: Vec<Checkpoint>,
    /// Recipe names of the models, base first (`names[0]` is the base).
    pub names: Vec<String>,
    pub info: FamilyInfo,
}

/// What the compatibility check concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyInfo {
    /// Embedding rows every model has: the vocabulary the output keeps.
    pub common_vocab: usize,
    /// Human-readable warnings (e.g. vocabularies aligned by dropping padding rows).
    pub warnings: Vec<String>,
}

impl Family {
    /// Check `siblings` against `base` and bundle them under their recipe names.
    pub fn new(base: (String, Checkpoint), siblings: Vec<(String, Checkpoint)>) -> Result<Self, CheckpointError> {
        let mut names = vec![base.0];
        let mut models = Vec::with_capacity(siblings.len());
        for (n, c) in siblings {
            if names.contains(&n) {
                return Err(CheckpointError::Incompatible(format!("two models are both named `{n}`")));
            }
            names.push(n);
            models.push(c);
        }
        let info = check_family(&base.1, &models)?;
        Ok(Self { base: base.1, siblings: models, names, info })
    }

    /// The model a recipe calls `name`.
    pub fn get(&self, name: &str) -> Option<&Checkpoint> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(if i == 0 { &self.base } else { &self.siblings[i - 1] })
    }

    /// Open `base` and `siblings` as one checked family; `locate` maps a source to its
    /// local folder (a local path as is, a Hub id through the download cache, a pulled
    /// model to where the pull put it). Every command opens its models through here.
    pub fn open(
        base: &crate::recipe::SourceModel,
        siblings: &[crate::recipe::SourceModel],
        mut locate: impl FnMut(&crate::recipe::SourceModel) -> Result<std::path::PathBuf, CheckpointError>,
    ) -> Result<Self, CheckpointError> {
        let mut open = |m: &crate::recipe::SourceModel| -> Result<(String, Checkpoint), CheckpointError> {
            Ok((m.name.clone(), Checkpoint::open_named(&locate(m)?, &m.source.to_string())?))
        };
        let base = open(base)?;
        let siblings = siblings.iter().map(&mut open).collect::<Result<Vec<_>, _>>()?;
        Self::new(base, siblings)
    }

    /// Open every model a recipe names (see [`Family::open`]). Whether the recipe fits the
    /// family is the layout's one check (`Layout::for_family`), which the writer and the
    /// evaluator make before they use it.
    pub fn open_for_recipe(
        recipe: &crate::recipe::Recipe,
        locate: impl FnMut(&crate::recipe::SourceModel) -> Result<std::path::PathBuf, CheckpointError>,
    ) -> Result<Self, CheckpointError> {
        Self::open(&recipe.base, &recipe.siblings, locate)
    }

    pub fn base_name(&self) -> &str {
        &self.names[0]
    }

    /// All models, base first.
    pub fn models(&self) -> impl Iterator<Item = &Checkpoint> {
        std::iter::once(&self.base).chain(self.siblings.iter())
    }
}

/// Check that every sibling can be stitched with the base: same architecture and shapes,
/// same rope; vocabularies may differ only by padding rows, which are aligned to the
/// common rows with a warning.
pub fn check_family(base: &Checkpoint, siblings: &[Checkpoint]) -> Result<FamilyInfo, CheckpointError> {
    let b = &base.config;
    let mut warnings = Vec::new();
    let mut common_vocab = base.embedding_rows();
    for s in siblings {
        let c = &s.config;
        let mismatch = |field: &str, bv: String, sv: String| {
            CheckpointError::Incompatible(format!("{} and base {} differ in {field}: {sv} vs {bv}", s.name, base.name))
        };
        if c.arch.model_type != b.arch.model_type {
            return Err(mismatch("model_type", b.arch.model_type.into(), c.arch.model_type.into()));
        }
        let pairs: [(&str, usize, usize); 6] = [
            ("hidden_size", b.hidden_size, c.hidden_size),
            ("num_attention_heads", b.num_attention_heads, c.num_attention_heads),
            ("num_key_value_heads", b.num_key_value_heads, c.num_key_value_heads),
            ("head_dim", b.head_dim, c.head_dim),
            ("intermediate_size", b.intermediate_size, c.intermediate_size),
            ("num_hidden_layers", b.num_hidden_layers, c.num_hidden_layers),
        ];
        for (field, bv, sv) in pairs {
            if bv != sv {
                return Err(mismatch(field, bv.to_string(), sv.to_string()));
            }
        }
        if b.rope_theta != c.rope_theta {
            return Err(mismatch("rope_theta", b.rope_theta.to_string(), c.rope_theta.to_string()));
        }
        if b.rope_scaling != c.rope_scaling {
            let show = |r: &Option<crate::config::RopeScaling>| r.as_ref().map_or_else(|| "unset".to_string(), |r| format!("{r:?}"));
            return Err(mismatch("rope_scaling", show(&b.rope_scaling), show(&c.rope_scaling)));
        }
        // What the forward pass reads beyond the shapes: one value for the whole family.
        let opt = |v: Option<f64>| v.map_or_else(|| "unset".to_string(), |x| x.to_string());
        let floats = [
            ("query_pre_attn_scalar", b.query_pre_attn_scalar, c.query_pre_attn_scalar),
            ("attn_logit_softcapping", b.attn_logit_softcapping, c.attn_logit_softcapping),
            ("final_logit_softcapping", b.final_logit_softcapping, c.final_logit_softcapping),
            ("the sliding layers' rope base", b.rope_local_theta, c.rope_local_theta),
        ];
        for (field, bv, sv) in floats {
            if bv != sv {
                return Err(mismatch(field, opt(bv), opt(sv)));
            }
        }
        if b.sliding_window != c.sliding_window || b.layer_attention != c.layer_attention {
            let show = |x: &crate::config::ModelConfig| format!("window {:?}, layers {:?}", x.sliding_window, x.layer_attention);
            return Err(mismatch("sliding-window attention", show(b), show(c)));
        }
        if b.tie_word_embeddings != c.tie_word_embeddings {
            return Err(mismatch("tie_word_embeddings", b.tie_word_embeddings.to_string(), c.tie_word_embeddings.to_string()));
        }
        let (bv, sv) = (base.embedding_rows(), s.embedding_rows());
        if bv != sv {
            // Fine-tunes commonly add a pad token (32000 -> 32001) or pad to a multiple of 64.
            let diff = bv.abs_diff(sv);
            if diff > 256 {
                return Err(mismatch("vocabulary rows", bv.to_string(), sv.to_string()));
            }
            warnings.push(format!("{} has {sv} vocabulary rows and the base {bv}: using the {} rows they share", s.name, bv.min(sv)));
            common_vocab = common_vocab.min(sv);
        }
    }
    if common_vocab < base.embedding_rows() {
        // The output keeps the shared rows and the base's tokenizer: every id it can produce
        // must have a row, or the model breaks on that token (mergekit's silently truncated
        // embeddings).
        if let Some((id, token)) = highest_token_id(&base.dir) {
            if id >= common_vocab {
                let short = siblings.iter().min_by_key(|s| s.embedding_rows()).map(|s| s.name.as_str()).unwrap_or("a sibling");
                return Err(CheckpointError::Incompatible(format!(
                    "the base's tokenizer has token id {id} (`{token}`), but {short} has only {common_vocab} vocabulary rows: \
                     the tailored model would have no embedding for it; use siblings with at least {} rows",
                    id + 1
                )));
            }
        }
    }
    Ok(FamilyInfo { common_vocab, warnings })
}

/// The highest token id the tokenizer files in `dir` can produce, with its token: the
/// vocabulary and added tokens of tokenizer.json (read by the `tokenizers` crate, as the
/// evaluator reads it), and added_tokens.json. None when the folder has neither (e.g. only
/// a SentencePiece tokenizer.model).
fn highest_token_id(dir: &std::path::Path) -> Option<(usize, String)> {
    let mut ids: Vec<(usize, String)> = Vec::new();
    if let Some(t) = crate::fsutil::read_input(&dir.join("tokenizer.json"), crate::limits::MAX_TOKENIZER_BYTES)
        .ok()
        .and_then(|b| tokenizers::Tokenizer::from_bytes(b).ok())
    {
        ids.extend(t.get_vocab(true).into_iter().map(|(token, id)| (id as usize, token)));
    }
    let added = crate::fsutil::read_text_input(&dir.join("added_tokens.json"), crate::limits::MAX_CONFIG_BYTES as u64)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    if let Some(Value::Object(added)) = added {
        ids.extend(added.iter().filter_map(|(token, id)| Some((id.as_u64()? as usize, token.clone()))));
    }
    ids.into_iter().max_by_key(|(id, _)| *id)
}
