//! A synthetic [`Scorer`] whose optimum is known in closed form, for testing and
//! benchmarking the optimisers without a model (like `crate::testkit::fixture` for checkpoints).
//!
//! Each source layer ℓ has an importance `w_ℓ` (a few layers are nearly redundant), and
//! each sibling j improves its own task on a few layers (`a[t][ℓ][j] > 0`) while slightly
//! hurting the others. A kept layer with sibling subset S scores, for task t,
//!
//! - `0` for the base's layer, `a[t][ℓ][j]` for sibling j's layer,
//! - `λ Σ_{j∈S} a[t][ℓ][j] − c_ℓ λ² (|S| − 1)` for a merge (interference grows with λ),
//!
//! and task t's accuracy is an affine map of `Σ_{kept ℓ} (w_ℓ + value_t(ℓ))` onto
//! [0.2, 0.95] (the bounds of the map do not depend on the candidate). The mean accuracy is
//! therefore a sum of per-layer terms: the best choice per layer is found in closed form
//! (λ* of a concave quadratic, on the search's 1e-3 grid), and the optimum keeps the k
//! layers whose best terms are largest. Below the full budget, scores carry deterministic
//! binomial-like noise of standard deviation `sqrt(p(1−p)(1/b − 1/B))`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::recipe::Recipe;
use crate::score::{Estimate, Items, Measures, Metric, Scorer, TaskMeasures, TaskScores};

use crate::merge::Method;
use crate::search::space::{Candidate, Choice, SearchSpace};

/// The noise salt of [`Items::Validation`] (any value no selection split's seed uses).
const VALIDATION_SALT: u64 = 0x5e1e_c7ed;

#[derive(Debug, thiserror::Error)]
#[error("synthetic scorer: {0}")]
pub struct SyntheticError(String);

/// The synthetic objective over one search space.
#[derive(Debug, Clone)]
pub struct SyntheticScorer {
    space: SearchSpace,
    tasks: Vec<String>,
    full_budget: usize,
    importance: Vec<f64>,
    /// gains[t][ℓ][j]
    gains: Vec<Vec<Vec<f64>>>,
    interference: Vec<f64>,
    /// Affine map of each task's sum onto accuracy: (lo, hi).
    bounds: Vec<(f64, f64)>,
    /// Number of `score` calls (tests check the search does not over-spend).
    pub calls: usize,
}

