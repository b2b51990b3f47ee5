//! The reference's hand-made warm start: three removal patterns, each with every kept
//! layer from the base, then with every kept layer given the same sibling subset at
//! λ ∈ {0.3, 0.5, 0.6, 0.7, 0.8, 1.0}.
//!
//! The reference lists 129 configurations for three siblings, but a single sibling's layer
//! does not depend on λ, so 18 of them are repeats; the list here keeps each candidate once
//! (84 for three siblings).

use super::space::{Candidate, Choice, SearchSpace};
use crate::recipe::Teacher;

/// The λ values the reference tries.
pub const LAMBDAS: [f64; 6] = [0.3, 0.5, 0.6, 0.7, 0.8, 1.0];

/// The order in which a pattern removes layers; the first and last layers always go last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalPattern {
    /// From the top down: L−2, L−3, …, 1 (deep layers are the most redundant).
    UpperFirst,
    /// From the middle outwards: m, m−1, m+1, m−2, … with m = L/2.
    MiddleOutward,
    /// Alternating high and low: L−2, 1, L−3, 2, …
    Alternating,
}

impl RemovalPattern {
    pub const ALL: [RemovalPattern; 3] = [RemovalPattern::UpperFirst, RemovalPattern::MiddleOutward, RemovalPattern::Alternating];

    /// Every layer of an `l`-layer model, in the order this pattern removes them.
    pub fn order(self, l: usize) -> Vec<usize> {
        let interior: Vec<usize> = (1..l.saturating_sub(1)).collect();
        let mut order: Vec<usize> = match self {
            RemovalPattern::UpperFirst => interior.iter().rev().copied().collect(),
            RemovalPattern::MiddleOutward => {
                let m = l as i64 / 2;
                let mut v = Vec::new();
                for d in 0..l as i64 {
                    for x in [m - d, m + d] {
                        if x >= 1 && x < l as i64 - 1 && !v.contains(&(x as usize)) {
                            v.push(x as usize);
                        }
                    }
                }
                v
            }
            RemovalPattern::Alternating => {
                let (mut lo, mut hi) = (0usize, interior.len());
                let mut v = Vec::new();
                while lo < hi {
                    hi -= 1;
                    v.push(interior[hi]);
                    if lo < hi {
                        v.push(interior[lo]);
                        lo += 1;
                    }
                }
                v
            }
        };
        if l >= 2 {
            order.push(l - 1);
        }
        order.push(0);
        order
    }

    /// The kept layers after removing the first `remove` layers of the order.
    pub fn kept(self, l: usize, keep: usize) -> Vec<usize> {
        let removed: Vec<usize> = self.order(l).into_iter().take(l - keep).collect();
        (0..l).filter(|i| !removed.contains(i)).collect()
    }
}

/// The warm-start candidates for `space`, in the reference's order, each once.
pub fn warm_start(space: &SearchSpace) -> Vec<Candidate> {
    let l = space.source_layers();
    let method = space.options.methods[0];
    let mut out: Vec<Candidate> = Vec::new();
    let mut push = |c: Candidate| {
        if !out.contains(&c) {
            out.push(c);
        }
    };
    for pattern in RemovalPattern::ALL {
        let kept = pattern.kept(l, space.keep);
        let base = space.base_only(&kept);
        push(base.clone());
        for lambda in LAMBDAS {
            for subset in 1..(1u32 << space.siblings()) {
                let mut c = base.clone();
                for i in &kept {
                    c.layers[*i] = Some(Choice::new(subset, lambda, method));
                }
                push(c);
            }
        }
    }
    out
}

