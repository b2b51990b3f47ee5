//! The heal (ReplaceMe, arXiv 2505.02819): for each gap of a candidate — source layers
//! `from + 1 .. until` removed after a kept layer `from` — a d × d map T fitted by least
//! squares so that `M T + y ≈ h`, where M is the kept layer's MLP (down_proj) output, y the
//! rest of its output, and h the hidden state a full-depth teacher has entering source
//! layer `until`. Since `M = x W_downᵀ`, the map fuses exactly: `W_down ← Tᵀ W_down`, so a
//! healed model is an ordinary checkpoint with no extra parameter.
//!
//! This module holds the arithmetic (the solve, the fusion), the gaps of a recipe, the
//! teacher's recipe and the maps file; the evaluator accumulates the Gram matrices
//! ([`crate::eval::Evaluator::fit_heal`]), the writer and the evaluator both fuse with
//! [`fuse`].

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use sha2::Digest;

use crate::merge::Merge;
use crate::recipe::{LayerRule, Recipe, Rule, Teacher};

/// Default ridge factor: α = 1e-3 · trace(MᵀM)/d, i.e. a thousandth of the mean eigenvalue.
/// ReplaceMe uses α = 0; a small ridge keeps the solve well posed when the calibration set
/// has fewer tokens than d or M is nearly rank-deficient, at a negligible cost in fit
/// (the bench family's M has eigenvalues spread over several decades; 1e-3 of the mean
/// lifts only the bottom of the spectrum).
pub const DEFAULT_RIDGE: f64 = 1e-3;

/// Default calibration tokens of a heal that is written: 16384. The system has d unknowns
/// per output column, so the fit wants many times d tokens: 16384 is 28× d for SmolLM2-135M
/// (d = 576; on the bench family it lowers the held-out perplexity of the same healed cut
/// from 82.0 at 4096 tokens to 71.5) and 4× d at d = 4096 (7B). The ridge keeps smaller
/// sets solvable.
pub const DEFAULT_TOKENS: usize = 16384;

/// Default calibration tokens of each trial's fit under `--heal search` (at most
/// `--heal-tokens`): the fit is a search trial's fidelity, and 4096 keeps a healed trial
/// under 2× an unhealed one on the bench family (and two teachers' cached states under
/// [`crate::eval`]'s bound). The chosen candidate is fitted again on `--heal-tokens`.
pub const DEFAULT_SEARCH_TOKENS: usize = 4096;

/// The maps file written beside a healed recipe.
pub const MAPS_FILE: &str = "heal.safetensors";

/// Largest maps file read (a map per layer of a 4096-layer model would not fit anyway).
const MAX_MAPS_BYTES: u64 = 64 << 30;

#[derive(Debug, thiserror::Error)]
pub enum HealError {
    #[error("heal: the least-squares system of the gap after source layer {from} is not positive definite (its MLP output is zero or degenerate on the calibration tokens); raise --heal-ridge or use more calibration text")]
    NotPositiveDefinite { from: usize },
    #[error("heal: {0} puts a norm on the MLP branch (post-feedforward norm), so a fitted map cannot fuse into down_proj exactly; healing is not supported for it")]
    Unsupported(String),
    #[error("heal: {0}")]
    Input(String),
    #[error("heal maps file {path}: {message}")]
    Maps { path: String, message: String },
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// One gap of a candidate: output layer `layer` (source `from`) is followed by removed
/// source layers up to `until` (the next kept source layer, or the source depth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub layer: usize,
    pub from: usize,
    pub until: usize,
}

/// The gaps of `recipe` that can be healed, left to right, and the source layers removed
/// before the first kept one (no layer precedes them: they stay unhealed).
pub fn gaps(recipe: &Recipe) -> (Vec<Gap>, Vec<usize>) {
    let leading: Vec<usize> = (0..recipe.layers.first().map(|l| l.from).unwrap_or(0)).collect();
    let mut out = Vec::new();
    for (i, l) in recipe.layers.iter().enumerate() {
        let next = recipe.layers.get(i + 1).map(|n| n.from).unwrap_or(recipe.source_layers);
        if next > l.from + 1 {
            out.push(Gap { layer: i, from: l.from, until: next });
        }
    }
    (out, leading)
}

