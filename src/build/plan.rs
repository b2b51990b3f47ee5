//! What the output checkpoint contains: every tensor's output name, where it comes from
//! (source tensor + recipe rule), its shape and dtype, and which shard it lands in.
//! Computed before a byte is written so the shard headers and the index are exact.

use crate::checkpoint::Family;
use crate::dtype::Dtype;
use crate::recipe::{Recipe, Rule};

use super::BuildError;

/// One tensor of the output.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// Name in the output (layers renumbered `0..k-1`).
    pub name: String,
    /// Name of the tensor it is made from in the source models.
    pub source: String,
    pub rule: Rule,
    /// Keep only the first rows (vocabulary alignment of embeddings and lm_head).
    pub rows: Option<usize>,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
}

impl PlannedTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

/// The whole output, in write order, grouped into shards.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tensors: Vec<PlannedTensor>,
    /// `shards[i]` lists indices into `tensors`, in write order.
    pub shards: Vec<Vec<usize>>,
    pub dtype: Dtype,
    /// Output vocabulary rows (the family's common rows).
    pub vocab: usize,
    /// Whether the output ties lm_head to the embeddings (no `lm_head.weight` written).
    pub tied: bool,
    /// Human-readable decisions worth reporting (e.g. embeddings untied).
    pub notes: Vec<String>,
}

impl Plan {
    /// Lay out the output of `recipe` over `family`, with shards of at most `shard_size`
    /// bytes (a single tensor larger than that gets a shard of its own).
    pub fn new(family: &Family, recipe: &Recipe, shard_size: u64) -> Result<Self, BuildError> {
        let base = &family.base;
        let arch = base.arch();
        let dtype = recipe.dtype.unwrap_or_else(|| base.storage_dtype());
        let vocab = family.info.common_vocab;
        let mut notes = Vec::new();
        let mut tensors = Vec::new();
        let mut push = |name: String, source: &str, rule: &Rule, rows: Option<usize>| -> Result<(), BuildError> {
            let mut shape = base.info(source)?.shape.clone();
            if let Some(r) = rows {
                shape[0] = shape[0].min(r);
            }
            tensors.push(PlannedTensor { name, source: source.into(), rule: rule.clone(), rows, shape, dtype });
            Ok(())
        };

        push(arch.embed.into(), arch.embed, &recipe.embeddings, Some(vocab))?;
        for (out_idx, layer) in recipe.layers.iter().enumerate() {
            for t in arch.layer_tensors {
                let source = arch.layer_tensor_name(layer.from, t.suffix);
                push(arch.layer_tensor_name(out_idx, t.suffix), &source, &layer.rule, None)?;
            }
        }
        push(arch.final_norm.into(), arch.final_norm, &recipe.head, None)?;

        // A tied base has no lm_head: each model's output projection *is* its embedding matrix.
        // When the recipe takes embeddings and head from different rules, one matrix cannot be
        // both, so the output is untied and lm_head is the head rule applied to the embeddings.
        let tied = if base.config.tie_word_embeddings {
            if recipe.embeddings == recipe.head {
                true
            } else {
                notes.push(format!(
                    "the base ties lm_head to the embeddings, but the recipe takes embeddings from `{}` and the head from `{}`: \
                     the output is untied and lm_head.weight is `{}`'s embedding matrix",
                    recipe.embeddings.label(),
                    recipe.head.label(),
                    recipe.head.label()
                ));
                push(arch.lm_head.into(), arch.embed, &recipe.head, Some(vocab))?;
                false
            }
        } else {
            push(arch.lm_head.into(), arch.lm_head, &recipe.head, Some(vocab))?;
            false
        };

        let shards = assign_shards(&tensors, shard_size);
        Ok(Self { tensors, shards, dtype, vocab, tied, notes })
    }

    /// Output file name of shard `i`, as transformers names them.
    pub fn shard_file(&self, i: usize) -> String {
        format!("model-{:05}-of-{:05}.safetensors", i + 1, self.shards.len())
    }

    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.nbytes() as u64).sum()
    }

    pub fn total_params(&self) -> u64 {
        self.tensors.iter().map(|t| t.numel() as u64).sum()
    }
}

/// Greedy packing in write order, as `transformers.save_pretrained` does.
fn assign_shards(tensors: &[PlannedTensor], shard_size: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = vec![vec![]];
    let mut size = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let n = t.nbytes() as u64;
        if size > 0 && size + n > shard_size {
            shards.push(vec![]);
            size = 0;
        }
        size += n;
        shards.last_mut().expect("at least one shard").push(i);
    }
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: usize) -> PlannedTensor {
        PlannedTensor { name: String::new(), source: String::new(), rule: Rule::Take("b".into()), rows: None, shape: vec![n], dtype: Dtype::F32 }
    }

    #[test]
    fn packs_greedily_and_isolates_oversized_tensors() {
        let ts = vec![t(10), t(10), t(100), t(5), t(5)];
        // 40 + 40 bytes fit in 100; the 400-byte tensor goes alone; the last two share.
        assert_eq!(assign_shards(&ts, 100), vec![vec![0, 1], vec![2], vec![3, 4]]);
        assert_eq!(assign_shards(&ts, 10_000), vec![vec![0, 1, 2, 3, 4]]);
    }
}
