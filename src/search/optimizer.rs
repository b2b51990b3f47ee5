//! The optimisers: a multi-fidelity Bayesian optimiser in the style of SMAC's
//! hyper-parameter facade (random-forest surrogate, expected improvement, 20 % random
//! interleaving, Hyperband over item budgets, ParEGO across tasks), optionally warm-started
//! with the reference's hand-made candidates, and plain random search for comparison.
//!
//! A front (a space over a range of depths) runs one group of Hyperband schedules per
//! depth, handed slots in turn, so every depth gets the initial design and the schedule — and the full-budget
//! evaluations — of a dedicated search with its share of the trials; what is shared is the
//! surrogate (one forest over every depth, the depth a feature of its own) and the local
//! search's starting points, which include the best candidates of the neighbouring depths
//! one layer away. A single depth proposes exactly as it did before fronts existed.
//!
//! An optimiser is a deterministic function of its seed and the results it is told, so a
//! search is rebuilt exactly by replaying its journal (`ask`, then `tell` the journaled
//! scores) — that is how resume works.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::score::{HoldOut, Metric, TaskScores};

use super::forest::{expected_improvement, Forest, ForestParams};
use super::hyperband::{Hyperband, Slot};
use super::objective::{self, Objective};
use super::space::{Candidate, Choice, SearchSpace};
use super::warmstart::{baseline_warm_start, warm_start};

/// The objective of the command line and the root command when none is given, chosen by
/// `scripts/bench-quality.sh` (see the README): the calibration texts' log-likelihood
/// (`ppl`) when the calibration has texts, else the correct choices' log-likelihood
/// (`loglik`), the cloze-target cross-entropy of the same items.
pub fn default_objective(has_texts: bool) -> Objective {
    Objective::of(if has_texts { Metric::Ppl } else { Metric::Loglik })
}

/// Fraction of each calibration task's items held out for the final selection by default.
pub const DEFAULT_SELECTION_FRACTION: f64 = 1.0 / 3.0;

/// Which optimiser proposes candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Multi-fidelity Bayesian optimisation from a small random initial design.
    Bo,
    /// The same optimiser, starting from the reference's warm-start candidates.
    Warmstart,
    /// Uniformly random candidates, each at the full budget.
    Random,
    /// Local search around the best candidates (EvoPress-like): the baselines' warm starts
    /// scored at the full budget first, then small moves ([`super::moves`]) of the best few
    /// evaluated candidates, the forest choosing among them, under the Hyperband schedule.
    Local,
}

impl OptimizerKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bo" => Some(Self::Bo),
            "warmstart" => Some(Self::Warmstart),
            "random" => Some(Self::Random),
            "local" => Some(Self::Local),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Bo => "bo",
            Self::Warmstart => "warmstart",
            Self::Random => "random",
            Self::Local => "local",
        }
    }
}

/// How per-task costs become the one number the surrogate models.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Scalarization {
    /// ParEGO (Knowles 2006), as SMAC: for each proposal a random weight vector θ on the
    /// simplex, `max_t θ_t c_t + ρ Σ_t θ_t c_t` over costs normalised to [0, 1] per task.
    Parego { rho: f64 },
    /// The mean cost over tasks (the quantity the final choice maximises).
    Mean,
}

/// Every setting that shapes the sequence of trials (written in the journal header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub seed: u64,
    /// Item budgets of the fidelities, increasing; the last is the full budget.
    pub budgets: Vec<usize>,
    /// Hyperband's reduction factor.
    pub eta: usize,
    /// Fraction of model-based proposals replaced by random candidates.
    pub random_fraction: f64,
    pub scalarization: Scalarization,
    /// Random candidates before the surrogate is used (Bo only). Independent of the
    /// number of trials, so a resumed search may ask for more trials.
    pub initial_design: usize,
    pub trees: usize,
    /// Random candidates scored by the acquisition function per proposal.
    pub acquisition_samples: usize,
    /// Local searches (hill climbing on expected improvement) per proposal.
    pub local_searches: usize,
    /// What the search optimises (journals without one optimised accuracy).
    #[serde(default)]
    pub objective: Objective,
    /// The selection split held out from the calibration items (None: the final choice is
    /// made on the search's own items, as journals without one did); built from
    /// `--selection-split` by `pipeline::request`, which checks the fraction.
    #[serde(default)]
    pub hold_out: Option<HoldOut>,
    /// Removal sets of the baselines (ShortGPT, angular, SLEB) that seed the initial
    /// design, each with all-base layers and with each sibling's layers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm_removals: Vec<Vec<usize>>,
    /// Run Hyperband on the full budget alone when the guide does not read the item budget
    /// (`ppl`: the calibration texts are scored whole at every budget, so a low rung already
    /// measures the full value and each promotion repeats a score: 3 of the 19 trials after the
    /// warm starts of each 40-trial bench heal search were such repeats, and a candidate left at
    /// the low rung could not become a finalist). Journals written before
    /// this setting ran every rung and replay so (a resumed search takes it from its journal).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_budget_free_rungs: bool,
}

impl OptimizerConfig {
    /// The default settings: the reference's (SMAC HPO facade: 10 trees, EI, 20 % random
    /// interleaving, Hyperband η = 3 over budgets 111/333/1000), except that the surrogate
    /// models the mean task cost instead of a ParEGO scalarisation, because the final
    /// choice maximises the mean (on the synthetic benchmark, mean scalarisation reaches
    /// 0.1 points of regret where ParEGO leaves 1.6 after 200 trials; see the search notes).
    /// Set `scalarization` to `Parego { rho: 0.05 }` for the reference's behaviour.
    ///
    /// The local optimiser interleaves 10 % random candidates: its moves are its exploration.
    pub fn new(kind: OptimizerKind, seed: u64) -> Self {
        Self {
            kind,
            seed,
            budgets: vec![111, 333, 1000],
            eta: 3,
            random_fraction: if kind == OptimizerKind::Local { 0.1 } else { 0.2 },
            scalarization: Scalarization::Mean,
            initial_design: 10,
            trees: 10,
            acquisition_samples: 500,
            local_searches: 10,
            objective: Objective::default(),
            hold_out: None,
            warm_removals: Vec::new(),
            skip_budget_free_rungs: true,
        }
    }