/// Refuse architectures where the map would not fuse exactly (one line, exit 2).
pub fn check_arch(recipe: &Recipe) -> Result<(), HealError> {
    match crate::arch::Arch::for_model_type(&recipe.architecture) {
        Some(a) if a.flavor.mlp_joins_residual => Ok(()),
        _ => Err(HealError::Unsupported(recipe.architecture.clone())),
    }
}

/// The full-depth recipe of a teacher over `recipe`'s family (its sources, every source layer).
pub fn teacher_recipe(recipe: &Recipe, teacher: &Teacher) -> Result<Recipe, HealError> {
    let whole = |name: &str| Recipe::whole_model(name, &recipe.architecture, recipe.source_layers, recipe.base.clone(), recipe.siblings.clone());
    let mut r = match teacher {
        Teacher::Base => whole(&recipe.base.name),
        Teacher::Sibling(n) if recipe.siblings.iter().any(|s| &s.name == n) => whole(n),
        Teacher::Sibling(n) => return Err(HealError::Input(format!("teacher `{n}` is not a sibling of the recipe"))),
        Teacher::Average => match recipe.siblings.len() {
            0 => return Err(HealError::Input("teacher `average` needs at least one sibling".into())),
            1 => whole(&recipe.siblings[0].name),
            n => {
                let merge = Merge::TaskArithmetic { models: recipe.siblings.iter().map(|s| s.name.clone()).collect(), lambda: 1.0 / n as f64 };
                let layers = (0..recipe.source_layers).map(|from| LayerRule { from, rule: Rule::Merge(merge.clone()) }).collect();
                Recipe::new(
                    &recipe.architecture,
                    recipe.source_layers,
                    recipe.base.clone(),
                    recipe.siblings.clone(),
                    layers,
                    crate::recipe::EdgePolicy::FollowLayers,
                )
            }
        },
    };
    r.dtype = recipe.dtype;
    Ok(r)
}

/// Solve `(G + αI) T = C` for T (d × d, row-major, f64) with α = `ridge` · trace(G)/d, by
/// Cholesky. `G = MᵀM` and `C = Mᵀ(h − y)` as accumulated. Refuses a system that is not
/// positive definite.
pub fn solve(g: &[f64], c: &[f64], d: usize, ridge: f64, from: usize) -> Result<Vec<f64>, HealError> {
    assert_eq!(g.len(), d * d, "G is d × d");
    assert_eq!(c.len(), d * d, "C is d × d");
    let trace: f64 = (0..d).map(|i| g[i * d + i]).sum();
    let alpha = ridge * trace / d as f64;
    // Lower-triangular L with A = L Lᵀ.
    let mut l = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let row = |r: usize| &l[r * d..r * d + j];
            let s = g[i * d + j] + if i == j { alpha } else { 0.0 } - row(i).iter().zip(row(j)).map(|(x, y)| x * y).sum::<f64>();
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return Err(HealError::NotPositiveDefinite { from });
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    // Each column of C is one right-hand side: forward (L z = c) then backward (Lᵀ t = z)
    // substitution, with contiguous dot products (Lᵀ kept row-major too), columns spread
    // over the host's threads (d³ flops per triangle: minutes single-threaded at d = 4096).
    let mut lt = vec![0f64; d * d];
    for i in 0..d {
        for k in 0..=i {
            lt[k * d + i] = l[i * d + k];
        }
    }
    let mut cols = vec![0f64; d * d];
    for i in 0..d {
        for col in 0..d {
            cols[col * d + i] = c[i * d + col];
        }
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let solve_column = |v: &mut [f64]| {
        for i in 0..d {
            v[i] = (v[i] - dot(&l[i * d..i * d + i], &v[..i])) / l[i * d + i];
        }
        for i in (0..d).rev() {
            v[i] = (v[i] - dot(&lt[i * d + i + 1..(i + 1) * d], &v[i + 1..])) / l[i * d + i];
        }
    };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(d.max(1));
    let per = d.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for chunk in cols.chunks_mut(per * d) {
            let solve_column = &solve_column;
            scope.spawn(move || chunk.chunks_mut(d).for_each(solve_column));
        }
    });
    let mut t = vec![0f64; d * d];
    for col in 0..d {
        for i in 0..d {
            t[i * d + col] = cols[col * d + i];
        }
    }
    if t.iter().any(|x| !x.is_finite()) {
        return Err(HealError::NotPositiveDefinite { from });
    }
    Ok(t)
}