/// Candidates from known removal sets (the baselines'): for each set, every kept layer
/// from the base, then every kept layer from one sibling, sibling by sibling, then (with two
/// or more siblings) every kept layer the siblings' average (task arithmetic at λ = 1/n);
/// each once. Sets of the wrong size for `space` are skipped.
///
/// The average is there because each sibling alone is a specialist: on the bench-quality
/// family (SmolLM2-135M, three domain siblings, 22 of 30 layers) SLEB's removal set with the
/// siblings' average has 0.64× ShortGPT's held-out perplexity, against 0.89× with the best
/// single sibling's layers.
pub fn baseline_warm_start(space: &SearchSpace, removals: &[Vec<usize>]) -> Vec<Candidate> {
    let l = space.source_layers();
    let method = space.options.methods[0];
    let mut out: Vec<Candidate> = Vec::new();
    for removed in removals {
        let kept: Vec<usize> = (0..l).filter(|i| !removed.contains(i)).collect();
        if !space.depths().contains(&kept.len()) || removed.iter().any(|&r| r >= l) {
            continue;
        }
        let base = space.base_only(&kept);
        let n = space.siblings();
        // What every kept layer does: one sibling, sibling by sibling, then their average.
        let singles = (0..n).map(|j| Choice::new(1 << j, 1.0, method));
        let average = (n >= 2).then(|| Choice::new((1 << n) - 1, 1.0 / n as f64, method));
        let uniform = |choice: Choice| {
            let mut c = base.clone();
            for &i in &kept {
                c.layers[i] = Some(choice);
            }
            c
        };
        let variants: Vec<Candidate> = std::iter::once(base.clone()).chain(singles.chain(average).map(uniform)).collect();
        // With the heal in the space, each teacher also heals the variant it is the
        // full-depth form of (the base's cut by the base, the average's by the average, a
        // sibling's by that sibling): the pairing that helped most on the bench family.
        let healed: Vec<Candidate> = space
            .options
            .heal
            .iter()
            .flat_map(|h| h.teachers.iter().enumerate())
            .filter_map(|(t, teacher)| {
                let of = match teacher {
                    Teacher::Base => Some(0),
                    Teacher::Sibling(name) => space.template.siblings.iter().position(|s| s.name == *name).map(|j| 1 + j),
                    Teacher::Average => (n >= 2).then_some(1 + n),
                }?;
                Some(Candidate { heal: Some(t as u8), ..variants[of].clone() })
            })
            .collect();
        for c in variants.into_iter().chain(healed) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::space::{tests::template, SpaceOptions};

    #[test]
    fn patterns_remove_interior_layers_first() {
        assert_eq!(RemovalPattern::UpperFirst.order(6), vec![4, 3, 2, 1, 5, 0]);
        assert_eq!(RemovalPattern::MiddleOutward.order(6), vec![3, 2, 4, 1, 5, 0]);
        assert_eq!(RemovalPattern::Alternating.order(6), vec![4, 1, 3, 2, 5, 0]);
        assert_eq!(RemovalPattern::Alternating.kept(6, 4), vec![0, 2, 3, 5]);
        for p in RemovalPattern::ALL {
            let mut o = p.order(40);
            o.sort_unstable();
            assert_eq!(o, (0..40).collect::<Vec<_>>());
        }
    }

    #[test]
    fn three_siblings_give_84_distinct_candidates() {
        let space = SearchSpace::new(template(40, 3), 30, SpaceOptions::default()).unwrap();
        let ws = warm_start(&space);
        // 3 patterns × (all-base + 3 single siblings + 6 λ × 4 multi-sibling subsets).
        assert_eq!(ws.len(), 3 * (1 + 3 + 6 * 4));
        for c in &ws {
            assert_eq!(c.kept().count(), 30);
            space.to_recipe(c).validate().unwrap();
        }
    }

    #[test]
    fn baseline_removals_give_base_one_candidate_per_sibling_and_the_average() {
        let space = SearchSpace::new(template(8, 2), 6, SpaceOptions::default()).unwrap();
        // Two baselines agree on one set; a set of the wrong size is skipped.
        let ws = baseline_warm_start(&space, &[vec![3, 4], vec![3, 4], vec![1, 6], vec![2]]);
        assert_eq!(ws.len(), 2 * 4);
        assert_eq!(ws[0], space.base_only(&[0, 1, 2, 5, 6, 7]));
        for c in &ws {
            assert_eq!(c.kept().count(), 6);
            space.to_recipe(c).validate().unwrap();
        }
        assert_eq!((ws[1].sibling_layers(), ws[1].merges()), (6, 0));
        assert_eq!((ws[2].sibling_layers(), ws[2].merges()), (6, 0));
        // The siblings' average: every kept layer merges both siblings at λ = 1/2.
        assert_eq!(ws[3].merges(), 6);
        for ch in ws[3].layers.iter().flatten() {
            assert_eq!((ch.subset, ch.lambda), (0b11, 0.5));
        }
        assert_eq!(ws[4], space.base_only(&[0, 2, 3, 4, 5, 7]));
        // One sibling: no average.
        let one = SearchSpace::new(template(8, 1), 6, SpaceOptions::default()).unwrap();
        assert_eq!(baseline_warm_start(&one, &[vec![3, 4]]).len(), 2);
    }
}
