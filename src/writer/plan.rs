//! Which shard each tensor of the output layout lands in. The layout itself (names,
//! sources, rules, shapes, tying) is [`crate::layout`]'s; the writer only packs it.
//! Computed before a byte is written so the shard headers and the index are exact.

use crate::layout::Layout;

/// The whole output, in write order, grouped into shards.
#[derive(Debug, Clone)]
pub struct Plan {
    pub layout: Layout,
    /// `shards[i]` lists indices into `layout.tensors`, in write order.
    pub shards: Vec<Vec<usize>>,
}

impl Plan {
    /// Pack the output `layout` (the recipe's, checked against the family) into shards of at most `shard_size`
    /// bytes (a single tensor larger than that gets a shard of its own).
    pub fn new(layout: Layout, shard_size: u64) -> Self {
        let sizes: Vec<u64> = layout.tensors.iter().map(|t| t.nbytes() as u64).collect();
        let shards = assign_shards(&sizes, shard_size);
        Self { layout, shards }
    }

    /// Output file name of shard `i`, as transformers names them.
    pub fn shard_file(&self, i: usize) -> String {
        format!("model-{:05}-of-{:05}.safetensors", i + 1, self.shards.len())
    }
}

/// Greedy packing in write order, as `transformers.save_pretrained` does.
fn assign_shards(sizes: &[u64], shard_size: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = vec![vec![]];
    let mut size = 0u64;
    for (i, &n) in sizes.iter().enumerate() {
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

    #[test]
    fn packs_greedily_and_isolates_oversized_tensors() {
        let sizes = [40, 40, 400, 20, 20];
        // 40 + 40 bytes fit in 100; the 400-byte tensor goes alone; the last two share.
        assert_eq!(assign_shards(&sizes, 100), vec![vec![0, 1], vec![2], vec![3, 4]]);
        assert_eq!(assign_shards(&sizes, 10_000), vec![vec![0, 1, 2, 3, 4]]);
    }
}
