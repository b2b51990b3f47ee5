//! How the final model is chosen from the evaluated trials (the reference does not say).
//!
//! **Without a selection split:** among the trials evaluated at the highest budget any
//! trial reached, take the one with the best objective (mean accuracy for `acc`); ties go
//! to the recipe with fewer merged layers, then to fewer layers taken from siblings, then
//! to the earlier trial. Low-budget scores only steer the search: they are based on fewer
//! items and are never compared with full-budget ones.
//!
//! **With a selection split** (the default): the best-of-many choice on the items that
//! drove the search is biased upward, so the [`TOP`] distinct candidates at the highest
//! budget are scored again on the selection items the search never saw; the best there
//! wins, except that any finalist within two standard errors of it (of the paired
//! difference on the same items) that is simpler — fewer merges, then fewer sibling layers
//! — is preferred: the data cannot tell them apart, and a simpler recipe is cheaper to
//! build and easier to explain in the lineage.

use serde::{Deserialize, Serialize};

use super::optimizer::Origin;
use super::trial::TrialRecord;
use crate::recipe::{Recipe, Rule};
use crate::score::{paired_difference, Estimate, Measures, Metric};

/// The rule in one sentence, for reports and model cards (no selection split).
pub const RULE: &str = "The tailored model is the candidate with the best objective over the calibration tasks among those evaluated at the highest budget; ties go to fewer merged layers, then fewer sibling layers, then the earlier trial.";

/// The rule with a selection split, for reports and model cards.
pub const SPLIT_RULE: &str = "The tailored model is chosen among the top candidates at the highest budget by their score on selection items held out from the calibration items (the search never saw them); a simpler finalist (fewer merged layers, then fewer sibling layers) within two standard errors of the best is preferred.";

/// The rule with selection tasks of their own (a validation set), for reports and model cards.
pub const TASKS_RULE: &str = "The tailored model is chosen among the top candidates at the highest budget by their score on selection tasks of their own, a validation set the search never scored its trials on; a simpler finalist (fewer merged layers, then fewer sibling layers) within two standard errors of the best is preferred.";

/// Finalists scored on the selection split.
pub const TOP: usize = 5;

/// (merged layers, sibling layers): lower is simpler.
pub fn simplicity(recipe: &Recipe) -> (usize, usize) {
    let base = &recipe.base.name;
    let siblings = recipe.layers.iter().filter(|l| !matches!(&l.rule, Rule::Take(m) if m == base)).count();
    (recipe.merge_count(), siblings)
}

/// Index of the chosen trial, or `None` for no trial.
pub fn choose(trials: &[TrialRecord]) -> Option<usize> {
    ranked(trials).first().copied()
}

/// Trials at the highest budget, best first (objective, then simpler, then earlier).
fn ranked(trials: &[TrialRecord]) -> Vec<usize> {
    // A failed trial (non-finite scores) is never ranked.
    let Some(top) = trials.iter().filter(|t| t.failed.is_none()).map(|t| t.budget).max() else { return Vec::new() };
    let mut idx: Vec<usize> = (0..trials.len()).filter(|&i| trials[i].budget == top && trials[i].failed.is_none()).collect();
    idx.sort_by(|&a, &b| {
        let (ta, tb) = (&trials[a], &trials[b]);
        tb.objective_value().total_cmp(&ta.objective_value()).then_with(|| simplicity(&ta.recipe).cmp(&simplicity(&tb.recipe))).then(a.cmp(&b))
    });
    idx
}

/// The best `k` trials at the highest budget with distinct recipes, best first.
pub fn finalists(trials: &[TrialRecord], k: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for i in ranked(trials) {
        if out.len() == k {
            break;
        }
        if !out.iter().any(|&j| trials[j].recipe == trials[i].recipe) {
            out.push(i);
        }
    }
    out
}

/// The best warm start (a baseline's candidate or the reference's hand-made one) among the
/// trials at the highest budget (of depth `depth` only, for a front), if any: it always
/// joins the finalists, so that the report can say on the selection split, paired, what
/// the optimiser's own proposals bought over it. A promoted trial counts as the proposal
/// it promotes (the first trial of its recipe).
pub fn best_warm_start(trials: &[TrialRecord], depth: Option<usize>) -> Option<usize> {
    let first_is_warm = |r: &Recipe| trials.iter().find(|t| t.recipe == *r && t.origin != Origin::Promoted).is_some_and(|t| !t.origin.is_own());
    let in_depth: Vec<usize> = (0..trials.len()).filter(|&i| depth.is_none_or(|k| trials[i].recipe.layers.len() == k)).collect();
    let sub: Vec<TrialRecord> = in_depth.iter().map(|&i| trials[i].clone()).collect();
    ranked(&sub).into_iter().map(|j| in_depth[j]).find(|&i| first_is_warm(&trials[i].recipe))
}

