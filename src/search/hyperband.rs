//! Hyperband (Li et al. 2018) over item budgets: brackets of successive halving, cycling
//! from the most aggressive bracket (many candidates at the smallest budget) to the most
//! conservative (few candidates at the full budget). Candidates promoted to the next
//! stage are the best by mean task cost at the current stage's budget; they run in an
//! order that keeps candidates sharing leading layers next to each other, so the states an
//! evaluator caches for a prefix are reused before a bounded cache lets them go.

use std::collections::VecDeque;

/// The shape of one bracket: how many candidates run at which budget, stage by stage.
#[derive(Debug, Clone, PartialEq)]
pub struct BracketPlan {
    pub stages: Vec<(usize, usize)>,
}

/// The brackets of one Hyperband iteration for increasing `budgets` and rate `eta`.
/// With budgets 111/333/1000 and η = 3: 9→3→1, 5→1, 3 (22 evaluations).
pub fn brackets(budgets: &[usize], eta: usize) -> Vec<BracketPlan> {
    let m = budgets.len();
    let s_max = m - 1;
    (0..m)
        .rev()
        .map(|s| {
            let n = ((s_max + 1) as f64 / (s + 1) as f64 * (eta as f64).powi(s as i32)).ceil() as usize;
            let stages = (0..=s).map(|i| ((n / eta.pow(i as u32)).max(1), budgets[m - 1 - s + i])).collect();
            BracketPlan { stages }
        })
        .collect()
}

/// Where the schedule stands, and what the next evaluation must be.
#[derive(Debug, Clone)]
pub struct Hyperband<C> {
    plans: Vec<BracketPlan>,
    bracket: usize,
    stage: usize,
    /// Candidates of the current stage evaluated so far with their mean cost.
    done: Vec<(C, f64)>,
    /// Candidates promoted into the current stage, in the order they run.
    promoted: Vec<C>,
    /// Evaluations of the current stage handed out so far (finished or in flight).
    issued: usize,
    /// Leading layers two candidates have in common (see [`order_for_sharing`]).
    shared: fn(&C, &C) -> usize,
}

/// `items` reordered for prefix sharing: the first stays first, then repeatedly the
/// remaining item sharing the longest prefix with the one before it (ties keep the given
/// order), which walks the candidates' prefix tree depth first.
pub fn order_for_sharing<C>(items: Vec<C>, shared: impl Fn(&C, &C) -> usize) -> Vec<C> {
    let mut rest: VecDeque<C> = items.into();
    let mut out: Vec<C> = Vec::with_capacity(rest.len());
    while let Some(next) = match out.last() {
        None => rest.pop_front(),
        Some(last) => {
            let best = (0..rest.len()).max_by(|&a, &b| shared(last, &rest[a]).cmp(&shared(last, &rest[b])).then(b.cmp(&a)));
            best.and_then(|i| rest.remove(i))
        }
    } {
        out.push(next);
    }
    out
}

/// The next evaluation Hyperband wants.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot<C> {
    /// A new candidate (from the optimizer) at this budget.
    New(usize),
    /// Re-evaluate this promoted candidate at this budget.
    Promoted(C, usize),
}

impl<C: Clone> Hyperband<C> {
    pub fn new(budgets: &[usize], eta: usize) -> Self {
        Self { plans: brackets(budgets, eta), bracket: 0, stage: 0, done: Vec::new(), promoted: Vec::new(), issued: 0, shared: |_, _| 0 }
    }

    /// Start the cycle at `bracket` (modulo the number of brackets): the schedules that run
    /// alongside the first one while its stage waits for results in flight begin elsewhere
    /// in the cycle, so all brackets keep running.
    pub fn starting_at(self, bracket: usize) -> Self {
        let bracket = bracket % self.plans.len();
        Self { bracket, ..self }
    }

    /// Order each stage's promoted candidates by the prefixes `shared` says they share.
    pub fn with_sharing(self, shared: fn(&C, &C) -> usize) -> Self {
        Self { shared, ..self }
    }

    fn plan(&self) -> (usize, usize) {
        self.plans[self.bracket].stages[self.stage]
    }

