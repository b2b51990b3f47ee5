//! Small moves near a candidate, for the local optimiser ([`OptimizerKind::Local`]), and
//! the distance between two candidates that the journal records for each proposal.
//!
//! [`SearchSpace::neighbour`] moves a kept layer to any removed position and draws new
//! sources at random; on a real family a good candidate (a baseline's removal set with the
//! siblings' average) is surrounded by much worse points that far away, so these moves stay
//! closer: a removed layer is exchanged with a kept one next to it first, one kept layer
//! changes its source or merge, or a merge's λ takes a small step.
//!
//! [`OptimizerKind::Local`]: super::optimizer::OptimizerKind::Local

use rand::Rng;

use super::space::{Candidate, Choice, SearchSpace};

/// How far `a` is from `b`: layers moved (half the kept positions only one of them has,
/// rounded up) and kept layers of both whose rule differs, plus one when they are healed
/// differently.
pub fn distance(a: &Candidate, b: &Candidate) -> (usize, usize) {
    let pairs = a.layers.iter().zip(&b.layers);
    let differ = pairs.clone().filter(|(x, y)| x.is_some() != y.is_some()).count();
    let changed = pairs.filter(|(x, y)| matches!((x, y), (Some(x), Some(y)) if x != y)).count();
    (differ.div_ceil(2), changed + usize::from(a.heal != b.heal))
}

/// The kept layer nearest to removed position `r` (the lower one on a tie), if any.
fn nearest_kept(c: &Candidate, r: usize) -> Option<usize> {
    let n = c.layers.len();
    (1..n).find_map(|d| [r.checked_sub(d), Some(r + d)].into_iter().flatten().find(|&i| i < n && c.layers[i].is_some()))
}

