//! Single-model depth pruning of the base, run on the same data and scored on the same tasks
//! as the search, so users see what stitching siblings adds:
//!
//! - **ShortGPT** (Men et al. 2024): Block Influence of layer i = 1 − cos(input of i, output
//!   of i); drop the layers with the lowest influence.
//! - **Angular distance** (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the
//!   Deeper Layers"): for the block size n to drop, the contiguous block [ℓ, ℓ+n) whose input
//!   and output are closest in angle, arccos(cos)/π, is dropped. (The paper uses the last
//!   token's hidden state; the scorer averages cosines over every token.)
//! - **SLEB** (Song et al. 2024): greedily drop the layer whose removal leaves the lowest
//!   calibration perplexity, re-measuring after each removal.
//!
//! Each yields a base-only [`Recipe`] of the target depth.

use serde::{Deserialize, Serialize};

use crate::recipe::Recipe;
use crate::score::Scorer;

use super::space::SearchSpace;
use super::SearchError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineKind {
    Shortgpt,
    Angular,
    Sleb,
}

impl BaselineKind {
    pub const ALL: [BaselineKind; 3] = [BaselineKind::Shortgpt, BaselineKind::Angular, BaselineKind::Sleb];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "shortgpt" => Some(Self::Shortgpt),
            "angular" => Some(Self::Angular),
            "sleb" => Some(Self::Sleb),
            _ => None,
        }
    }
    /// Display name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Shortgpt => "ShortGPT",
            Self::Angular => "Angular distance",
            Self::Sleb => "SLEB",
        }
    }
    /// Display name of the baseline's cut healed against the base (see [`crate::heal`]).
    pub fn healed_label(self) -> &'static str {
        match self {
            Self::Shortgpt => "ShortGPT + heal",
            Self::Angular => "ReplaceMe (angular + heal)",
            Self::Sleb => "SLEB + heal",
        }
    }
    /// File-name stem (`shortgpt.yaml`).
    pub fn stem(self) -> &'static str {
        match self {
            Self::Shortgpt => "shortgpt",
            Self::Angular => "angular",
            Self::Sleb => "sleb",
        }
    }
}

/// A baseline's pruned base and the criterion behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub kind: BaselineKind,
    pub removed: Vec<usize>,
    /// Per-layer (ShortGPT: block influence; angular: distance of the block starting at ℓ)
    /// or per-step (SLEB: perplexity after each removal) criterion values.
    pub criterion: Vec<f64>,
    pub recipe: Recipe,
}

fn score_err<E: std::error::Error + Send + Sync + 'static>(what: &str) -> impl FnOnce(E) -> SearchError + '_ {
    move |e| SearchError::Score { what: what.into(), source: Box::new(e) }
}

/// Run one baseline for `space`'s depth on calibration `texts`.
pub fn run_baseline<S: Scorer>(kind: BaselineKind, space: &SearchSpace, scorer: &mut S, texts: &[String]) -> Result<Baseline, SearchError> {
    Ok(run_baseline_depths(kind, &space.at_depth(space.keep), scorer, texts)?.pop().expect("one depth"))
}

/// Run one baseline for every depth of `space` at once (smallest depth first): ShortGPT
/// and angular distance from one pass of block scores, SLEB's greedy removal order read
/// at every depth it passes.
pub fn run_baseline_depths<S: Scorer>(
    kind: BaselineKind,
    space: &SearchSpace,
    scorer: &mut S,
    texts: &[String],
) -> Result<Vec<Baseline>, SearchError> {
    if texts.is_empty() {
        return Err(SearchError::Space("baselines need calibration text".into()));
    }
    let l = space.source_layers();
    let full = space.to_recipe(&space.base_only(&(0..l).collect::<Vec<_>>()));
    let drops: Vec<usize> = space.depths().map(|k| l - k).collect();
    let per_depth: Vec<(Vec<usize>, Vec<f64>)> = match kind {
        BaselineKind::Shortgpt => {
            let cos = scorer.boundary_cosines(&full, texts).map_err(score_err("ShortGPT's hidden states"))?;
            check_matrix(&cos, l)?;
            let influence: Vec<f64> = (0..l).map(|i| 1.0 - cos[i][i + 1]).collect();
            let mut order: Vec<usize> = (0..l).collect();
            order.sort_by(|a, b| influence[*a].total_cmp(&influence[*b]).then(a.cmp(b)));
            drops
                .iter()
                .map(|&drop| {
                    let mut removed: Vec<usize> = order.iter().copied().take(drop).collect();
                    removed.sort_unstable();
                    (removed, influence.clone())
                })
                .collect()
        }
        BaselineKind::Angular => {
            let cos = scorer.boundary_cosines(&full, texts).map_err(score_err("angular distance's hidden states"))?;
            check_matrix(&cos, l)?;
            drops
                .iter()
                .map(|&drop| {
                    let dist: Vec<f64> = (0..=l - drop).map(|s| cos[s][s + drop].clamp(-1.0, 1.0).acos() / std::f64::consts::PI).collect();
                    let start = (0..dist.len()).min_by(|a, b| dist[*a].total_cmp(&dist[*b]).then(a.cmp(b))).expect("at least one block");
                    ((start..start + drop).collect(), dist)
                })
                .collect()
        }
        BaselineKind::Sleb => {
            let most = drops.iter().copied().max().unwrap_or(0);
            let mut kept: Vec<usize> = (0..l).collect();
            let mut removed = Vec::new();
            let mut steps = Vec::new();
            let mut at: std::collections::BTreeMap<usize, (Vec<usize>, Vec<f64>)> = std::collections::BTreeMap::new();
            if drops.contains(&0) {
                at.insert(0, (Vec::new(), Vec::new()));
            }
            for _ in 0..most {
                let mut best: Option<(f64, usize)> = None;
                for (pos, _) in kept.iter().enumerate() {
                    let mut trial = kept.clone();
                    trial.remove(pos);
                    let r = space.to_recipe(&space.base_only(&trial));
                    let ppl = scorer.perplexity(&r, texts).map_err(score_err("SLEB's perplexity"))?;
                    if best.is_none_or(|(b, _)| ppl < b) {
                        best = Some((ppl, pos));
                    }
                }
                let (ppl, pos) = best.expect("kept is never empty while dropping");
                removed.push(kept.remove(pos));
                steps.push(ppl);
                if drops.contains(&removed.len()) {
                    let mut r = removed.clone();
                    r.sort_unstable();
                    at.insert(removed.len(), (r, steps.clone()));
                }
            }
            drops.iter().map(|d| at[d].clone()).collect()
        }
    };
    Ok(per_depth
        .into_iter()
        .map(|(removed, criterion)| {
            let kept: Vec<usize> = (0..l).filter(|i| !removed.contains(i)).collect();
            Baseline { kind, removed, criterion, recipe: space.to_recipe(&space.base_only(&kept)) }
        })
        .collect())
}

fn check_matrix(cos: &[Vec<f64>], l: usize) -> Result<(), SearchError> {
    if cos.len() != l + 1 || cos.iter().any(|r| r.len() != l + 1) {
        return Err(SearchError::Space(format!("the scorer returned a {}-row cosine matrix for {l} layers (expected {})", cos.len(), l + 1)));
    }
    Ok(())
}