    pub fn full_budget(&self) -> usize {
        *self.budgets.last().expect("validated: at least one budget")
    }

    /// The budgets Hyperband's schedules run: `budgets`, or only the full one when the guide
    /// reads no item budget (see [`OptimizerConfig::skip_budget_free_rungs`]).
    pub fn schedule_budgets(&self) -> &[usize] {
        if self.skip_budget_free_rungs && self.objective.guide == Metric::Ppl {
            &self.budgets[self.budgets.len() - 1..]
        } else {
            &self.budgets
        }
    }

    pub fn validate(&self) -> Result<(), super::SearchError> {
        let bad = |m: String| Err(super::SearchError::Space(m));
        if self.budgets.is_empty() || self.budgets.windows(2).any(|w| w[0] >= w[1]) || self.budgets[0] == 0 {
            return bad(format!("budgets must be positive and increasing, got {:?}", self.budgets));
        }
        if self.eta < 2 {
            return bad(format!("eta must be at least 2, got {}", self.eta));
        }
        if !(0.0..=1.0).contains(&self.random_fraction) {
            return bad(format!("random fraction must be in [0, 1], got {}", self.random_fraction));
        }
        if self.trees == 0 {
            return bad("the forest needs at least one tree".into());
        }
        Ok(())
    }
}

/// The initial design of a single-depth `space`: the baselines' candidates (for
/// [`OptimizerKind::Bo`] in place of up to half the random design), then random
/// candidates, or the reference's warm start; nothing for random search.
fn initial_design(space: &SearchSpace, cfg: &OptimizerConfig, rng: &mut ChaCha8Rng) -> Vec<(Candidate, Origin)> {
    let baselines: Vec<(Candidate, Origin)> = baseline_warm_start(space, &cfg.warm_removals).into_iter().map(|c| (c, Origin::Baseline)).collect();
    match cfg.kind {
        OptimizerKind::Bo => {
            let random = if baselines.is_empty() {
                cfg.initial_design
            } else {
                (cfg.initial_design / 2).max(cfg.initial_design.saturating_sub(baselines.len()))
            };
            baselines.into_iter().chain((0..random).map(|_| (space.sample(rng), Origin::Initial))).collect()
        }
        OptimizerKind::Warmstart => baselines.into_iter().chain(warm_start(space).into_iter().map(|c| (c, Origin::WarmStart))).collect(),
        OptimizerKind::Random => Vec::new(),
        // The baselines' candidates are the starting points; without them, a random design.
        OptimizerKind::Local if baselines.is_empty() => (0..cfg.initial_design).map(|_| (space.sample(rng), Origin::Initial)).collect(),
        OptimizerKind::Local => baselines,
    }
}

/// The space new candidates at `depth` come from: a front's single-depth space, or the
/// whole space for `None`.
fn sampler<'a>(space: &'a SearchSpace, depth_spaces: &'a [SearchSpace], depth: Option<usize>) -> &'a SearchSpace {
    match depth {
        Some(k) => &depth_spaces[k - space.keep],
        None => space,
    }
}

/// Candidates of depth `k` one layer away from the best evaluated candidates of the
/// neighbouring depths (`evaluated`, best first): a `k + 1` candidate without its least
/// useful layer, a `k − 1` candidate with the most useful base layer added, each as `value`
/// ranks them. What the study learned at the neighbouring depths starts the local search.
fn bridges(k: usize, evaluated: &[(f64, Candidate)], per_side: usize, value: impl Fn(&Candidate) -> f64) -> Vec<Candidate> {
    let best_of = |moves: Vec<Candidate>| moves.into_iter().map(|c| (value(&c), c)).max_by(|a, b| a.0.total_cmp(&b.0)).map(|(_, c)| c);
    let deeper = evaluated.iter().filter(|(_, c)| c.kept().count() == k + 1).take(per_side).filter_map(|(_, c)| {
        best_of(
            c.kept()
                .map(|i| {
                    let mut d = c.clone();
                    d.layers[i] = None;
                    d
                })
                .collect(),
        )
    });
    let shallower = evaluated.iter().filter(|(_, c)| c.kept().count() + 1 == k).take(per_side).filter_map(|(_, c)| {
        best_of(
            (0..c.layers.len())
                .filter(|&i| c.layers[i].is_none())
                .map(|i| {
                    let mut d = c.clone();
                    d.layers[i] = Some(Choice::BASE);
                    d
                })
                .collect(),
        )
    });
    deeper.chain(shallower).collect()
}

/// Why a candidate was proposed (recorded in the journal, shown in reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Initial,
    WarmStart,
    /// A baseline's removal set (all-base, or one sibling's layers).
    Baseline,
    Random,
    Model,
    Promoted,
    /// A small move from one of the best candidates (the local optimiser).
    Local,
}

impl Origin {
    /// Whether the optimiser itself proposed the candidate (not a warm start or baseline).
    pub fn is_own(self) -> bool {
        !matches!(self, Origin::WarmStart | Origin::Baseline)
    }
}

/// What the optimiser knew when it proposed a candidate, journaled with the trial so that
/// a search's trials can be analysed afterwards (`scripts/trial_analysis.py`): did the
/// surrogate predict well, and how far from the best candidate did the proposals go?
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ProposalNote {
    /// The surrogate's prediction of the guiding objective at the full budget (higher is
    /// better; mean-cost scalarisation only), for candidates the surrogate chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<f64>,
    /// Its standard deviation (over the forest's trees and leaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_sd: Option<f64>,
    /// The best candidate so far (the best mean cost at the highest budget told): a trial
    /// index in the journal; inside the optimiser, a position among the results told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incumbent: Option<usize>,
    /// Layers moved relative to the incumbent (see [`super::moves::distance`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<usize>,
    /// Kept layers of both whose source or merge differs from the incumbent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<usize>,
    /// The evaluated candidate a local move started from (trial index / position, as
    /// `incumbent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<usize>,
}