    /// Hand out the next evaluation of the current stage, or `None` when every evaluation of
    /// the stage is out and the stage waits for results in flight (successive halving
    /// promotes only on a complete stage). With one evaluation in flight at a time (`tell`
    /// before the next `issue`) it never waits.
    pub fn issue(&mut self) -> Option<Slot<C>> {
        let (count, budget) = self.plan();
        if self.issued >= count {
            return None;
        }
        let slot = match self.promoted.get(self.issued) {
            Some(c) => Slot::Promoted(c.clone(), budget),
            None => Slot::New(budget),
        };
        self.issued += 1;
        Some(slot)
    }

    /// Record the result of a slot `issue` handed out (results of one stage may come in any
    /// order); advances stages and brackets.
    pub fn tell(&mut self, candidate: C, mean_cost: f64) {
        self.done.push((candidate, mean_cost));
        let (count, _) = self.plan();
        if self.done.len() < count {
            return;
        }
        let stages = self.plans[self.bracket].stages.len();
        if self.stage + 1 < stages {
            let (next_count, _) = self.plans[self.bracket].stages[self.stage + 1];
            // A NaN cost (of either sign: x86 makes negative ones, which `total_cmp` puts
            // before every number) is never promoted; the stage then takes new candidates.
            let mut ranked: Vec<(usize, f64)> = self.done.iter().enumerate().map(|(i, (_, c))| (i, *c)).filter(|(_, c)| !c.is_nan()).collect();
            // Stable: ties keep the order of evaluation.
            ranked.sort_by(|a, b| a.1.partial_cmp(&b.1).expect("NaN filtered out"));
            let best: Vec<C> = ranked.iter().take(next_count).map(|(i, _)| self.done[*i].0.clone()).collect();
            // The best first (a search stopped mid-stage has evaluated it), then by shared prefixes.
            self.promoted = order_for_sharing(best, self.shared);
            self.stage += 1;
        } else {
            self.bracket = (self.bracket + 1) % self.plans.len();
            self.stage = 0;
            self.promoted.clear();
        }
        self.done.clear();
        self.issued = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_budgets_give_the_classic_brackets() {
        let b = brackets(&[111, 333, 1000], 3);
        assert_eq!(b[0].stages, vec![(9, 111), (3, 333), (1, 1000)]);
        assert_eq!(b[1].stages, vec![(5, 333), (1, 1000)]);
        assert_eq!(b[2].stages, vec![(3, 1000)]);
        assert_eq!(brackets(&[1000], 3)[0].stages, vec![(1, 1000)]);
    }

    /// Feed `(candidate, cost)` pairs, checking each slot asked for first.
    fn run(hb: &mut Hyperband<u32>, want: &[Slot<u32>], costs: &[(u32, f64)]) {
        assert_eq!(want.len(), costs.len());
        for (w, (c, cost)) in want.iter().zip(costs) {
            assert_eq!(hb.issue().as_ref(), Some(w));
            hb.tell(*c, *cost);
        }
    }

    #[test]
    fn nine_three_one_promotes_the_best_in_order_stably_and_never_nan() {
        let mut hb: Hyperband<u32> = Hyperband::new(&[111, 333, 1000], 3);
        // Runtime NaNs: x86's default NaN (0/0) is negative.
        let zero = std::hint::black_box(0.0f64);
        let neg_nan = zero / zero;
        // Stage 1: 9 new candidates at 111 items; 0.3 three times, two NaNs of either sign.
        let costs = [(0, 0.5), (1, 0.3), (2, 0.3), (3, 0.9), (4, f64::NAN), (5, 0.1), (6, neg_nan), (7, 0.3), (8, -f64::NAN)];
        run(&mut hb, &vec![Slot::New(111); 9], &costs);
        // Stage 2: the best 3 at 333, best first, ties in evaluation order (1, 2 before 7).
        run(&mut hb, &[Slot::Promoted(5, 333), Slot::Promoted(1, 333), Slot::Promoted(2, 333)], &[(5, 0.4), (1, 0.2), (2, 0.2)]);
        // Stage 3: the best of those (1 ties with 2 and was evaluated first) at 1000.
        run(&mut hb, &[Slot::Promoted(1, 1000)], &[(1, 0.25)]);
        // Bracket 2: 5 new at 333, best one at 1000.
        run(&mut hb, &vec![Slot::New(333); 5], &[(10, 0.6), (11, neg_nan), (12, 0.5), (13, 0.5), (14, 0.7)]);
        run(&mut hb, &[Slot::Promoted(12, 1000)], &[(12, 0.5)]);
        // Bracket 3: 3 new at the full budget, then back to the first bracket.
        run(&mut hb, &vec![Slot::New(1000); 3], &[(20, 0.1), (21, 0.2), (22, 0.3)]);
        assert_eq!(hb.issue(), Some(Slot::New(111)));
    }

    #[test]
    fn a_stage_of_nans_promotes_nothing_and_fills_with_new_candidates() {
        let mut hb: Hyperband<u32> = Hyperband::new(&[10, 30], 3);
        // 3 at 10 items, one promoted: all NaN, so the 30-item stage takes a new candidate.
        run(&mut hb, &vec![Slot::New(10); 3], &[(0, f64::NAN), (1, -f64::NAN), (2, f64::NAN)]);
        run(&mut hb, &[Slot::New(30)], &[(3, 0.5)]);
        // One NaN among numbers: the number is promoted.
        run(&mut hb, &vec![Slot::New(30); 2], &[(4, 0.5), (5, 0.4)]);
        run(&mut hb, &vec![Slot::New(10); 3], &[(6, -f64::NAN), (7, 0.8), (8, f64::NAN)]);
        assert_eq!(hb.issue(), Some(Slot::Promoted(7, 30)));
    }

    #[test]
    fn promoted_candidates_run_in_prefix_sharing_order() {
        // Candidates are strings; the shared prefix is the common leading characters.
        fn shared(a: &&'static str, b: &&'static str) -> usize {
            a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
        }
        assert_eq!(order_for_sharing(vec!["abc", "xyz", "abd", "xya", "ab"], shared), vec!["abc", "abd", "ab", "xyz", "xya"]);
        let mut hb: Hyperband<&'static str> = Hyperband::new(&[1, 3], 3).with_sharing(shared);
        hb.plans = vec![BracketPlan { stages: vec![(4, 1), (3, 3)] }];
        for (c, cost) in [("pq", 0.1), ("ab", 0.2), ("pr", 0.3), ("zz", 0.9)] {
            hb.tell(c, cost);
        }
        let mut order = Vec::new();
        while let Some(Slot::Promoted(c, 3)) = hb.issue() {
            order.push(c);
            hb.tell(c, 0.0);
        }
        assert_eq!(order, vec!["pq", "pr", "ab"]);
    }

    #[test]
    fn promotes_the_best_and_cycles() {
        let mut hb: Hyperband<u32> = Hyperband::new(&[1, 3], 3);
        // Bracket 0: 3 new at budget 1, best 1 promoted to budget 3.
        for (c, cost) in [(10, 0.5), (11, 0.2), (12, 0.9)] {
            assert_eq!(hb.issue(), Some(Slot::New(1)));
            hb.tell(c, cost);
        }
        assert_eq!(hb.issue(), Some(Slot::Promoted(11, 3)));
        hb.tell(11, 0.3);
        // Bracket 1: 2 new at budget 3, then back to bracket 0.
        assert_eq!(hb.issue(), Some(Slot::New(3)));
        hb.tell(20, 0.1);
        assert_eq!(hb.issue(), Some(Slot::New(3)));
        hb.tell(21, 0.1);
        assert_eq!(hb.issue(), Some(Slot::New(1)));
    }

    #[test]
    fn a_stage_waits_for_its_results_in_flight_then_promotes_from_all_of_them() {
        let mut hb: Hyperband<u32> = Hyperband::new(&[1, 3], 3);
        // All three evaluations of the first stage go out before any result.
        assert_eq!((hb.issue(), hb.issue(), hb.issue()), (Some(Slot::New(1)), Some(Slot::New(1)), Some(Slot::New(1))));
        assert_eq!(hb.issue(), None, "the stage is out; promotion needs its results");
        // Results in any order; the best of all three is promoted.
        hb.tell(12, 0.9);
        assert_eq!(hb.issue(), None);
        hb.tell(10, 0.1);
        hb.tell(11, 0.5);
        assert_eq!(hb.issue(), Some(Slot::Promoted(10, 3)));
        assert_eq!(hb.issue(), None);
        // A second schedule started elsewhere in the cycle runs meanwhile.
        let mut other: Hyperband<u32> = Hyperband::new(&[1, 3], 3).starting_at(1);
        assert_eq!(other.issue(), Some(Slot::New(3)));
    }
}
