//! A small random-forest regressor, the surrogate of the Bayesian optimiser (as in SMAC):
//! bagged regression trees with random feature subsets, predicting a mean and a variance
//! (law of total variance over the trees' leaves), deterministic for a given RNG.

use rand::Rng;

/// Forest settings; the defaults follow SMAC's random forest (10 trees, 5/6 of the
/// features per split, at least 3 points to split, depth ≤ 20).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForestParams {
    pub trees: usize,
    pub feature_ratio: f64,
    pub min_split: usize,
    pub min_leaf: usize,
    pub max_depth: usize,
}

impl Default for ForestParams {
    fn default() -> Self {
        Self { trees: 10, feature_ratio: 5.0 / 6.0, min_split: 3, min_leaf: 1, max_depth: 20 }
    }
}

#[derive(Debug, Clone)]
enum Node {
    Leaf { mean: f64, var: f64 },
    Split { feature: usize, threshold: f64, left: usize, right: usize },
}

#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn leaf(&self, x: &[f64]) -> (f64, f64) {
        let mut i = 0;
        loop {
            match &self.nodes[i] {
                Node::Leaf { mean, var } => return (*mean, *var),
                Node::Split { feature, threshold, left, right } => i = if x[*feature] <= *threshold { *left } else { *right },
            }
        }
    }
}

/// A fitted forest.
#[derive(Debug, Clone)]
pub struct Forest {
    trees: Vec<Tree>,
}

fn mean_var(ys: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = ys.clone().count().max(1) as f64;
    let mean = ys.clone().sum::<f64>() / n;
    let var = ys.map(|y| (y - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

struct Builder<'a, R: Rng> {
    x: &'a [Vec<f64>],
    y: &'a [f64],
    p: ForestParams,
    rng: &'a mut R,
    nodes: Vec<Node>,
}

impl<R: Rng> Builder<'_, R> {
    fn build(&mut self, idx: Vec<usize>, depth: usize) -> usize {
        let (mean, var) = mean_var(idx.iter().map(|&i| self.y[i]));
        let at = self.nodes.len();
        self.nodes.push(Node::Leaf { mean, var });
        if idx.len() < self.p.min_split || depth >= self.p.max_depth || var <= 1e-18 {
            return at;
        }
        let Some((feature, threshold)) = self.best_split(&idx) else { return at };
        let (l, r): (Vec<usize>, Vec<usize>) = idx.iter().partition(|&&i| self.x[i][feature] <= threshold);
        let left = self.build(l, depth + 1);
        let right = self.build(r, depth + 1);
        self.nodes[at] = Node::Split { feature, threshold, left, right };
        at
    }

    /// The split of a random feature subset that most reduces the squared error.
    fn best_split(&mut self, idx: &[usize]) -> Option<(usize, f64)> {
        let d = self.x[0].len();
        let m = ((d as f64 * self.p.feature_ratio).ceil() as usize).clamp(1, d);
        let features = rand::seq::index::sample(self.rng, d, m);
        let total: f64 = idx.iter().map(|&i| self.y[i]).sum();
        let n = idx.len() as f64;
        let mut best: Option<(f64, usize, f64)> = None;
        let mut pairs: Vec<(f64, f64)> = Vec::with_capacity(idx.len());
        for f in features.iter() {
            pairs.clear();
            pairs.extend(idx.iter().map(|&i| (self.x[i][f], self.y[i])));
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
            if pairs[0].0 == pairs[pairs.len() - 1].0 {
                continue;
            }
            let mut left_sum = 0.0;
            for k in 0..pairs.len() - 1 {
                left_sum += pairs[k].1;
                let nl = (k + 1) as f64;
                if pairs[k].0 == pairs[k + 1].0 || k + 1 < self.p.min_leaf || pairs.len() - k - 1 < self.p.min_leaf {
                    continue;
                }
                // Maximising sum_l²/n_l + sum_r²/n_r minimises the squared error.
                let gain = left_sum * left_sum / nl + (total - left_sum).powi(2) / (n - nl);
                if best.is_none_or(|(g, _, _)| gain > g + 1e-12) {
                    best = Some((gain, f, 0.5 * (pairs[k].0 + pairs[k + 1].0)));
                }
            }
        }
        best.map(|(_, f, t)| (f, t))
    }
}

impl Forest {
    /// Fit on rows `x` (all the same length) and targets `y`; each tree sees a bootstrap sample.
    pub fn fit(x: &[Vec<f64>], y: &[f64], params: ForestParams, rng: &mut impl Rng) -> Forest {
        assert_eq!(x.len(), y.len(), "one target per row");
        assert!(!x.is_empty(), "a forest needs data");
        let n = x.len();
        let trees = (0..params.trees)
            .map(|_| {
                let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
                let mut b = Builder { x, y, p: params, rng: &mut *rng, nodes: Vec::new() };
                b.build(idx, 0);
                Tree { nodes: b.nodes }
            })
            .collect();
        Forest { trees }
    }

    /// Predictive mean and variance at `x`: the mixture of the trees' leaf distributions.
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        let t = self.trees.len() as f64;
        let (mut m, mut second) = (0.0, 0.0);
        for tree in &self.trees {
            let (mean, var) = tree.leaf(x);
            m += mean;
            second += var + mean * mean;
        }
        let mean = m / t;
        (mean, (second / t - mean * mean).max(0.0))
    }
}