/// The fused down_proj, `Tᵀ W_down`, in f32: `down` is W_down as stored ([d, ffn], out ×
/// in), `map` is T ([d, d], row-major). The one definition the writer and the evaluator
/// both use (on the host, so both get the same bytes).
pub fn fuse(down: &[f32], shape: &[usize], map: &[f32]) -> Result<Vec<f32>, HealError> {
    let bad = |m: String| HealError::Input(m);
    let [d, ffn] = shape else { return Err(bad(format!("down_proj has shape {shape:?}, not [d, ffn]"))) };
    if map.len() != d * d || down.len() != d * ffn {
        return Err(bad(format!("a {d} × {d} map does not fit down_proj {shape:?}")));
    }
    let e = |e: candle_core::Error| bad(format!("fusing the map: {e}"));
    let t = Tensor::from_slice(map, (*d, *d), &Device::Cpu).map_err(e)?;
    let w = Tensor::from_slice(down, (*d, *ffn), &Device::Cpu).map_err(e)?;
    t.t().and_then(|tt| tt.contiguous()).and_then(|tt| tt.matmul(&w)).and_then(|x| x.flatten_all()).and_then(|x| x.to_vec1::<f32>()).map_err(e)
}

/// The maps file's tensor for the map fused into output layer `layer`.
/// Calibration texts from several sources (tasks, files) taken in turn, one of each source
/// then the next of each: a token budget cut from the front then draws on every domain, not
/// on the first source alone.
pub fn interleave(sources: Vec<Vec<String>>) -> Vec<String> {
    let longest = sources.iter().map(Vec::len).max().unwrap_or(0);
    let mut iters: Vec<_> = sources.into_iter().map(Vec::into_iter).collect();
    (0..longest).flat_map(|_| iters.iter_mut().filter_map(Iterator::next).collect::<Vec<_>>()).collect()
}

pub fn map_name(layer: usize) -> String {
    format!("model.layers.{layer}.mlp.down_proj.heal")
}

/// sha256 of a map's f32 little-endian bytes.
pub fn map_sha256(map: &[f32]) -> String {
    hex::encode(sha2::Sha256::digest(bytemuck::cast_slice::<f32, u8>(map)))
}

/// sha256 of calibration token ids (each sequence: its length as u64, then its ids as u32, little-endian).
pub fn tokens_sha256(seqs: &[Vec<u32>]) -> String {
    let mut h = sha2::Sha256::new();
    for s in seqs {
        h.update((s.len() as u64).to_le_bytes());
        s.iter().for_each(|t| h.update(t.to_le_bytes()));
    }
    hex::encode(h.finalize())
}

/// Fitted maps by tensor name (each d × d, f32, row-major).
pub type Maps = BTreeMap<String, Vec<f32>>;

/// Write `maps` as one safetensors file (f32, [d, d] each); returns the file's sha256.
pub fn write_maps(path: &Path, maps: &Maps, d: usize) -> Result<String, HealError> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = maps
        .iter()
        .map(|(n, v)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![d, d], bytemuck::cast_slice(v))
                .map_err(|e| HealError::Maps { path: path.display().to_string(), message: e.to_string() })?;
            Ok((n.clone(), view))
        })
        .collect::<Result<_, HealError>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| HealError::Maps { path: path.display().to_string(), message: e.to_string() })?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|source| HealError::Io { path: path.display().to_string(), source })?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// Read the maps `heal` names from its file, checking the file's sha256, each map's shape