impl SyntheticScorer {
    /// A random instance for `space` (task-arithmetic merges only) with `tasks` tasks;
    /// `full_budget` is the budget at which scores are exact.
    pub fn new(space: &SearchSpace, tasks: usize, full_budget: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (l, k) = (space.source_layers(), space.siblings());
        let redundant = l - space.keep;
        let mut importance: Vec<f64> = (0..l).map(|_| 0.6 + 0.8 * rng.random::<f64>()).collect();
        // Some layers are nearly redundant, but not all of the ones the depth must drop.
        for _ in 0..redundant.saturating_sub(1).max(1) {
            if l >= 3 {
                let i = rng.random_range(1..l - 1);
                importance[i] = 0.05 * rng.random::<f64>();
            }
        }
        let gains = (0..tasks)
            .map(|t| {
                (0..l)
                    .map(|_| {
                        (0..k)
                            .map(|j| {
                                let specialist = j % tasks == t;
                                let active = rng.random::<f64>() < 0.35;
                                match (specialist, active) {
                                    (true, true) => 0.3 + 0.7 * rng.random::<f64>(),
                                    (false, true) => -0.2 * rng.random::<f64>(),
                                    _ => 0.02 * (rng.random::<f64>() - 0.5),
                                }
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let interference = (0..l).map(|_| 0.1 + 0.5 * rng.random::<f64>()).collect();
        let mut s = Self {
            space: space.clone(),
            tasks: (0..tasks).map(|t| format!("task{t}")).collect(),
            full_budget,
            importance,
            gains,
            interference,
            bounds: Vec::new(),
            calls: 0,
        };
        s.bounds = (0..tasks).map(|t| s.task_bounds(t)).collect();
        s
    }

    fn value(&self, t: usize, layer: usize, ch: &Choice) -> f64 {
        let members: Vec<usize> = (0..self.space.siblings()).filter(|j| (ch.subset >> j) & 1 == 1).collect();
        let a: f64 = members.iter().map(|&j| self.gains[t][layer][j]).sum();
        match members.len() {
            0 => 0.0,
            1 => a,
            n => ch.lambda * a - self.interference[layer] * ch.lambda * ch.lambda * (n - 1) as f64,
        }
    }

    fn layer_term(&self, t: usize, layer: usize, ch: &Choice) -> f64 {
        self.importance[layer] + self.value(t, layer, ch)
    }

    /// Extreme per-task values of a layer over every choice (merges at λ ∈ {0, 1, λ*}).
    fn task_extremes(&self, t: usize, layer: usize) -> (f64, f64) {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for subset in 0..(1u32 << self.space.siblings()) {
            for ch in self.candidate_choices(subset, |ch| self.value(t, layer, ch)) {
                let v = self.layer_term(t, layer, &ch);
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        (lo, hi)
    }

    /// Choices worth checking for a subset: λ at both ends and at the objective's vertex.
    fn candidate_choices(&self, subset: u32, f: impl Fn(&Choice) -> f64) -> Vec<Choice> {
        let tm = Method::TaskArithmetic;
        if subset.count_ones() < 2 {
            return vec![Choice::new(subset, 0.0, tm)];
        }
        // f(λ) = f(0) + αλ − βλ²: recover α, β from three points; the grid point nearest
        // the vertex of a concave quadratic is the best grid point.
        let f0 = f(&Choice::new(subset, 0.0, tm));
        let g1 = f(&Choice::new(subset, 1.0, tm)) - f0;
        let gh = f(&Choice::new(subset, 0.5, tm)) - f0;
        let beta = 4.0 * gh - 2.0 * g1;
        let alpha = g1 + beta;
        let vertex = if beta > 0.0 { (alpha / (2.0 * beta)).clamp(0.0, 1.0) } else { 0.0 };
        vec![Choice::new(subset, 0.0, tm), Choice::new(subset, 1.0, tm), Choice::new(subset, vertex, tm)]
    }

    fn task_bounds(&self, t: usize) -> (f64, f64) {
        let mut ext: Vec<(f64, f64)> = (0..self.space.source_layers()).map(|l| self.task_extremes(t, l)).collect();
        // A front's space: the lowest sum of its shallowest models, the highest of its
        // deepest, so every depth maps into [0.2, 0.95].
        let (k, extra) = (self.space.keep, self.space.keep_max - self.space.keep);
        ext.sort_by(|a, b| a.0.total_cmp(&b.0));
        let lo: f64 = ext.iter().take(k).map(|e| e.0).sum::<f64>() + ext.iter().skip(k).take(extra).map(|e| e.0.min(0.0)).sum::<f64>();
        ext.sort_by(|a, b| b.1.total_cmp(&a.1));
        let hi: f64 = ext.iter().take(k).map(|e| e.1).sum::<f64>() + ext.iter().skip(k).take(extra).map(|e| e.1.max(0.0)).sum::<f64>();
        (lo, hi)
    }

    fn weight(&self, t: usize) -> f64 {
        let (lo, hi) = self.bounds[t];
        0.75 / (hi - lo).max(1e-9)
    }

    /// Exact (full-budget) per-task accuracies of a candidate.
    pub fn exact(&self, c: &Candidate) -> TaskScores {
        (0..self.tasks.len())
            .map(|t| {
                let sum: f64 = c.layers.iter().enumerate().filter_map(|(l, ch)| ch.map(|ch| self.layer_term(t, l, &ch))).sum();
                (self.tasks[t].clone(), 0.2 + self.weight(t) * (sum - self.bounds[t].0))
            })
            .collect()
    }

    /// Exact mean accuracy of a candidate.
    pub fn exact_mean(&self, c: &Candidate) -> f64 {
        crate::score::mean_score(&self.exact(c))
    }

    /// The best candidate and its mean accuracy, in closed form (for a front's space: at
    /// its smallest depth).
    pub fn optimum(&self) -> (Candidate, f64) {
        self.optimum_at(self.space.keep)
    }

    /// The best candidate keeping `keep` layers and its mean accuracy, in closed form.
    pub fn optimum_at(&self, keep: usize) -> (Candidate, f64) {
        let tasks = self.tasks.len();
        let mean_term = |l: usize, ch: &Choice| (0..tasks).map(|t| self.weight(t) * self.layer_term(t, l, ch)).sum::<f64>() / tasks as f64;
        let best: Vec<(f64, Choice)> = (0..self.space.source_layers())
            .map(|l| {
                let mut top: Option<(f64, Choice)> = None;
                for subset in 0..(1u32 << self.space.siblings()) {
                    for ch in self.candidate_choices(subset, |ch| mean_term(l, ch)) {
                        let v = mean_term(l, &ch);
                        if top.is_none_or(|(b, _)| v > b) {
                            top = Some((v, ch));
                        }
                    }
                }
                top.expect("at least the base choice")
            })
            .collect();
        let mut order: Vec<usize> = (0..best.len()).collect();
        order.sort_by(|a, b| best[*b].0.total_cmp(&best[*a].0));
        let mut layers = vec![None; best.len()];
        for &l in order.iter().take(keep) {
            layers[l] = Some(best[l].1);
        }
        let c = Candidate::new(layers);
        let m = self.exact_mean(&c);
        (c, m)
    }

    fn candidate(&self, recipe: &Recipe) -> Result<Candidate, SyntheticError> {
        self.space.from_recipe(recipe).map_err(|e| SyntheticError(e.to_string()))
    }
}

fn noise_key(recipe: &Recipe, budget: usize, task: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(recipe.to_json().as_bytes());
    h.update(budget.to_le_bytes());
    h.update(task.as_bytes());
    let d: [u8; 32] = h.finalize().into();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

impl Scorer for SyntheticScorer {
    type Error = SyntheticError;

    fn task_names(&self) -> Vec<String> {
        self.tasks.clone()
    }

    /// Accuracy as the module docs say (on the selection split, an independent draw at
    /// `fraction × full budget` items); `loglik` and `margin` increasing functions of the
    /// exact accuracy with half its noise; one text task, `calibration`, whose log-likelihood
    /// per token is −0.1 × the importance of the dropped layers (exact).
    fn measure(&mut self, recipe: &Recipe, budget: usize, items: Items) -> Result<Measures, SyntheticError> {
        self.calls += 1;
        let c = self.candidate(recipe)?;
        let (b, salt) = match items {
            Items::All | Items::Search(_) => (budget.min(self.full_budget).max(1), None),
            Items::Selection(h) => (((h.fraction * self.full_budget as f64).round() as usize).max(1), Some(h.seed)),
            // A validation set as large as the full budget, drawn independently.
            Items::Validation => (self.full_budget, Some(VALIDATION_SALT)),
        };
        let spread = (1.0 / b as f64 - 1.0 / self.full_budget as f64).max(0.0);
        let spread = if salt.is_some() { 1.0 / b as f64 } else { spread };
        let mut out: Measures = self
            .exact(&c)
            .into_iter()
            .map(|(t, p)| {
                let key = noise_key(recipe, budget, &t) ^ salt.map_or(0, |s| s.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                let mut rng = ChaCha8Rng::seed_from_u64(key);
                let mut normal = || {
                    // Box–Muller.
                    let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random());
                    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
                };
                let sd = (p * (1.0 - p) * spread).sqrt();
                let acc = (p + normal() * sd).clamp(0.0, 1.0);
                let (z1, z2) = (normal(), normal());
                let n = b as f64;
                let metrics = [
                    (Metric::Acc, Estimate { value: acc, se: (acc * (1.0 - acc) / n).sqrt() }),
                    (Metric::Loglik, Estimate { value: (0.05 + p).ln() + 0.5 * z1 * sd / (0.05 + p), se: 0.5 / (n.sqrt() * (0.05 + p)) }),
                    (Metric::Margin, Estimate { value: 4.0 * (p - 0.5) + 2.0 * z2 * sd, se: 2.0 / n.sqrt() }),
                ];
                (t, TaskMeasures { items: b, metrics: metrics.into_iter().collect(), per_item: Default::default() })
            })
            .collect();
        let dropped: f64 = recipe.removed_layers().iter().map(|&l| self.importance[l]).sum();
        let text =
            TaskMeasures { items: 1, metrics: [(Metric::Ppl, Estimate { value: -0.1 * dropped, se: 0.0 })].into(), per_item: Default::default() };
        out.insert("calibration".into(), text);
        Ok(out)
    }

    /// Cosines that shrink with the importance of the layers between two boundaries:
    /// `cos[i][j] = exp(−0.2 Σ_{i ≤ ℓ < j} w_ℓ)` over the recipe's kept layers.
    fn boundary_cosines(&mut self, recipe: &Recipe, _texts: &[String]) -> Result<Vec<Vec<f64>>, SyntheticError> {
        let w: Vec<f64> = recipe.layers.iter().map(|l| self.importance[l.from]).collect();
        let n = w.len();
        Ok((0..=n).map(|i| (0..=n).map(|j| (-0.2 * w[i.min(j)..i.max(j)].iter().sum::<f64>()).exp()).collect()).collect())
    }

    /// `exp(Σ importance of the layers the recipe drops)`.
    fn perplexity(&mut self, recipe: &Recipe, _texts: &[String]) -> Result<f64, SyntheticError> {
        Ok(recipe.removed_layers().iter().map(|&l| self.importance[l]).sum::<f64>().exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::space::{tests::template, SpaceOptions};

    #[test]
    fn closed_form_optimum_beats_every_sample_and_its_neighbours() {
        let space = SearchSpace::new(template(10, 3), 7, SpaceOptions::default()).unwrap();
        let s = SyntheticScorer::new(&space, 2, 1000, 3);
        let (opt, best) = s.optimum();
        assert!(best > 0.5 && best <= 0.95 + 1e-9, "{best}");
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..3000 {
            let c = space.sample(&mut rng);
            assert!(s.exact_mean(&c) <= best + 1e-12);
            let n = space.neighbour(&opt, &mut rng);
            assert!(s.exact_mean(&n) <= best + 1e-12, "a neighbour of the optimum is better");
            for v in s.exact(&c).values() {
                assert!((0.2 - 1e-9..=0.95 + 1e-9).contains(v));
            }
        }
    }

    #[test]
    fn full_budget_is_exact_and_low_budgets_are_noisy() {
        let space = SearchSpace::new(template(8, 2), 6, SpaceOptions::default()).unwrap();
        let mut s = SyntheticScorer::new(&space, 2, 1000, 1);
        let c = space.sample(&mut ChaCha8Rng::seed_from_u64(2));
        let r = space.to_recipe(&c);
        assert_eq!(s.score(&r, 1000).unwrap(), s.exact(&c));
        let low = s.score(&r, 100).unwrap();
        assert_ne!(low, s.exact(&c));
        assert_eq!(s.score(&r, 100).unwrap(), low, "deterministic");
    }
}