/// `top` (see [`finalists`]) with the best warm start appended when it is not among them
/// (by recipe); the warm start's position in the returned list.
pub fn with_best_warm_start(trials: &[TrialRecord], mut top: Vec<usize>, depth: Option<usize>) -> (Vec<usize>, Option<usize>) {
    let Some(w) = best_warm_start(trials, depth) else { return (top, None) };
    match top.iter().position(|&t| trials[t].recipe == trials[w].recipe) {
        Some(at) => (top, Some(at)),
        None => {
            top.push(w);
            let at = top.len() - 1;
            (top, Some(at))
        }
    }
}

/// One finalist as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finalist {
    /// 0-based trial index.
    pub trial: usize,
    pub merges: usize,
    pub sibling_layers: usize,
    /// The guiding objective on the search's items (at the highest budget).
    pub search: Estimate,
    /// Mean accuracy on the search's items.
    pub search_acc: f64,
    /// The selection metric on the selection split.
    pub selection: Estimate,
    /// Mean accuracy on the selection items (None: they hold no multiple-choice task, as
    /// selection tasks of texts only; reports written before kept a number).
    #[serde(default)]
    pub selection_acc: Option<f64>,
    /// Selection value minus the best finalist's, with the paired standard error.
    pub behind_best: Estimate,
    pub chosen: bool,
    /// The best warm start (see [`best_warm_start`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warm_start: bool,
}

/// Choose among finalists (best first by the search) from their selection-split measures:
/// the best by `metric`, or the simplest finalist within two standard errors of it.
/// Returns the position in `finalists` and the filled-in report rows; `warm` is the best
/// warm start's position, marked in its row.
pub fn choose_finalist(
    trials: &[TrialRecord],
    finalists: &[usize],
    selection: &[Measures],
    metric: Metric,
    warm: Option<usize>,
) -> (usize, Vec<Finalist>) {
    let value = |m: &Measures| super::objective::overall(m, metric).unwrap_or_default();
    let acc = |m: &Measures| super::objective::overall(m, Metric::Acc).ok().map(|e| e.value);
    let values: Vec<Estimate> = selection.iter().map(value).collect();
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if v.value > values[best].value {
            best = i;
        }
    }
    let behind: Vec<Estimate> = (0..finalists.len())
        .map(|i| {
            if i == best {
                return Estimate { value: 0.0, se: 0.0 };
            }
            paired_difference(&selection[i], &selection[best], metric).unwrap_or_else(|| Estimate {
                value: values[i].value - values[best].value,
                se: (values[i].se.powi(2) + values[best].se.powi(2)).sqrt(),
            })
        })
        .collect();
    let mut chosen = best;
    for i in 0..finalists.len() {
        let close = -behind[i].value <= 2.0 * behind[i].se;
        let (ki, kc) = (simplicity(&trials[finalists[i]].recipe), simplicity(&trials[finalists[chosen]].recipe));
        if close && (ki < kc || (ki == kc && values[i].value > values[chosen].value)) {
            chosen = i;
        }
    }
    let rows = finalists
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let (merges, sibling_layers) = simplicity(&trials[t].recipe);
            Finalist {
                trial: t,
                merges,
                sibling_layers,
                search: trials[t].objective.unwrap_or(Estimate { value: trials[t].mean, se: 0.0 }),
                search_acc: trials[t].mean,
                selection: values[i],
                selection_acc: acc(&selection[i]),
                behind_best: behind[i],
                chosen: i == chosen,
                warm_start: warm == Some(i),
            }
        })
        .collect();
    (chosen, rows)
}

/// A front search's choice at every depth: for each number of kept layers, the index of
/// the trial [`choose`] picks among that depth's trials (each depth at the highest budget
/// any of its own trials reached).
pub fn front(trials: &[TrialRecord]) -> std::collections::BTreeMap<usize, usize> {
    let mut by_depth: std::collections::BTreeMap<usize, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, t) in trials.iter().enumerate() {
        by_depth.entry(t.recipe.layers.len()).or_default().push(i);
    }
    by_depth
        .into_iter()
        .filter_map(|(k, idx)| {
            let sub: Vec<TrialRecord> = idx.iter().map(|&i| trials[i].clone()).collect();
            choose(&sub).map(|j| (k, idx[j]))
        })
        .collect()
}

/// The trials of depth `k`, as indices into `trials`, best first (see [`finalists`]).
pub fn finalists_at(trials: &[TrialRecord], k: usize, n: usize) -> Vec<usize> {
    let idx: Vec<usize> = (0..trials.len()).filter(|&i| trials[i].recipe.layers.len() == k).collect();
    let sub: Vec<TrialRecord> = idx.iter().map(|&i| trials[i].clone()).collect();
    finalists(&sub, n).into_iter().map(|j| idx[j]).collect()
}