/// (d × d) and each map's own sha256.
pub fn read_maps(heal: &crate::recipe::Heal, d: usize) -> Result<Maps, HealError> {
    if heal.is_request() {
        return Err(HealError::Input("the recipe asks for a heal that was never fitted; fit it with `hf-tailor heal`".into()));
    }
    let path = heal.file.display().to_string();
    let bad = |message: String| HealError::Maps { path: path.clone(), message };
    let bytes = crate::fsutil::read_input(&heal.file, MAX_MAPS_BYTES).map_err(|e| bad(e.to_string()))?;
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    if sha != heal.sha256 {
        return Err(bad(format!("sha256 is {sha}, but the recipe names {} (a changed or foreign file)", heal.sha256)));
    }
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut maps = Maps::new();
    for g in &heal.gaps {
        let t = st.tensor(&g.map).map_err(|_| bad(format!("has no tensor `{}`", g.map)))?;
        if t.dtype() != safetensors::Dtype::F32 || t.shape() != [d, d] {
            return Err(bad(format!("`{}` is {:?} {:?}, expected F32 [{d}, {d}]", g.map, t.dtype(), t.shape())));
        }
        let v: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if map_sha256(&v) != g.sha256 {
            return Err(bad(format!("`{}` does not match the sha256 the recipe names for it", g.map)));
        }
        maps.insert(g.map.clone(), v);
    }
    Ok(maps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Cholesky solve reproduces a known solution, ridge off.
    #[test]
    fn solve_recovers_a_known_map() {
        let d = 3;
        // M (5 × 3), T known; C = MᵀM T.
        let m = [1.0, 0.5, -0.2, 0.3, 2.0, 0.1, -1.0, 0.4, 1.5, 0.7, -0.3, 0.2, 0.0, 1.1, -0.6];
        let t = [0.9, 0.1, 0.0, -0.2, 1.1, 0.3, 0.05, 0.0, 0.8];
        let mut g = vec![0f64; 9];
        for r in 0..5 {
            for i in 0..d {
                for j in 0..d {
                    g[i * d + j] += m[r * d + i] * m[r * d + j];
                }
            }
        }
        let mut c = vec![0f64; 9];
        for i in 0..d {
            for j in 0..d {
                c[i * d + j] = (0..d).map(|k| g[i * d + k] * t[k * d + j]).sum();
            }
        }
        let got = solve(&g, &c, d, 0.0, 0).unwrap();
        for (a, b) in got.iter().zip(t) {
            assert!((a - b).abs() < 1e-10, "{got:?}");
        }
        assert!(matches!(solve(&[0.0; 9], &c, d, 1e-3, 4), Err(HealError::NotPositiveDefinite { from: 4 })));
    }

    /// Gemma's post-feedforward norm sits on the MLP branch: refused with one line; Llama-like
    /// families fuse exactly; a leading gap is reported, not fitted.
    #[test]
    fn gaps_and_architectures() {
        let src = |n: &str| crate::recipe::SourceModel::hub(n, &format!("org/{n}"), None);
        let layers = [1, 2, 5].iter().map(|&from| LayerRule { from, rule: Rule::Take("b".into()) }).collect();
        let mut r = Recipe::new("llama", 7, src("b"), vec![], layers, crate::recipe::EdgePolicy::FollowLayers);
        assert!(check_arch(&r).is_ok());
        let (g, leading) = gaps(&r);
        assert_eq!(leading, vec![0]);
        assert_eq!(g, vec![Gap { layer: 1, from: 2, until: 5 }, Gap { layer: 2, from: 5, until: 7 }]);
        for gemma in ["gemma2", "gemma3_text"] {
            r.architecture = gemma.into();
            let e = check_arch(&r).unwrap_err().to_string();
            assert!(e.contains("post-feedforward norm") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn calibration_sources_are_taken_in_turn() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(interleave(vec![v(&["a1", "a2", "a3"]), v(&["b1"]), v(&["c1", "c2"])]), v(&["a1", "b1", "c1", "a2", "c2", "a3"]));
        assert!(interleave(vec![]).is_empty());
    }

    #[test]
    fn fusion_is_the_transposed_map_times_down_proj() {
        let down = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // [2, 3]
        let map = [0.0f32, 1.0, 2.0, 0.5]; // T
        let f = fuse(&down, &[2, 3], &map).unwrap();
        // Tᵀ = [[0, 2], [1, 0.5]]
        assert_eq!(f, vec![8.0, 10.0, 12.0, 3.0, 4.5, 6.0]);
    }
}