/// One move from `c` within the single-depth `space` (a front's space: one random
/// [`SearchSpace::neighbour`] step, which may change the depth). Never returns `c` itself
/// unless the space has no other point.
pub fn local_move(space: &SearchSpace, c: &Candidate, rng: &mut impl Rng) -> Candidate {
    if space.is_range() {
        return space.neighbour(c, rng);
    }
    let kept: Vec<usize> = c.kept().collect();
    let removed: Vec<usize> = (0..c.layers.len()).filter(|&i| c.layers[i].is_none()).collect();
    let merges: Vec<usize> = kept.iter().copied().filter(|&i| c.layers[i].is_some_and(|x| x.is_merge())).collect();
    let n = space.siblings();
    if (removed.is_empty() || kept.is_empty()) && n == 0 && space.options.heal.is_none() {
        return c.clone(); // a one-point space
    }
    let methods = &space.options.methods;
    // A space with the heal also switches it (one move in eleven).
    let kinds = if space.options.heal.is_some() { 11 } else { 10 };
    let mut out = c.clone();
    for _ in 0..1000 {
        out.clone_from(c);
        match rng.random_range(0..kinds) {
            // The heal: off, on with a teacher, or another teacher.
            10 => out.heal = space.other_heal(c, rng).expect("a space with the heal"),
            // Exchange a removed layer with a kept one: its nearest kept neighbour three
            // times in four, else any kept layer; the layer brought back takes the rule of
            // the one it replaces.
            0..=3 if !removed.is_empty() && !kept.is_empty() => {
                let r = removed[rng.random_range(0..removed.len())];
                let near = if rng.random_bool(0.75) { nearest_kept(c, r) } else { None };
                let k = near.unwrap_or_else(|| kept[rng.random_range(0..kept.len())]);
                out.layers[r] = out.layers[k];
                out.layers[k] = None;
            }
            // One kept layer takes another source: the base, one sibling, or a merge. A new
            // merge starts as the average of its members, and so does a merge that was an
            // average (the siblings' average warm start stays an average of fewer or more).
            4..=6 if n > 0 => {
                let at = kept[rng.random_range(0..kept.len())];
                let ch = c.layers[at].expect("kept");
                let subset = rng.random_range(0..1u32 << n);
                let average = |s: u32| Choice::new(s, 1.0 / f64::from(s.count_ones().max(1)), ch.method).lambda;
                let lambda = if ch.is_merge() && ch.lambda != average(ch.subset) { ch.lambda } else { average(subset) };
                out.layers[at] = Some(Choice::new(subset, lambda, ch.method));
            }
            // A merge's λ steps by 0.05, 0.1 or 0.2 either way.
            7 | 8 if !merges.is_empty() => {
                let at = merges[rng.random_range(0..merges.len())];
                let ch = c.layers[at].expect("kept");
                let step = [0.05, 0.1, 0.2][rng.random_range(0..3)] * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                out.layers[at] = Some(Choice::new(ch.subset, ch.lambda + step, ch.method));
            }
            9 if !merges.is_empty() && methods.len() > 1 => {
                let at = merges[rng.random_range(0..merges.len())];
                let ch = c.layers[at].expect("kept");
                out.layers[at] = Some(Choice::new(ch.subset, ch.lambda, methods[rng.random_range(0..methods.len())]));
            }
            // A kept layer takes the rule of the kept layer next to it.
            9 if kept.len() > 1 => {
                let i = rng.random_range(0..kept.len());
                let j = if i + 1 < kept.len() && (i == 0 || rng.random_bool(0.5)) { i + 1 } else { i - 1 };
                out.layers[kept[i]] = c.layers[kept[j]];
            }
            _ => continue,
        }
        if out != *c {
            return out;
        }
    }
    // Every draw gave `c` back (a space of very few points): the space's own move.
    space.neighbour(c, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::Method;
    use crate::search::space::{tests::template, SpaceOptions};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn moves_stay_in_the_space_and_near_the_start() {
        let opts = SpaceOptions { methods: vec![Method::TaskArithmetic, Method::Ties], ..Default::default() };
        let space = SearchSpace::new(template(12, 3), 8, opts).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut swaps = [0usize; 2];
        for _ in 0..300 {
            let c = space.sample(&mut rng);
            let m = local_move(&space, &c, &mut rng);
            assert_ne!(m, c);
            assert_eq!(m.kept().count(), 8);
            assert_eq!(space.from_recipe(&space.to_recipe(&m)).unwrap(), m);
            let (moved, changed) = distance(&m, &c);
            assert!(moved + changed == 1, "one step: moved {moved}, changed {changed}");
            if moved == 1 {
                // Which positions swapped: mostly neighbours.
                let diff: Vec<usize> = (0..12).filter(|&i| m.layers[i].is_some() != c.layers[i].is_some()).collect();
                let gap = diff[1] - diff[0];
                let between_removed = (diff[0] + 1..diff[1]).all(|i| c.layers[i].is_none() && m.layers[i].is_none());
                swaps[usize::from(gap == 1 || between_removed)] += 1;
            }
        }
        assert!(swaps[1] > 2 * swaps[0], "neighbouring exchanges first: {swaps:?}");
    }

    #[test]
    fn a_space_with_the_heal_switches_it_as_one_move() {
        use crate::recipe::Teacher;
        use crate::search::space::HealSpace;
        let heal = HealSpace { teachers: vec![Teacher::Base, Teacher::Average], tokens: 64, ridge: 1e-3 };
        let space = SearchSpace::new(template(12, 3), 8, SpaceOptions { heal: Some(heal), ..Default::default() }).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut switched = 0;
        for _ in 0..300 {
            let c = space.sample(&mut rng);
            let m = local_move(&space, &c, &mut rng);
            let (moved, changed) = distance(&m, &c);
            assert_eq!(moved + changed, 1, "one step");
            if m.heal != c.heal {
                assert_eq!(m.layers, c.layers, "a heal move changes nothing else");
                switched += 1;
            }
            assert_eq!(space.from_recipe(&space.to_recipe(&m)).unwrap(), m);
        }
        assert!((10..60).contains(&switched), "about one move in eleven: {switched}");
    }

    #[test]
    fn distance_counts_moved_and_changed_layers() {
        let b = Choice::BASE;
        let s = Choice::new(1, 0.0, Method::TaskArithmetic);
        let a = Candidate::new(vec![Some(b), None, Some(b), Some(s)]);
        let c = Candidate::new(vec![Some(b), Some(b), None, Some(b)]);
        assert_eq!(distance(&a, &c), (1, 1));
        assert_eq!(distance(&a, &a), (0, 0));
    }

    #[test]
    fn a_one_point_space_does_not_hang() {
        let space = SearchSpace::new(template(3, 0), 3, SpaceOptions::default()).unwrap();
        let c = space.sample(&mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(local_move(&space, &c, &mut ChaCha8Rng::seed_from_u64(1)), c);
    }
}