/// Mean accuracy of the choice after each trial (the search's progress curve).
pub fn incumbent_curve(trials: &[TrialRecord]) -> Vec<Option<f64>> {
    (1..=trials.len()).map(|n| choose(&trials[..n]).map(|i| trials[i].mean)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{LayerRule, Merge};

    fn trial(index: usize, budget: usize, mean: f64, rules: &[Rule]) -> TrialRecord {
        let t = crate::search::space::tests::template(4, 2);
        let layers = rules.iter().enumerate().map(|(from, rule)| LayerRule { from, rule: rule.clone() }).collect();
        let recipe = crate::recipe::Recipe::new("llama", 4, t.base, t.siblings, layers, t.edges);
        TrialRecord {
            index,
            origin: Origin::Random,
            budget,
            scores: [("t".to_string(), mean)].into(),
            mean,
            seconds: 0.0,
            layers: None,
            recipe,
            objective: None,
            measures: Default::default(),
            failed: None,
            worker: None,
            proposal: None,
        }
    }

    #[test]
    fn the_front_has_each_depths_best_at_its_own_highest_budget() {
        let (b, s0) = (Rule::Take("base".into()), Rule::Take("s0".into()));
        let trials = vec![
            trial(0, 100, 0.7, &[b.clone(), b.clone(), b.clone()]),
            trial(1, 100, 0.8, &[s0.clone(), b.clone(), b.clone()]),
            trial(2, 10, 0.9, &[b.clone(), b.clone()]),
            trial(3, 10, 0.6, &[s0.clone(), b.clone()]),
            trial(4, 100, 0.5, std::slice::from_ref(&s0)),
        ];
        let f = front(&trials);
        assert_eq!(f.into_iter().collect::<Vec<_>>(), vec![(1, 4), (2, 2), (3, 1)], "depth 2 never reached budget 100: its best at 10");
        assert_eq!(finalists_at(&trials, 3, 5), vec![1, 0]);
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

    #[test]
    fn the_best_warm_start_always_reaches_the_final_selection() {
        let (b, s0, s1) = (Rule::Take("base".into()), Rule::Take("s0".into()), Rule::Take("s1".into()));
        let mut trials = vec![
            trial(0, 100, 0.5, &[b.clone(), b.clone()]),
            trial(1, 10, 0.9, &[s0.clone(), s0.clone()]),
            trial(2, 100, 0.8, &[s1.clone(), b.clone()]),
            trial(3, 100, 0.7, &[s1.clone(), s1.clone()]),
            trial(4, 100, 0.6, &[s0.clone(), s0.clone()]),
        ];
        // Warm starts: trials 0 and 1; trial 4 promotes trial 1 and counts as a warm start.
        trials[0].origin = Origin::Baseline;
        trials[1].origin = Origin::Baseline;
        trials[4].origin = Origin::Promoted;
        assert_eq!(best_warm_start(&trials, None), Some(4), "the warm start at the highest budget with the best objective");
        assert_eq!(with_best_warm_start(&trials, finalists(&trials, 2), None), (vec![2, 3, 4], Some(2)), "appended when not a finalist");
        assert_eq!(with_best_warm_start(&trials, finalists(&trials, 5), None), (vec![2, 3, 4, 0], Some(2)), "found when it is one");
        assert_eq!(best_warm_start(&trials, Some(1)), None, "no trial of that depth");
        trials[0].origin = Origin::Random;
        trials[1].origin = Origin::Random;
        assert_eq!(with_best_warm_start(&trials, vec![2], None), (vec![2], None), "no warm start: nothing added");
    }

    fn measures(per_item: &[f64]) -> Measures {
        use crate::score::{ItemValues, TaskMeasures};
        let v = ItemValues { values: per_item.to_vec(), weights: vec![1.0; per_item.len()] };
        let m = TaskMeasures { items: per_item.len(), metrics: [(Metric::Acc, v.estimate())].into(), per_item: [(Metric::Acc, v)].into() };
        [("t".to_string(), m)].into()
    }

    #[test]
    fn selection_prefers_the_simpler_finalist_unless_it_is_clearly_worse() {
        let base = Rule::Take("base".into());
        let s0 = Rule::Take("s0".into());
        let trials = vec![
            trial(0, 100, 0.9, &[s0.clone(), s0.clone()]),
            trial(1, 100, 0.8, &[base.clone(), base.clone()]),
            trial(2, 100, 0.7, &[s0.clone(), base.clone()]),
            trial(3, 10, 0.99, &[base.clone(), s0.clone()]),
        ];
        let f = finalists(&trials, 5);
        assert_eq!(f, vec![0, 1, 2]);
        // Within noise: trial 0 is best on selection by one item of ten, the all-base
        // trial 1 is within two paired standard errors and simpler.
        let a = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let b = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
        let (c, rows) = choose_finalist(&trials, &f, &[measures(&a), measures(&b), measures(&b)], Metric::Acc, None);
        assert_eq!(c, 1);
        assert!(rows[1].chosen && !rows[0].chosen);
        assert!((rows[1].behind_best.value + 0.1).abs() < 1e-12 && rows[1].behind_best.se > 0.05);
        assert_eq!((rows[0].merges, rows[0].sibling_layers), (0, 2));
        // Clearly better on every item where they differ: the complex finalist stays.
        let worse = [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let (c, _) = choose_finalist(&trials, &f, &[measures(&a), measures(&worse), measures(&worse)], Metric::Acc, None);
        assert_eq!(c, 0);
    }
}