/// Expected improvement below `best` of a Gaussian N(mean, var) (for minimisation).
pub fn expected_improvement(mean: f64, var: f64, best: f64) -> f64 {
    let sd = var.sqrt();
    if sd < 1e-12 {
        return (best - mean).max(0.0);
    }
    let z = (best - mean) / sd;
    (best - mean) * normal_cdf(z) + sd * normal_pdf(z)
}

fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Φ(z) through erfc (W. J. Cody's rational Chebyshev fit as in Numerical Recipes' erfcc,
/// fractional error below 1.2e-7, ample for ranking candidates).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn forest_learns_a_step_and_is_uncertain_far_from_data() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let x: Vec<Vec<f64>> = (0..60).map(|i| vec![i as f64 / 60.0, (i % 7) as f64]).collect();
        let y: Vec<f64> = x.iter().map(|r| if r[0] > 0.5 { 1.0 } else { 0.0 }).collect();
        let f = Forest::fit(&x, &y, ForestParams::default(), &mut rng);
        assert!(f.predict(&[0.2, 3.0]).0 < 0.1);
        assert!(f.predict(&[0.9, 3.0]).0 > 0.9);
        // Near the boundary the bootstrap trees disagree.
        assert!(f.predict(&[0.505, 3.0]).1 > f.predict(&[0.1, 3.0]).1);
        // Same seed, same forest.
        let g = Forest::fit(&x, &y, ForestParams::default(), &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(Forest::fit(&x, &y, ForestParams::default(), &mut ChaCha8Rng::seed_from_u64(0)).predict(&[0.4, 1.0]), g.predict(&[0.4, 1.0]));
    }

    #[test]
    fn normal_cdf_and_ei_match_closed_forms() {
        // Values of Φ from scipy.stats.norm.cdf.
        for (z, p) in [(0.0, 0.5), (1.0, 0.8413447460685429), (-1.96, 0.024997895148220435), (3.0, 0.9986501019683699)] {
            assert!((normal_cdf(z) - p).abs() < 2e-7, "Φ({z})");
        }
        // EI with mean = best is σ·φ(0).
        assert!((expected_improvement(1.0, 4.0, 1.0) - 2.0 * 0.3989422804014327).abs() < 1e-6);
        assert_eq!(expected_improvement(2.0, 0.0, 1.0), 0.0);
        assert!(expected_improvement(0.0, 1.0, 1.0) > 1.0);
    }
}