impl ProposalNote {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One evaluation the optimiser asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub candidate: Candidate,
    pub budget: usize,
    pub origin: Origin,
    /// What the optimiser knew when proposing it (not part of what is evaluated).
    pub note: ProposalNote,
}

struct Observation {
    features: Vec<f64>,
    candidate: Candidate,
    costs: Vec<f64>,
    budget: usize,
}

/// An optimiser over one search space.
pub struct Optimizer<'s> {
    space: &'s SearchSpace,
    cfg: OptimizerConfig,
    tasks: Vec<String>,
    rng: ChaCha8Rng,
    history: Vec<Observation>,
    /// Groups of Hyperband schedules: one group for a single depth, one per depth for a
    /// front (so every depth runs the schedule a dedicated search of its own would, and
    /// gets its share of the full-budget evaluations). A group holds its first schedule and
    /// one more each time every schedule's stage waits for results in flight (so no worker
    /// idles; at most one per evaluation in flight).
    bands: Vec<Vec<Hyperband<Candidate>>>,
    /// Slots handed out per group: the next slot goes to the group with the fewest.
    issued: Vec<usize>,
    /// A front's single-depth spaces, smallest depth first (empty for one depth).
    depth_spaces: Vec<SearchSpace>,
    queue: VecDeque<(Candidate, Origin)>,
    /// Proposals asked for and not told yet, with the (group, schedule) each came from.
    pending: Vec<(Proposal, Option<(usize, usize)>)>,
}

impl<'s> Optimizer<'s> {
    /// `tasks` fixes the order of per-task costs.
    pub fn new(space: &'s SearchSpace, cfg: OptimizerConfig, tasks: Vec<String>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let depth_spaces: Vec<SearchSpace> = if space.is_range() { space.depths().map(|k| space.at_depth(k)).collect() } else { Vec::new() };
        // A front: each depth gets the initial design a dedicated search of that depth would.
        let queue: VecDeque<(Candidate, Origin)> = if space.is_range() {
            depth_spaces.iter().flat_map(|s| initial_design(s, &cfg, &mut rng)).collect()
        } else {
            initial_design(space, &cfg, &mut rng).into()
        };
        let groups = if space.is_range() { depth_spaces.len() } else { 1 };
        let bands: Vec<Vec<Hyperband<Candidate>>> = if cfg.kind == OptimizerKind::Random {
            Vec::new()
        } else {
            (0..groups).map(|_| vec![Hyperband::new(cfg.schedule_budgets(), cfg.eta)]).collect()
        };
        let issued = vec![0; bands.len()];
        Self { space, cfg, tasks, rng, history: Vec::new(), bands, issued, depth_spaces, queue, pending: Vec::new() }
    }

    /// The depth a group of schedules proposes at (`None`: the space's one depth).
    fn group_depth(&self, group: usize) -> Option<usize> {
        self.space.is_range().then(|| self.space.keep + group)
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.cfg
    }

    /// The next evaluation. Proposals may be asked for while earlier ones are in flight
    /// (parallel workers): those are imputed in the surrogate with the worst cost seen (a
    /// constant liar), never proposed again, and a Hyperband stage waiting for them lets a
    /// further schedule start. Asking only after telling the last proposal gives the
    /// sequential search exactly.
    pub fn ask(&mut self) -> Proposal {
        // The local optimiser scores its warm starts at the full budget first, outside the
        // schedule: the best of them is the bar its moves must beat and where they start, so
        // it must not be lost to the noise of a low budget.
        let warm = if self.cfg.kind == OptimizerKind::Local { self.queued_warm() } else { None };
        let (mut p, schedule) = match warm {
            Some((candidate, origin)) => (Proposal { candidate, budget: self.cfg.full_budget(), origin, note: ProposalNote::default() }, None),
            None => {
                let slot = self.issue_slot();
                self.proposal_for(slot)
            }
        };
        if let Some(at) = self.incumbent() {
            let (moved, changed) = super::moves::distance(&p.candidate, &self.history[at].candidate);
            p.note = ProposalNote { incumbent: Some(at), moved: Some(moved), changed: Some(changed), ..p.note };
        }
        self.pending.push((p.clone(), schedule));
        p
    }

    /// The next queued warm start (a baseline's or the reference's candidate) not seen yet;
    /// for a front, of the depth with the fewest proposals so far, so every depth gets its own.
    fn queued_warm(&mut self) -> Option<(Candidate, Origin)> {
        let proposed = |k: usize, opt: &Self| {
            opt.history.iter().filter(|o| o.candidate.kept().count() == k).count()
                + opt.pending.iter().filter(|(p, _)| p.candidate.kept().count() == k).count()
        };
        let warm = |o: &Origin| matches!(o, Origin::Baseline | Origin::WarmStart);
        while let Some(at) = (0..self.queue.len()).filter(|&i| warm(&self.queue[i].1)).min_by_key(|&i| proposed(self.queue[i].0.kept().count(), self))
        {
            let (c, origin) = self.queue.remove(at)?;
            if !self.seen(&c) {
                return Some((c, origin));
            }
        }
        None
    }

    /// [`Optimizer::ask`]'s proposal for a Hyperband slot (`None`: random search).
    fn proposal_for(&mut self, slot: Option<(usize, usize, Slot<Candidate>)>) -> (Proposal, Option<(usize, usize)>) {
        match slot {
            None => {
                let candidate = self.fresh_random(None);
                (Proposal { candidate, budget: self.cfg.full_budget(), origin: Origin::Random, note: ProposalNote::default() }, None)
            }
            Some((g, i, Slot::Promoted(candidate, budget))) => {
                (Proposal { candidate, budget, origin: Origin::Promoted, note: ProposalNote::default() }, Some((g, i)))
            }
            Some((g, i, Slot::New(budget))) => {
                let (candidate, origin, note) = self.new_candidate(self.group_depth(g));
                (Proposal { candidate, budget, origin, note }, Some((g, i)))
            }
        }
    }

