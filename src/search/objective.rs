//! What the search optimises. Accuracy on a few dozen items per task moves in steps of
//! one item and has a standard error of several points, so the optimiser would rank
//! candidates largely by noise; the continuous measures of the same forward passes
//! (log-likelihood of the correct choice, its margin over the best wrong choice,
//! calibration-text log-likelihood) separate candidates with less variance.
//!
//! An objective names the metric that guides the search (the surrogate's target and
//! Hyperband's promotions) and the metric that picks the final candidate on the
//! selection split: `margin` uses the margin for both, `margin+acc` guides with the margin
//! and selects by accuracy.

use serde::{Deserialize, Serialize};

use crate::score::{Estimate, Measures, Metric};

use super::SearchError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objective {
    /// What the surrogate models and Hyperband promotes on.
    pub guide: Metric,
    /// What the final choice compares on the selection split.
    pub select: Metric,
}

impl Default for Objective {
    /// Accuracy throughout: what journals written before objectives existed used.
    fn default() -> Self {
        Self { guide: Metric::Acc, select: Metric::Acc }
    }
}

/// The objectives `--objective` accepts, for help texts and errors.
pub const NAMES: &str = "acc, loglik, margin, ppl, loglik+acc, margin+acc, ppl+acc";

impl Objective {
    pub fn of(metric: Metric) -> Self {
        Self { guide: metric, select: metric }
    }

    /// `METRIC` or `METRIC+acc`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.split_once('+') {
            None => Metric::parse(s).map(Self::of),
            Some((g, "acc")) => Metric::parse(g).filter(|m| *m != Metric::Acc).map(|guide| Self { guide, select: Metric::Acc }),
            Some(_) => None,
        }
    }

    pub fn name(&self) -> String {
        if self.guide == self.select {
            self.guide.name().to_string()
        } else {
            format!("{}+{}", self.guide.name(), self.select.name())
        }
    }
}

/// `metric` per task (the tasks that have it) of `m`.
pub fn task_values(m: &Measures, metric: Metric) -> Vec<(String, Estimate)> {
    m.iter().filter_map(|(t, x)| x.metrics.get(&metric).map(|e| (t.clone(), *e))).collect()
}

/// The unweighted mean of `metric` over the tasks that have it, with its standard error.
pub fn overall(m: &Measures, metric: Metric) -> Result<Estimate, SearchError> {
    let parts: Vec<Estimate> = task_values(m, metric).into_iter().map(|(_, e)| e).collect();
    if parts.is_empty() {
        let what = match metric {
            Metric::Ppl => "no calibration-text task (add `ppl=FILE` to --tasks)",
            _ => "no multiple-choice task",
        };
        return Err(SearchError::Space(format!("the objective `{}` needs a task that measures it: the scorer has {what}", metric.name())));
    }
    Ok(Estimate::mean_of(&parts))
}

/// A cost (lower is better) from a value of `metric`, and whether the surrogate should
/// model its logarithm (SMAC's log-scaled costs resolve differences among good
/// candidates; it needs a cost bounded below by 0).
pub fn cost(metric: Metric, value: f64) -> f64 {
    match metric {
        Metric::Acc | Metric::AccNorm => 1.0 - value,
        // Log-likelihoods are ≤ 0; margins have no bound.
        Metric::Loglik | Metric::Ppl | Metric::Margin => -value,
    }
}

/// Whether costs of `metric` are bounded below by zero (see [`cost`]).
pub fn log_scaled(metric: Metric) -> bool {
    !matches!(metric, Metric::Margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_listed_objective_and_nothing_else() {
        for n in NAMES.split(", ") {
            assert_eq!(Objective::parse(n).map(|o| o.name()), Some(n.to_string()), "{n}");
        }
        assert_eq!(Objective::parse("margin+acc"), Some(Objective { guide: Metric::Margin, select: Metric::Acc }));
        for bad in ["", "accuracy", "acc+acc", "margin+loglik", "margin+"] {
            assert_eq!(Objective::parse(bad), None, "{bad}");
        }
    }
}
