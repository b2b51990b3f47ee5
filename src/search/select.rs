//! How the final model is chosen from the evaluated trials (the reference does not say).
//!
//! **Rule:** among the trials evaluated at the highest budget any trial reached, take the
//! one with the best mean accuracy over the calibration tasks; ties (equal means) go to the
//! recipe with fewer merged layers, then to fewer layers taken from siblings, then to the
//! earlier trial. Low-budget scores only steer the search: they are based on fewer items
//! and are never compared with full-budget ones. Fewer merges win ties because a merged
//! layer is extra work to build and harder to explain in the lineage.

use super::journal::TrialRecord;
use crate::recipe::Rule;

/// The rule in one sentence, for reports and model cards.
pub const RULE: &str = "The tailored model is the candidate with the best mean accuracy over the calibration tasks among those evaluated at the highest budget; ties go to fewer merged layers, then fewer sibling layers, then the earlier trial.";

/// Index of the chosen trial, or `None` for no trial.
pub fn choose(trials: &[TrialRecord]) -> Option<usize> {
    let top = trials.iter().map(|t| t.budget).max()?;
    let key = |t: &TrialRecord| {
        let base = &t.recipe.base.name;
        let siblings = t.recipe.layers.iter().filter(|l| !matches!(&l.rule, Rule::Take(m) if m == base)).count();
        (t.recipe.merge_count(), siblings)
    };
    let mut best: Option<usize> = None;
    for (i, t) in trials.iter().enumerate().filter(|(_, t)| t.budget == top) {
        best = match best {
            None => Some(i),
            Some(b) => {
                let bt = &trials[b];
                let better = t.mean > bt.mean || (t.mean == bt.mean && key(t) < key(bt));
                Some(if better { i } else { b })
            }
        };
    }
    best
}

/// Mean accuracy of the choice after each trial (the search's progress curve).
pub fn incumbent_curve(trials: &[TrialRecord]) -> Vec<Option<f64>> {
    (1..=trials.len()).map(|n| choose(&trials[..n]).map(|i| trials[i].mean)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{LayerRule, Merge};
    use crate::search::optimizer::Origin;

    fn trial(index: usize, budget: usize, mean: f64, rules: &[Rule]) -> TrialRecord {
        let t = crate::search::space::tests::template(4, 2);
        let layers = rules.iter().enumerate().map(|(from, rule)| LayerRule { from, rule: rule.clone() }).collect();
        let recipe = crate::recipe::Recipe::new("llama", 4, t.base, t.siblings, layers, t.edges);
        TrialRecord { index, origin: Origin::Random, budget, scores: [("t".to_string(), mean)].into(), mean, seconds: 0.0, recipe }
    }

    #[test]
    fn highest_budget_then_mean_then_fewer_merges() {
        let base = Rule::Take("base".into());
        let s0 = Rule::Take("s0".into());
        let m = Rule::Merge(Merge::TaskArithmetic { models: vec!["s0".into(), "s1".into()], lambda: 0.5 });
        let trials = vec![
            trial(0, 10, 0.99, &[base.clone(), base.clone()]),
            trial(1, 100, 0.7, &[m.clone(), base.clone()]),
            trial(2, 100, 0.7, &[s0.clone(), base.clone()]),
            trial(3, 100, 0.7, &[base.clone(), base.clone()]),
            trial(4, 100, 0.6, &[base.clone(), base.clone()]),
        ];
        // The 0.99 at budget 10 is never compared with full-budget scores.
        assert_eq!(choose(&trials), Some(3));
        assert_eq!(choose(&trials[..3]), Some(2));
        assert_eq!(choose(&[]), None);
        assert_eq!(incumbent_curve(&trials), vec![Some(0.99), Some(0.7), Some(0.7), Some(0.7), Some(0.7)]);
    }
}