    /// The best result told so far: the lowest mean cost at the highest budget told (the
    /// earliest on a tie), as a position in the history.
    fn incumbent(&self) -> Option<usize> {
        let top = self.history.iter().map(|o| o.budget).max()?;
        let mean = |o: &Observation| o.costs.iter().sum::<f64>() / o.costs.len().max(1) as f64;
        (0..self.history.len()).filter(|&i| self.history[i].budget == top).min_by(|&a, &b| mean(&self.history[a]).total_cmp(&mean(&self.history[b])))
    }

    /// Proposals asked for and not yet told.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// A slot from the group with the fewest slots handed out (a front's depths in turn,
    /// smallest first): from its first Hyperband schedule that has one (starting another
    /// when all wait), or `None` for random search.
    fn issue_slot(&mut self) -> Option<(usize, usize, Slot<Candidate>)> {
        let g = (0..self.bands.len()).min_by_key(|&g| self.issued[g])?;
        self.issued[g] += 1;
        let group = &mut self.bands[g];
        for (i, hb) in group.iter_mut().enumerate() {
            if let Some(slot) = hb.issue() {
                return Some((g, i, slot));
            }
        }
        let n = group.len();
        let mut hb = Hyperband::new(self.cfg.schedule_budgets(), self.cfg.eta).starting_at(n);
        let slot = hb.issue().expect("a fresh schedule has a slot");
        group.push(hb);
        Some((g, n, slot))
    }

    /// Record the values of the guiding metric, per task (higher is better), of a proposal
    /// [`Optimizer::ask`] returned (in any order when several are in flight).
    pub fn tell(&mut self, proposal: &Proposal, values: &TaskScores) {
        let at = self.pending.iter().position(|(p, _)| p == proposal);
        debug_assert!(at.is_some(), "tell answers a proposal asked for");
        let schedule = at.and_then(|i| self.pending.remove(i).1);
        let guide = self.cfg.objective.guide;
        // The journal's task order when the metric is per multiple-choice task (as ParEGO's
        // weights were always drawn), else the tasks that carry it (texts).
        let costs: Vec<f64> = if self.tasks.iter().all(|t| values.contains_key(t)) {
            self.tasks.iter().map(|t| objective::cost(guide, values[t])).collect()
        } else {
            values.values().map(|v| objective::cost(guide, *v)).collect()
        };
        let mean = costs.iter().sum::<f64>() / costs.len().max(1) as f64;
        let features = self.features_at(&proposal.candidate, proposal.budget);
        self.history.push(Observation { features, candidate: proposal.candidate.clone(), costs, budget: proposal.budget });
        // A front's schedules hold one depth each: promotion compares candidates of one depth.
        if let Some(hb) = schedule.and_then(|(g, i)| self.bands.get_mut(g).and_then(|group| group.get_mut(i))) {
            hb.tell(proposal.candidate.clone(), mean);
        }
    }

    fn features_at(&self, c: &Candidate, budget: usize) -> Vec<f64> {
        let mut features = self.space.features(c);
        features.push(self.budget_feature(budget));
        features
    }

    fn budget_feature(&self, budget: usize) -> f64 {
        let (lo, hi) = (self.cfg.budgets[0] as f64, self.cfg.full_budget() as f64);
        if hi > lo {
            ((budget as f64).ln() - lo.ln()) / (hi.ln() - lo.ln())
        } else {
            1.0
        }
    }

    /// Evaluated or in flight.
    fn seen(&self, c: &Candidate) -> bool {
        self.history.iter().any(|o| o.candidate == *c) || self.pending.iter().any(|(p, _)| p.candidate == *c)
    }

    /// An unseen random candidate (at `depth`, or anywhere in the space for `None`).
    fn fresh_random(&mut self, depth: Option<usize>) -> Candidate {
        let mut c = sampler(self.space, &self.depth_spaces, depth).sample(&mut self.rng);
        for _ in 0..100 {
            if !self.seen(&c) {
                break;
            }
            c = sampler(self.space, &self.depth_spaces, depth).sample(&mut self.rng);
        }
        c
    }

    /// The next queued candidate (of `depth` when given) not seen yet; seen ones are dropped.
    fn queued(&mut self, depth: Option<usize>) -> Option<(Candidate, Origin)> {
        loop {
            let at = match depth {
                None => 0,
                Some(k) => self.queue.iter().position(|(c, _)| c.kept().count() == k)?,
            };
            let (c, origin) = self.queue.remove(at)?;
            if !self.seen(&c) {
                return Some((c, origin));
            }
        }
    }

    fn new_candidate(&mut self, depth: Option<usize>) -> (Candidate, Origin, ProposalNote) {
        let none = ProposalNote::default();
        if let Some((c, origin)) = self.queued(depth) {
            return (c, origin, none);
        }
        if self.history.len() < 2 || self.rng.random::<f64>() < self.cfg.random_fraction {
            return (self.fresh_random(depth), Origin::Random, none);
        }
        let found = if self.cfg.kind == OptimizerKind::Local {
            self.local_proposal(depth).map(|(c, m, v, parent)| (c, Origin::Local, m, v, Some(parent)))
        } else {
            self.maximise_acquisition(depth).map(|(c, m, v)| (c, Origin::Model, m, v, None))
        };
        match found {
            Some((c, origin, m, v, parent)) => {
                let (predicted, predicted_sd) = self.predicted_value(m, v).unzip();
                (c, origin, ProposalNote { predicted, predicted_sd, parent, ..none })
            }
            None => (self.fresh_random(depth), Origin::Random, none),
        }
    }

    /// The guiding objective's value (and its standard deviation) the surrogate's
    /// prediction `(mean, variance)` of a target stands for; `None` for ParEGO, whose
    /// targets mix the tasks with random weights.
    fn predicted_value(&self, mean: f64, var: f64) -> Option<(f64, f64)> {
        if !matches!(self.cfg.scalarization, Scalarization::Mean) {
            return None;
        }
        let guide = self.cfg.objective.guide;
        // Log-scaled targets: ln(cost + 1e-3); the deviation by the delta method.
        let (cost, sd) = if objective::log_scaled(guide) { (mean.exp() - 1e-3, mean.exp() * var.sqrt()) } else { (mean, var.sqrt()) };
        let value = match guide {
            Metric::Acc | Metric::AccNorm => 1.0 - cost,
            _ => -cost,
        };
        Some((value, sd))
    }

    /// Surrogate targets: scalarised costs, log-scaled (as SMAC's HPO facade) so the
    /// model resolves differences among good candidates.
    fn targets(&mut self) -> Vec<f64> {
        // Costs per task: the multiple-choice tasks, or the texts for the ppl metric.
        let t = self.history.first().map_or(self.tasks.len(), |o| o.costs.len());
        let scalar: Vec<f64> = match self.cfg.scalarization {
            Scalarization::Mean => self.history.iter().map(|o| o.costs.iter().sum::<f64>() / t.max(1) as f64).collect(),
            Scalarization::Parego { rho } => {
                let mut lo = vec![f64::INFINITY; t];
                let mut hi = vec![f64::NEG_INFINITY; t];
                for o in &self.history {
                    for (k, c) in o.costs.iter().enumerate() {
                        lo[k] = lo[k].min(*c);
                        hi[k] = hi[k].max(*c);
                    }
                }
                // θ uniform on the simplex: normalised exponentials.
                let raw: Vec<f64> = (0..t).map(|_| -(1.0 - self.rng.random::<f64>()).ln()).collect();
                let sum: f64 = raw.iter().sum();
                let theta: Vec<f64> = raw.iter().map(|x| x / sum).collect();
                self.history
                    .iter()
                    .map(|o| {
                        let norm: Vec<f64> =
                            o.costs.iter().enumerate().map(|(k, c)| if hi[k] > lo[k] { (c - lo[k]) / (hi[k] - lo[k]) } else { 0.0 }).collect();
                        let max = norm.iter().zip(&theta).map(|(c, w)| c * w).fold(0.0, f64::max);
                        let lin: f64 = norm.iter().zip(&theta).map(|(c, w)| c * w).sum();
                        max + rho * lin
                    })
                    .collect()
            }
        };
        if objective::log_scaled(self.cfg.objective.guide) {
            scalar.into_iter().map(|s| (s + 1e-3).ln()).collect()
        } else {
            scalar
        }
    }

    /// The unevaluated candidate (at `depth` for a front) with the highest expected
    /// improvement at the full budget, among random samples and the ends of hill climbs
    /// started from the best candidates (for a front: of that depth, and one layer away
    /// from the best of the neighbouring depths; see [`bridges`]).
    /// The surrogate fitted to every result told, proposals in flight included.
    fn surrogate(&mut self) -> Forest {
        let mut y = self.targets();
        let mut x: Vec<Vec<f64>> = self.history.iter().map(|o| o.features.clone()).collect();
        // Constant liar: proposals in flight count as the worst cost seen, so the next
        // proposal looks elsewhere instead of where a pending one already looks.
        let lie = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        for (p, _) in &self.pending {
            x.push(self.features_at(&p.candidate, p.budget));
            y.push(lie);
        }
        let params = ForestParams { trees: self.cfg.trees, ..ForestParams::default() };
        Forest::fit(&x, &y, params, &mut self.rng)
    }

    /// The local optimiser's proposal: among small moves ([`super::moves::local_move`],
    /// one to three steps) from the best few evaluated candidates of the depth, the unseen
    /// one of highest expected improvement at the full budget; with its predicted target
    /// (mean, variance) and the parent's position in the history.
    ///
    /// Parents are the incumbent (the best result at the highest budget told) and the best
    /// candidates by the surrogate's full-budget prediction, so a candidate that did well at
    /// a low budget is searched around before Hyperband promotes it. A front's depth without
    /// an evaluated candidate starts from its bridges to the neighbouring depths.
    fn local_proposal(&mut self, depth: Option<usize>) -> Option<(Candidate, f64, f64, usize)> {
        const PARENTS: usize = 4;
        const MOVES: usize = 96;
        let forest = self.surrogate();
        let full = self.budget_feature(self.cfg.full_budget());
        let space = self.space;
        let predict = |c: &Candidate| {
            let mut f = space.features(c);
            f.push(full);
            forest.predict(&f)
        };
        let at_depth = |c: &Candidate| depth.is_none_or(|k| c.kept().count() == k);
        // Distinct evaluated candidates, best predicted first, with their first position.
        let mut evaluated: Vec<(f64, usize)> = Vec::new();
        for (i, o) in self.history.iter().enumerate() {
            if !evaluated.iter().any(|&(_, j)| self.history[j].candidate == o.candidate) {
                evaluated.push((predict(&o.candidate).0, i));
            }
        }
        evaluated.sort_by(|a, b| a.0.total_cmp(&b.0));
        let incumbent = depth.map_or(self.incumbent(), |k| {
            let top = self.history.iter().filter(|o| o.candidate.kept().count() == k).map(|o| o.budget).max();
            let mean = |o: &Observation| o.costs.iter().sum::<f64>() / o.costs.len().max(1) as f64;
            (0..self.history.len())
                .filter(|&i| Some(self.history[i].budget) == top && self.history[i].candidate.kept().count() == k)
                .min_by(|&a, &b| mean(&self.history[a]).total_cmp(&mean(&self.history[b])))
        });
        let mut parents: Vec<(Candidate, usize)> = Vec::new();
        let first_of = |c: &Candidate| self.history.iter().position(|o| o.candidate == *c).expect("evaluated");
        for i in incumbent.into_iter().chain(evaluated.iter().map(|&(_, i)| i)) {
            let c = &self.history[i].candidate;
            if parents.len() < PARENTS && at_depth(c) && !parents.iter().any(|(p, _)| p == c) {
                parents.push((c.clone(), first_of(c)));
            }
        }
        if let (Some(k), true) = (depth, parents.is_empty()) {
            let ranked: Vec<(f64, Candidate)> = evaluated.iter().map(|&(m, i)| (m, self.history[i].candidate.clone())).collect();
            for b in bridges(k, &ranked, 2, |c| -predict(c).0) {
                let from = ranked.iter().find(|(_, c)| super::moves::distance(c, &b).0 <= 1).map_or(0, |(_, c)| first_of(c));
                parents.push((b, from));
            }
        }
        if parents.is_empty() {
            return None;
        }
        // Improvement over the best predicted value of the depth.
        let best = evaluated.iter().find(|&&(_, i)| at_depth(&self.history[i].candidate)).or(evaluated.last()).map(|&(m, _)| m)?;
        let sampler = sampler(space, &self.depth_spaces, depth);
        let (history, pending) = (&self.history, &self.pending);
        let seen = |c: &Candidate| history.iter().any(|o| o.candidate == *c) || pending.iter().any(|(p, _)| p.candidate == *c);
        let rng = &mut self.rng;
        let mut top: Option<(f64, Candidate, usize)> = None;
        for n in 0..MOVES {
            // The incumbent (first) gets half the moves, the other parents share the rest.
            let (parent, from) = if n % 2 == 0 { &parents[0] } else { &parents[(n / 2) % parents.len()] };
            let steps = 1 + usize::from(rng.random_bool(0.3)) + usize::from(rng.random_bool(0.1));
            let mut c = parent.clone();
            for _ in 0..steps {
                c = super::moves::local_move(sampler, &c, rng);
            }
            if seen(&c) {
                continue;
            }
            let (m, v) = predict(&c);
            let e = expected_improvement(m, v, best);
            if top.as_ref().is_none_or(|(s, _, _)| e > *s) {
                top = Some((e, c, *from));
            }
        }
        let (_, c, from) = top?;
        let (m, v) = predict(&c);
        Some((c, m, v, from))
    }

    fn maximise_acquisition(&mut self, depth: Option<usize>) -> Option<(Candidate, f64, f64)> {
        let forest = self.surrogate();
        let full = self.budget_feature(self.cfg.full_budget());
        let space = self.space;
        let predict = |c: &Candidate| {
            let mut f = space.features(c);
            f.push(full);
            forest.predict(&f)
        };
        // Incumbent: the best predicted full-budget value among evaluated candidates.
        let mut evaluated: Vec<(f64, Candidate)> = Vec::new();
        for o in &self.history {
            if !evaluated.iter().any(|(_, c)| *c == o.candidate) {
                evaluated.push((predict(&o.candidate).0, o.candidate.clone()));
            }
        }
        evaluated.sort_by(|a, b| a.0.total_cmp(&b.0));
        let best = evaluated.first().map(|(m, _)| *m)?;
        // A front: improvement is measured against the incumbent of the depth proposed at
        // (the worst evaluated value where the depth has none yet), and candidates come
        // from that depth's space, whose moves keep the depth.
        let sampler = sampler(space, &self.depth_spaces, depth);
        let incumbent = match depth {
            None => best,
            Some(k) => evaluated.iter().find(|(_, c)| c.kept().count() == k).or(evaluated.last()).map_or(best, |(m, _)| *m),
        };
        let ei = |c: &Candidate| {
            let (m, v) = predict(c);
            expected_improvement(m, v, incumbent)
        };
        let mut top: Option<(f64, Candidate)> = None;
        let mut consider = |score: f64, c: &Candidate, seen: &dyn Fn(&Candidate) -> bool| {
            if top.as_ref().is_none_or(|(s, _)| score > *s) && !seen(c) {
                top = Some((score, c.clone()));
            }
        };
        let (history, pending) = (&self.history, &self.pending);
        let seen = |c: &Candidate| history.iter().any(|o| o.candidate == *c) || pending.iter().any(|(p, _)| p.candidate == *c);
        let rng = &mut self.rng;
        let mut randoms: Vec<(f64, Candidate)> = (0..self.cfg.acquisition_samples)
            .map(|_| {
                let c = sampler.sample(rng);
                (ei(&c), c)
            })
            .collect();
        for (s, c) in &randoms {
            consider(*s, c, &seen);
        }
        randoms.sort_by(|a, b| b.0.total_cmp(&a.0));
        // Hill climbs start from the best evaluated candidates (of the depth, for a front,
        // and from its bridges to the neighbouring depths) and from the best random samples.
        let firsts: Vec<Candidate> = match depth {
            None => evaluated.iter().map(|(_, c)| c.clone()).take(self.cfg.local_searches.div_ceil(2)).collect(),
            Some(k) => evaluated
                .iter()
                .filter(|(_, c)| c.kept().count() == k)
                .map(|(_, c)| c.clone())
                .take(self.cfg.local_searches.div_ceil(2))
                .chain(bridges(k, &evaluated, 2, |c| -predict(c).0))
                .collect(),
        };
        let starts: Vec<Candidate> = firsts.into_iter().chain(randoms.iter().map(|(_, c)| c.clone()).take(self.cfg.local_searches / 2)).collect();
        for start in starts {
            let mut cur = start;
            let mut cur_ei = ei(&cur);
            for _ in 0..30 {
                let mut improved = false;
                for _ in 0..20 {
                    let n = sampler.neighbour(&cur, rng);
                    let e = ei(&n);
                    if e > cur_ei {
                        cur = n;
                        cur_ei = e;
                        improved = true;
                        break;
                    }
                }
                if !improved {
                    break;
                }
            }
            consider(cur_ei, &cur, &seen);
        }
        top.map(|(_, c)| {
            let (m, v) = predict(&c);
            (c, m, v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{mean_score, Scorer};
    use crate::search::space::SpaceOptions;
    use crate::testkit::synthetic::SyntheticScorer;
    use crate::testkit::template;

    /// `trials` sequential trials (ask, score, tell): each trial's candidate and budget.
    fn drive(space: &SearchSpace, scorer: &mut SyntheticScorer, cfg: &OptimizerConfig, trials: usize) -> Vec<(Candidate, usize, f64)> {
        let mut opt = Optimizer::new(space, cfg.clone(), scorer.task_names());
        (0..trials)
            .map(|_| {
                let p = opt.ask();
                let scores = scorer.score(&space.to_recipe(&p.candidate), p.budget).expect("in the space");
                opt.tell(&p, &scores);
                (p.candidate, p.budget, mean_score(&scores))
            })
            .collect()
    }

    /// The exact mean accuracy of the choice at depth `k`: the best observed mean among
    /// that depth's trials at the highest budget they reached (as `select::front`).
    fn chosen_at(scorer: &SyntheticScorer, trials: &[(Candidate, usize, f64)], k: usize) -> f64 {
        let at: Vec<&(Candidate, usize, f64)> = trials.iter().filter(|t| t.0.kept().count() == k).collect();
        let top = at.iter().map(|t| t.1).max().expect("the depth was tried");
        let best = at.iter().filter(|t| t.1 == top).max_by(|a, b| a.2.total_cmp(&b.2)).expect("one at the top budget");
        scorer.exact_mean(&best.0)
    }

    fn front_space() -> SearchSpace {
        SearchSpace::with_depths(template(10, 3), 5, 8, SpaceOptions::default()).unwrap()
    }

    #[test]
    fn every_depth_of_a_front_runs_the_schedule_of_a_dedicated_search() {
        let space = front_space();
        let mut scorer = SyntheticScorer::new(&space, 2, 1000, 7);
        let cfg = OptimizerConfig::new(OptimizerKind::Bo, 3);
        let front = drive(&space, &mut scorer, &cfg, 120);
        for k in space.depths() {
            let budgets: Vec<usize> = front.iter().filter(|t| t.0.kept().count() == k).map(|t| t.1).collect();
            let dedicated: Vec<usize> = drive(&space.at_depth(k), &mut scorer, &cfg, 30).into_iter().map(|t| t.1).collect();
            assert_eq!(budgets, dedicated, "depth {k}: the front's budgets differ from a dedicated 30-trial search's");
            let full = budgets.iter().filter(|&&b| b == cfg.full_budget()).count();
            assert!(full >= 5, "depth {k}: {full} full-budget evaluations of {}", budgets.len());
        }
    }

    #[test]
    fn a_front_is_as_good_as_dedicated_searches_at_every_depth_over_seeds() {
        let space = front_space();
        let seeds = 6;
        let mut regret = [[0.0f64; 2]; 4];
        for seed in 0..seeds {
            let mut scorer = SyntheticScorer::new(&space, 2, 1000, 60 + seed);
            let cfg = OptimizerConfig::new(OptimizerKind::Bo, seed);
            let front = drive(&space, &mut scorer, &cfg, 120);
            for (d, k) in space.depths().enumerate() {
                let optimum = scorer.optimum_at(k).1;
                let dedicated = drive(&space.at_depth(k), &mut scorer, &cfg, 30);
                regret[d][0] += optimum - chosen_at(&scorer, &front, k);
                regret[d][1] += optimum - chosen_at(&scorer, &dedicated, k);
            }
        }
        // Each depth within a point of its dedicated search's regret, and no worse over the range.
        for (d, k) in space.depths().enumerate() {
            let [front, dedicated] = regret[d].map(|r| r / seeds as f64);
            eprintln!("depth {k}: mean regret front {front:.4}, dedicated {dedicated:.4}");
            assert!(front <= dedicated + 0.01, "depth {k}: the front's regret {front:.4} exceeds the dedicated searches' {dedicated:.4}");
        }
        let [front, dedicated] = [0, 1].map(|i| regret.iter().map(|r| r[i]).sum::<f64>());
        assert!(front <= dedicated, "over the range: front {front:.4}, dedicated {dedicated:.4}");
    }

    #[test]
    fn a_single_depth_space_proposes_as_before() {
        // The proposals of a single-depth search are pinned: the front's per-depth
        // schedules and bridges must not change them (the first 40 trials of seed 5).
        let space = SearchSpace::new(template(8, 2), 6, SpaceOptions::default()).unwrap();
        let mut scorer = SyntheticScorer::new(&space, 2, 1000, 2);
        let mut cfg = OptimizerConfig::new(OptimizerKind::Bo, 5);
        cfg.warm_removals = vec![vec![2, 5]];
        let trials = drive(&space, &mut scorer, &cfg, 40);
        let digest = trials.iter().map(|(c, b, _)| format!("{}@{b}", space.to_recipe(c).to_json())).collect::<Vec<_>>().join("\n");
        let hex: String = <sha2::Sha256 as sha2::Digest>::digest(digest.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex, "8f59e41842c8548aecc837ab874d0aa009795380da8b4723f82eaf909f850560",
            "pinned when the siblings' average joined the baselines' warm starts (the front's per-depth schedules had left the earlier pin unchanged)"
        );
    }

    #[test]
    fn a_guide_that_reads_no_item_budget_runs_every_trial_at_the_full_budget() {
        let space = SearchSpace::new(template(8, 2), 6, SpaceOptions::default()).unwrap();
        let mut scorer = SyntheticScorer::new(&space, 2, 1000, 2);
        // The synthetic accuracies, shifted to log-likelihoods (≤ 0) as `ppl` reports them.
        let mut budgets_of = |cfg: &OptimizerConfig| -> Vec<usize> {
            let mut opt = Optimizer::new(&space, cfg.clone(), scorer.task_names());
            (0..30)
                .map(|_| {
                    let p = opt.ask();
                    let scores = scorer.score(&space.to_recipe(&p.candidate), p.budget).expect("in the space");
                    opt.tell(&p, &scores.into_iter().map(|(t, v)| (t, v - 1.0)).collect());
                    p.budget
                })
                .collect()
        };
        for kind in [OptimizerKind::Bo, OptimizerKind::Local] {
            let mut cfg = OptimizerConfig::new(kind, 5);
            cfg.budgets = vec![111, 333, 1000];
            cfg.objective = Objective::of(Metric::Ppl);
            let budgets = budgets_of(&cfg);
            assert!(budgets.iter().all(|&b| b == 1000), "{kind:?}, ppl: {budgets:?}");
            // A budget-dependent guide keeps Hyperband's rungs.
            cfg.objective = Objective::of(Metric::Loglik);
            let budgets = budgets_of(&cfg);
            assert!(budgets.contains(&111), "{kind:?}, loglik: {budgets:?}");
            // A journal written before the setting (the field absent) runs every rung, as it did.
            cfg.objective = Objective::of(Metric::Ppl);
            let mut json = serde_json::to_value(&cfg).unwrap();
            assert_eq!(json["skip_budget_free_rungs"], serde_json::Value::Bool(true));
            json.as_object_mut().unwrap().remove("skip_budget_free_rungs");
            let old: OptimizerConfig = serde_json::from_value(json).unwrap();
            assert!(!old.skip_budget_free_rungs);
            let budgets = budgets_of(&old);
            assert!(budgets.contains(&111), "{kind:?}, ppl, old journal: {budgets:?}");
        }
    }
}

#[cfg(test)]
mod local_tests {
    use super::*;
    use crate::score::{mean_score, Scorer};
    use crate::search::space::SpaceOptions;
    use crate::testkit::synthetic::SyntheticScorer;
    use crate::testkit::template;

    /// The optimum's removal set with `swaps` removed layers exchanged for a kept neighbour:
    /// what a good one-shot pruning rule finds (near, not at, the best removal set).
    fn near_optimal_removal(scorer: &SyntheticScorer, swaps: usize) -> Vec<usize> {
        let opt = scorer.optimum().0;
        let mut c = opt.clone();
        let mut done = 0;
        for r in 1..c.layers.len() {
            if done == swaps {
                break;
            }
            if c.layers[r].is_none() && opt.layers[r - 1].is_some() && c.layers[r - 1].is_some() {
                c.layers[r] = c.layers[r - 1];
                c.layers[r - 1] = None;
                done += 1;
            }
        }
        (0..c.layers.len()).filter(|&i| c.layers[i].is_none()).collect()
    }

    /// Regret of the candidate chosen (best at the highest budget reached), and how many
    /// trials beat the best warm start at the full budget.
    fn run(space: &SearchSpace, scorer: &mut SyntheticScorer, cfg: &OptimizerConfig, trials: usize) -> (f64, usize) {
        let mut opt = Optimizer::new(space, cfg.clone(), scorer.task_names());
        let mut out = Vec::new();
        for _ in 0..trials {
            let p = opt.ask();
            let scores = scorer.score(&space.to_recipe(&p.candidate), p.budget).expect("in the space");
            opt.tell(&p, &scores);
            out.push((p.candidate, p.budget, mean_score(&scores), p.origin));
        }
        let top = out.iter().map(|t| t.1).max().expect("trials");
        let best = out.iter().filter(|t| t.1 == top).max_by(|a, b| a.2.total_cmp(&b.2)).expect("one");
        let warm: Vec<f64> = baseline_warm_start(space, &cfg.warm_removals).iter().map(|c| scorer.exact_mean(c)).collect();
        let warm_best = warm.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let beat = out.iter().filter(|t| t.3.is_own() && scorer.exact_mean(&t.0) > warm_best).count();
        (scorer.optimum().1 - scorer.exact_mean(&best.0), beat)
    }

    #[test]
    fn local_search_beats_bo_and_random_search_from_a_strong_warm_start() {
        let space = SearchSpace::new(template(16, 3), 12, SpaceOptions::default()).unwrap();
        let seeds = 10;
        let kinds = [OptimizerKind::Local, OptimizerKind::Bo, OptimizerKind::Random];
        let mut regret = [0.0f64; 3];
        let mut wins = [0usize; 2];
        for seed in 0..seeds {
            let mut r = [0.0; 3];
            for (i, kind) in kinds.into_iter().enumerate() {
                let mut scorer = SyntheticScorer::new(&space, 2, 1000, 100 + seed);
                let mut cfg = OptimizerConfig::new(kind, seed);
                cfg.warm_removals = vec![near_optimal_removal(&scorer, 1), near_optimal_removal(&scorer, 2)];
                let (g, beat) = run(&space, &mut scorer, &cfg, 60);
                r[i] = g;
                eprintln!("seed {seed} {}: regret {g:.4}, {beat} trials beat the best warm start", kind.name());
            }
            for i in 0..3 {
                regret[i] += r[i] / seeds as f64;
            }
            wins[0] += usize::from(r[0] < r[1]);
            wins[1] += usize::from(r[0] < r[2]);
        }
        eprintln!("mean regret: local {:.4}, bo {:.4}, random {:.4}; local wins {wins:?} of {seeds}", regret[0], regret[1], regret[2]);
        // Measured: mean regret local 0.089, bo 0.106, random 0.149; local beat bo at 9 of
        // the 10 seeds and random search at all 10.
        assert!(regret[0] < 0.9 * regret[1] && regret[0] < 0.65 * regret[2], "{regret:?}");
        assert!(wins[0] >= 7 && wins[1] >= 9, "{wins:?}");
    }
}
