//! The search space: which layers to drop, which siblings each kept layer comes from, and
//! how several siblings are merged. This is the one place that translates between the
//! optimizer's view of a candidate (a [`Candidate`] and its feature vector) and the
//! [`Recipe`] every other stage reads.

use rand::seq::index::sample;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::dtype::Dtype;
use crate::merge::Method;
use crate::recipe::{EdgePolicy, Heal, LayerRule, Merge, Recipe, Rule, SourceModel, Teacher};

use super::SearchError;

/// How deep the tailored model is, as the user states it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DepthTarget {
    /// Keep exactly this many layers.
    KeepLayers(usize),
    /// Remove this fraction of the layers (rounded to the nearest layer).
    RemoveRatio(f64),
    /// Keep as many layers as fit in this many parameters.
    MaxParams(u64),
}

impl DepthTarget {
    /// The number of layers to keep out of `source_layers`; `total_params(k)` is the
    /// parameter count of a `k`-layer model (see `ModelConfig::total_params`).
    pub fn keep_layers(&self, source_layers: usize, total_params: impl Fn(usize) -> u64) -> Result<usize, SearchError> {
        let bad = |message: String| SearchError::Space(message);
        let k = match *self {
            DepthTarget::KeepLayers(k) => k,
            DepthTarget::RemoveRatio(r) => {
                if !(r.is_finite() && (0.0..1.0).contains(&r)) {
                    return Err(bad(format!("--remove-ratio must be in [0, 1), got {r}")));
                }
                source_layers - (r * source_layers as f64).round() as usize
            }
            DepthTarget::MaxParams(p) => match (1..=source_layers).rev().find(|&k| total_params(k) <= p) {
                Some(k) => k,
                None => return Err(bad(format!("no depth fits in {p} parameters: one layer already needs {}", total_params(1)))),
            },
        };
        if k == 0 || k > source_layers {
            return Err(bad(format!("cannot keep {k} of {source_layers} layers (keep between 1 and {source_layers})")));
        }
        Ok(k)
    }
}

/// The fixed parts of every recipe the search emits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeTemplate {
    pub architecture: String,
    pub source_layers: usize,
    pub base: SourceModel,
    pub siblings: Vec<SourceModel>,
    pub edges: EdgePolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Dtype>,
}

impl RecipeTemplate {
    /// The template for an opened family whose models the recipe calls `base` and
    /// `siblings` (in the family's order).
    pub fn for_family(family: &crate::checkpoint::Family, base: SourceModel, siblings: Vec<SourceModel>, edges: EdgePolicy) -> Self {
        let c = &family.base.config;
        Self { architecture: c.arch.model_type.to_string(), source_layers: c.num_hidden_layers, base, siblings, edges, dtype: None }
    }
}

/// Options that shape the space beyond the depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceOptions {
    /// Merge methods a layer with several siblings may use, each one the registry marks
    /// searchable (the reference: task arithmetic only).
    pub methods: Vec<Method>,
    /// Density of TIES / DARE merges (fixed, not searched).
    pub density: f64,
    /// Seed of DARE's drop masks (fixed so a recipe always builds the same tensors).
    pub dare_seed: u64,
    /// The heal as a dimension of the space (`--heal search`); absent: no candidate is healed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal: Option<HealSpace>,
}

impl Default for SpaceOptions {
    fn default() -> Self {
        Self { methods: vec![Method::TaskArithmetic], density: 0.5, dare_seed: 0, heal: None }
    }
}

/// The heal as a dimension of the space: each candidate is unhealed or healed against one of
/// `teachers` (see [`crate::heal`]), every healed candidate fitted on the same `tokens`
/// calibration tokens with the same `ridge`, in memory, when it is scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealSpace {
    pub teachers: Vec<Teacher>,
    pub tokens: usize,
    pub ridge: f64,
}

/// λ is searched on a grid of this many steps per unit, so recipes are short to read and
/// compare exactly after a YAML round trip.
const LAMBDA_GRID: f64 = 1000.0;

/// How many different rules a kept layer can be made under with `siblings` siblings and
/// `methods` merge methods (see [`SearchSpace::rules_per_layer`]).
pub fn rules_per_layer(siblings: usize, methods: usize) -> u64 {
    let s = siblings.min(63) as u64;
    let merges = (1u64 << s) - 1 - s;
    (1 + s).saturating_add(merges.saturating_mul(LAMBDA_GRID as u64 + 1).saturating_mul(methods as u64))
}

/// What one kept layer does: a subset of siblings (bit j = sibling j), and for merges
/// of two or more siblings the strength λ and the method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub subset: u32,
    pub lambda: f64,
    pub method: Method,
}

impl Choice {
    pub const BASE: Choice = Choice { subset: 0, lambda: 0.0, method: Method::TaskArithmetic };

    /// A choice in canonical form: λ on the grid in [0, 1]; λ and method fixed when unused.
    pub fn new(subset: u32, lambda: f64, method: Method) -> Self {
        if subset.count_ones() < 2 {
            Choice { subset, ..Self::BASE }
        } else {
            Choice { subset, lambda: (lambda.clamp(0.0, 1.0) * LAMBDA_GRID).round() / LAMBDA_GRID, method }
        }
    }

    pub fn is_merge(&self) -> bool {
        self.subset.count_ones() >= 2
    }
}

/// A point of the space: for every source layer, `None` (removed) or what the kept layer
/// does; and, in a space with the heal, which teacher heals its cuts (an index into
/// [`HealSpace::teachers`]; `None`: unhealed).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub layers: Vec<Option<Choice>>,
    pub heal: Option<u8>,
}

impl Candidate {
    /// An unhealed candidate.
    pub fn new(layers: Vec<Option<Choice>>) -> Self {
        Self { layers, heal: None }
    }

    pub fn kept(&self) -> impl Iterator<Item = usize> + '_ {
        self.layers.iter().enumerate().filter(|(_, c)| c.is_some()).map(|(i, _)| i)
    }
    /// Output layers the two candidates' models have in common from the first on (the
    /// prefix whose hidden states an evaluator can share between them).
    pub fn shared_prefix(&self, other: &Candidate) -> usize {
        fn layers(c: &Candidate) -> impl Iterator<Item = (usize, &Choice)> {
            c.layers.iter().enumerate().filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
        }
        let same = layers(self).zip(layers(other)).take_while(|(a, b)| a == b).count();
        if self.heal == other.heal {
            return same;
        }
        // Healed differently: the first layer before a gap carries a map in one of them (and
        // a different map in both when both are healed), so the prefix ends before it.
        let before_gap = |c: &Candidate| {
            let kept: Vec<usize> = c.kept().collect();
            kept.windows(2).position(|w| w[1] > w[0] + 1).or_else(|| kept.last().filter(|&&k| k + 1 < c.layers.len()).map(|_| kept.len() - 1))
        };
        [before_gap(self), before_gap(other)].into_iter().flatten().fold(same, usize::min)
    }

    pub fn merges(&self) -> usize {
        self.layers.iter().flatten().filter(|c| c.is_merge()).count()
    }
    /// Kept layers not taken from the base.
    pub fn sibling_layers(&self) -> usize {
        self.layers.iter().flatten().filter(|c| c.subset != 0).count()
    }
}

/// The space: a recipe template, the number of layers kept (a range of depths for a
/// size–quality front: `keep..=keep_max`), and the options.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpace {
    pub template: RecipeTemplate,
    /// The depth, or the smallest depth of a front.
    pub keep: usize,
    /// The largest depth of a front (`keep` for a single depth).
    pub keep_max: usize,
    pub options: SpaceOptions,
}

impl SearchSpace {
    pub fn new(template: RecipeTemplate, keep: usize, options: SpaceOptions) -> Result<Self, SearchError> {
        let l = template.source_layers;
        if keep == 0 || keep > l {
            return Err(SearchError::Space(format!("cannot keep {keep} of {l} layers")));
        }
        if template.siblings.len() > 16 {
            return Err(SearchError::Space(format!("{} siblings: the search handles at most 16", template.siblings.len())));
        }
        if options.methods.is_empty() {
            return Err(SearchError::Space("no merge method allowed".into()));
        }
        if let Some(m) = options.methods.iter().find(|m| !m.info().searchable) {
            return Err(SearchError::Space(format!("merge method {m} cannot be searched ({})", crate::merge::searchable_list())));
        }
        if !(options.density > 0.0 && options.density <= 1.0) {
            return Err(SearchError::Space(format!("merge density must be in (0, 1], got {}", options.density)));
        }
        if let Some(h) = &options.heal {
            Self::check_heal(&template, h)?;
        }
        Ok(Self { template, keep, keep_max: keep, options })
    }

    /// The heal dimension fits the family: teachers it has, an architecture whose MLP output
    /// joins the residual stream, a usable ridge and token count.
    fn check_heal(template: &RecipeTemplate, h: &HealSpace) -> Result<(), SearchError> {
        let bad = |m: String| SearchError::Space(format!("--heal search: {m}"));
        if h.teachers.is_empty() || h.teachers.len() > 16 {
            return Err(bad(format!("give 1 to 16 teachers, got {}", h.teachers.len())));
        }
        if h.tokens < 2 || !(h.ridge.is_finite() && h.ridge >= 0.0) {
            return Err(bad("the heal needs at least 2 calibration tokens and a finite ridge >= 0".into()));
        }
        for (i, t) in h.teachers.iter().enumerate() {
            match t {
                Teacher::Sibling(n) if !template.siblings.iter().any(|s| s.name == *n) => return Err(bad(format!("teacher `{t}` is not a sibling"))),
                Teacher::Average if template.siblings.is_empty() => return Err(bad("teacher `average` needs at least one sibling".into())),
                _ if h.teachers[..i].contains(t) => return Err(bad(format!("teacher `{t}` is listed twice"))),
                _ => {}
            }
        }
        let probe =
            Recipe::new(&template.architecture, template.source_layers, template.base.clone(), template.siblings.clone(), vec![], template.edges);
        crate::heal::check_arch(&probe).map_err(|e| SearchError::Space(e.to_string()))
    }

    /// A space over every depth of `keep..=keep_max`: one study for the whole front.
    pub fn with_depths(template: RecipeTemplate, keep: usize, keep_max: usize, options: SpaceOptions) -> Result<Self, SearchError> {
        if keep_max < keep {
            return Err(SearchError::Space(format!("the depth range {keep}..{keep_max} is empty")));
        }
        let mut s = Self::new(template, keep_max, options)?;
        Self::new(s.template.clone(), keep, s.options.clone())?;
        s.keep = keep;
        Ok(s)
    }

    /// Whether the space spans several depths (a front).
    pub fn is_range(&self) -> bool {
        self.keep_max > self.keep
    }

    /// The depths of the space, smallest first.
    pub fn depths(&self) -> std::ops::RangeInclusive<usize> {
        self.keep..=self.keep_max
    }

    /// The single-depth space at depth `k` (for baselines and dedicated searches).
    pub fn at_depth(&self, k: usize) -> Self {
        Self { keep: k, keep_max: k, ..self.clone() }
    }

    pub fn source_layers(&self) -> usize {
        self.template.source_layers
    }
    pub fn siblings(&self) -> usize {
        self.template.siblings.len()
    }
    fn subsets(&self) -> u32 {
        1u32 << self.siblings()
    }

    /// How many different rules a kept layer can be made under: the base and each sibling
    /// taken, and each merge of two or more siblings at each λ of the grid by each method.
    pub fn rules_per_layer(&self) -> u64 {
        rules_per_layer(self.siblings(), self.options.methods.len())
    }

    /// A uniformly random candidate: a random k-subset of layers, and per kept layer a
    /// uniform sibling subset, λ ~ U[0, 1] and a uniform method.
    pub fn sample(&self, rng: &mut impl Rng) -> Candidate {
        let l = self.source_layers();
        // A front: the depth uniformly first (a single depth draws nothing, as before).
        let k = if self.is_range() { rng.random_range(self.keep..=self.keep_max) } else { self.keep };
        let mut kept: Vec<usize> = sample(rng, l, k).into_vec();
        kept.sort_unstable();
        let mut layers = vec![None; l];
        for i in kept {
            layers[i] = Some(self.random_choice(rng));
        }
        // Healed half the time (a space without the heal draws nothing more, as before).
        let heal = match &self.options.heal {
            Some(h) if rng.random_bool(0.5) => Some(rng.random_range(0..h.teachers.len()) as u8),
            _ => None,
        };
        Candidate { layers, heal }
    }

    /// Another heal for `c` in a space with the heal: off when healed, else a teacher, or
    /// another teacher (`None` without the heal).
    pub fn other_heal(&self, c: &Candidate, rng: &mut impl Rng) -> Option<Option<u8>> {
        let n = self.options.heal.as_ref()?.teachers.len() as u8;
        let choices: Vec<Option<u8>> = std::iter::once(None).chain((0..n).map(Some)).filter(|h| *h != c.heal).collect();
        Some(choices[rng.random_range(0..choices.len())])
    }

    fn random_choice(&self, rng: &mut impl Rng) -> Choice {
        let subset = rng.random_range(0..self.subsets());
        let lambda = rng.random::<f64>();
        let method = self.options.methods[rng.random_range(0..self.options.methods.len())];
        Choice::new(subset, lambda, method)
    }

    /// A random neighbour: move a kept layer to a removed position, flip one sibling of a
    /// layer's subset, nudge a merge's λ, or change a merge's method.
    pub fn neighbour(&self, c: &Candidate, rng: &mut impl Rng) -> Candidate {
        let mut out = c.clone();
        let kept: Vec<usize> = c.kept().collect();
        let removed: Vec<usize> = (0..c.layers.len()).filter(|i| c.layers[*i].is_none()).collect();
        let merges: Vec<usize> = kept.iter().copied().filter(|&i| c.layers[i].is_some_and(|x| x.is_merge())).collect();
        if removed.is_empty() && self.siblings() == 0 && !self.is_range() && self.options.heal.is_none() {
            return out; // a one-point space: nothing to move
        }
        // A front also moves between depths: add a removed layer or drop a kept one; a space
        // with the heal also switches the heal.
        let moves = if self.is_range() { 6 } else { 4 } + usize::from(self.options.heal.is_some());
        loop {
            match rng.random_range(0..moves) {
                m if m + 1 == moves && self.options.heal.is_some() => {
                    out.heal = self.other_heal(c, rng).expect("a space with the heal");
                }
                0 if !removed.is_empty() => {
                    let from = kept[rng.random_range(0..kept.len())];
                    let to = removed[rng.random_range(0..removed.len())];
                    out.layers[to] = if rng.random_bool(0.5) { out.layers[from] } else { Some(self.random_choice(rng)) };
                    out.layers[from] = None;
                }
                1 if self.siblings() > 0 => {
                    let at = kept[rng.random_range(0..kept.len())];
                    let ch = out.layers[at].expect("kept");
                    let subset = ch.subset ^ (1 << rng.random_range(0..self.siblings()));
                    let lambda = if ch.is_merge() { ch.lambda } else { rng.random::<f64>() };
                    out.layers[at] = Some(Choice::new(subset, lambda, ch.method));
                }
                2 if !merges.is_empty() => {
                    let at = merges[rng.random_range(0..merges.len())];
                    let ch = out.layers[at].expect("kept");
                    let step: f64 = (rng.random::<f64>() - 0.5) * 0.4;
                    out.layers[at] = Some(Choice::new(ch.subset, ch.lambda + step, ch.method));
                }
                3 if !merges.is_empty() && self.options.methods.len() > 1 => {
                    let at = merges[rng.random_range(0..merges.len())];
                    let ch = out.layers[at].expect("kept");
                    let method = self.options.methods[rng.random_range(0..self.options.methods.len())];
                    out.layers[at] = Some(Choice::new(ch.subset, ch.lambda, method));
                }
                4 if kept.len() < self.keep_max && !removed.is_empty() => {
                    let to = removed[rng.random_range(0..removed.len())];
                    out.layers[to] = Some(self.random_choice(rng));
                }
                5 if kept.len() > self.keep => {
                    let from = kept[rng.random_range(0..kept.len())];
                    out.layers[from] = None;
                }
                _ => continue,
            }
            if out != *c {
                return out;
            }
        }
    }

    /// Features for the surrogate: per source layer `kept`, one bit per sibling, λ
    /// (−0.5 when the layer is not a merge) and, when several methods are allowed, the
    /// method's index (−1 when not a merge).
    pub fn features(&self, c: &Candidate) -> Vec<f64> {
        let multi = self.options.methods.len() > 1;
        let mut f = Vec::with_capacity(self.feature_len());
        for ch in &c.layers {
            match ch {
                None => {
                    f.push(0.0);
                    f.extend(std::iter::repeat_n(0.0, self.siblings()));
                    f.push(-0.5);
                    if multi {
                        f.push(-1.0);
                    }
                }
                Some(ch) => {
                    f.push(1.0);
                    f.extend((0..self.siblings()).map(|j| ((ch.subset >> j) & 1) as f64));
                    f.push(if ch.is_merge() { ch.lambda } else { -0.5 });
                    if multi {
                        let idx = self.options.methods.iter().position(|m| *m == ch.method).unwrap_or(0);
                        f.push(if ch.is_merge() { idx as f64 } else { -1.0 });
                    }
                }
            }
        }
        if self.is_range() {
            // The depth as a feature of its own: accuracy falls with it across the front.
            f.push((c.kept().count() - self.keep) as f64 / (self.keep_max - self.keep) as f64);
        }
        if let Some(h) = &self.options.heal {
            // Healed or not, then which teacher (one bit each).
            f.push(f64::from(u8::from(c.heal.is_some())));
            f.extend((0..h.teachers.len()).map(|t| f64::from(u8::from(c.heal == Some(t as u8)))));
        }
        f
    }

    pub fn feature_len(&self) -> usize {
        self.source_layers() * (2 + self.siblings() + usize::from(self.options.methods.len() > 1))
            + usize::from(self.is_range())
            + self.options.heal.as_ref().map_or(0, |h| 1 + h.teachers.len())
    }

    /// The recipe a candidate stands for.
    pub fn to_recipe(&self, c: &Candidate) -> Recipe {
        let t = &self.template;
        let layers = c.layers.iter().enumerate().filter_map(|(from, ch)| ch.map(|ch| LayerRule { from, rule: self.rule(&ch) })).collect();
        let mut r = Recipe::new(&t.architecture, t.source_layers, t.base.clone(), t.siblings.clone(), layers, t.edges);
        r.dtype = t.dtype;
        if let (Some(i), Some(h)) = (c.heal, &self.options.heal) {
            r.heal = Some(Box::new(Heal::request(h.teachers[usize::from(i)].clone(), h.tokens, h.ridge)));
        }
        r
    }

    fn rule(&self, ch: &Choice) -> Rule {
        let t = &self.template;
        let members: Vec<String> = (0..self.siblings()).filter(|j| (ch.subset >> j) & 1 == 1).map(|j| t.siblings[j].name.clone()).collect();
        match members.len() {
            0 => Rule::Take(t.base.name.clone()),
            1 => Rule::Take(members.into_iter().next().expect("one")),
            _ => Rule::Merge(self.merge(ch.method, members, ch.lambda)),
        }
    }

    /// The merge of `models` by a method of the space at strength `lambda`, with the
    /// space's fixed density and seed.
    fn merge(&self, method: Method, models: Vec<String>, lambda: f64) -> Merge {
        let o = &self.options;
        method.searched(models, lambda, o.density, o.dare_seed).expect("a space holds searchable methods only (checked by new)")
    }

    /// The candidate a recipe stands for, or why the recipe is not a point of this space.
    pub fn from_recipe(&self, r: &Recipe) -> Result<Candidate, SearchError> {
        let t = &self.template;
        let bad = |m: String| SearchError::Space(format!("recipe is not in the search space: {m}"));
        if r.source_layers != t.source_layers || r.base.name != t.base.name {
            return Err(bad(format!("it is for {} layers of `{}`", r.source_layers, r.base.name)));
        }
        if !self.depths().contains(&r.layers.len()) {
            let want = if self.is_range() { format!("{}..{}", self.keep, self.keep_max) } else { self.keep.to_string() };
            return Err(bad(format!("it keeps {} layers, the space keeps {want}", r.layers.len())));
        }
        let sib_index = |name: &str| t.siblings.iter().position(|s| s.name == name);
        let mut layers = vec![None; t.source_layers];
        let mut last = None;
        for (i, l) in r.layers.iter().enumerate() {
            if l.from >= t.source_layers || last.is_some_and(|p| l.from <= p) {
                return Err(bad(format!("layers[{i}] (from {}) is out of order or out of range", l.from)));
            }
            last = Some(l.from);
            let choice = match &l.rule {
                Rule::Take(m) if *m == t.base.name => Choice::BASE,
                Rule::Take(m) => match sib_index(m) {
                    Some(j) => Choice::new(1 << j, 0.0, Method::TaskArithmetic),
                    None => return Err(bad(format!("layers[{i}] takes unknown model `{m}`"))),
                },
                Rule::Merge(m) => {
                    let method = m.method();
                    if !self.options.methods.contains(&method) {
                        return Err(bad(format!("layers[{i}] uses merge method {method}, not allowed")));
                    }
                    let lambda = m.strength().expect("a searchable method has a strength");
                    if self.merge(method, m.models().to_vec(), lambda) != *m {
                        return Err(bad(format!("layers[{i}] uses a merge the space does not contain ({})", l.rule.label())));
                    }
                    let mut subset = 0u32;
                    for name in m.models() {
                        subset |= 1 << sib_index(name).ok_or_else(|| bad(format!("layers[{i}] merges unknown model `{name}`")))?;
                    }
                    if subset.count_ones() < 2 {
                        return Err(bad(format!("layers[{i}] merges fewer than two siblings")));
                    }
                    let ch = Choice::new(subset, lambda, method);
                    if ch.lambda != lambda {
                        return Err(bad(format!("layers[{i}] has λ={lambda}, off the search's grid or outside [0, 1]")));
                    }
                    ch
                }
            };
            layers[l.from] = Some(choice);
        }
        // A heal (asked for or fitted) is the space's when its teacher, tokens and ridge are.
        let heal = match (&r.heal, &self.options.heal) {
            (None, _) => None,
            (Some(_), None) => return Err(bad("it is healed, and the space has no heal (--heal search)".into())),
            (Some(h), Some(space)) => {
                let at = space
                    .teachers
                    .iter()
                    .position(|t| *t == h.teacher)
                    .ok_or_else(|| bad(format!("its heal's teacher `{}` is not one of the space's", h.teacher)))?;
                if h.is_request() && (h.tokens != space.tokens || h.ridge != space.ridge) {
                    return Err(bad(format!(
                        "its heal asks for {} tokens at ridge {}, the space's for {} at {}",
                        h.tokens, h.ridge, space.tokens, space.ridge
                    )));
                }
                Some(at as u8)
            }
        };
        Ok(Candidate { layers, heal })
    }

    /// The base model cut to `kept` layers (baselines and warm starts).
    pub fn base_only(&self, kept: &[usize]) -> Candidate {
        let mut layers = vec![None; self.source_layers()];
        for &i in kept {
            layers[i] = Some(Choice::BASE);
        }
        Candidate::new(layers)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub(crate) use crate::testkit::template;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn depth_targets_resolve() {
        let p = |k: usize| 100 + 10 * k as u64;
        assert_eq!(DepthTarget::KeepLayers(30).keep_layers(40, p).unwrap(), 30);
        assert_eq!(DepthTarget::RemoveRatio(0.25).keep_layers(40, p).unwrap(), 30);
        assert_eq!(DepthTarget::MaxParams(405).keep_layers(40, p).unwrap(), 30);
        assert!(DepthTarget::MaxParams(105).keep_layers(40, p).is_err());
        assert!(DepthTarget::KeepLayers(41).keep_layers(40, p).is_err());
        assert!(DepthTarget::RemoveRatio(1.0).keep_layers(40, p).is_err());
    }

    #[test]
    fn samples_round_trip_through_recipes() {
        let opts = SpaceOptions { methods: vec![Method::TaskArithmetic, Method::Ties, Method::Dare], ..Default::default() };
        let space = SearchSpace::new(template(10, 3), 7, opts).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut merges = 0;
        for _ in 0..200 {
            let c = space.sample(&mut rng);
            assert_eq!(c.kept().count(), 7);
            let r = space.to_recipe(&c);
            r.validate().unwrap();
            assert_eq!(space.from_recipe(&r).unwrap(), c);
            // Through YAML too: λ survives exactly.
            let back = Recipe::from_yaml_str(&r.to_yaml(), "t").unwrap();
            assert_eq!(space.from_recipe(&back).unwrap(), c);
            assert_eq!(space.features(&c).len(), space.feature_len());
            let n = space.neighbour(&c, &mut rng);
            assert_ne!(n, c);
            assert_eq!(n.kept().count(), 7);
            merges += c.merges();
        }
        assert!(merges > 0);
    }

    #[test]
    fn the_heal_is_a_dimension_that_round_trips_through_recipes() {
        let heal = HealSpace { teachers: vec![Teacher::Average, Teacher::Sibling("s1".into())], tokens: 256, ridge: 1e-3 };
        let space = SearchSpace::new(template(10, 2), 7, SpaceOptions { heal: Some(heal.clone()), ..Default::default() }).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            let c = space.sample(&mut rng);
            seen.insert(c.heal);
            let r = space.to_recipe(&c);
            assert_eq!(r.heal.as_ref().map(|h| (h.teacher.clone(), h.is_request())), c.heal.map(|i| (heal.teachers[usize::from(i)].clone(), true)));
            r.validate().unwrap();
            let back = Recipe::from_yaml_str(&r.to_yaml(), "t").unwrap();
            assert_eq!(space.from_recipe(&back).unwrap(), c);
            assert_eq!(space.features(&c).len(), space.feature_len());
            let n = space.neighbour(&c, &mut rng);
            assert_eq!(space.from_recipe(&space.to_recipe(&n)).unwrap(), n);
        }
        assert_eq!(seen.len(), 3, "unhealed and both teachers: {seen:?}");
        // Not this space's heal, or no heal in the space: refused.
        let mut c = space.sample(&mut rng);
        c.heal = Some(0);
        let mut r = space.to_recipe(&c);
        r.heal.as_mut().unwrap().tokens = 128;
        assert!(space.from_recipe(&r).unwrap_err().to_string().contains("asks for 128 tokens"));
        r.heal.as_mut().unwrap().teacher = Teacher::Base;
        assert!(space.from_recipe(&r).unwrap_err().to_string().contains("teacher `base` is not one of the space's"));
        let plain = SearchSpace::new(template(10, 2), 7, SpaceOptions::default()).unwrap();
        assert!(plain.from_recipe(&space.to_recipe(&c)).unwrap_err().to_string().contains("the space has no heal"));
        // A healed candidate shares the layers before its first gap's with the unhealed one:
        // layers 0, 1 (layer 2 carries the map of the gap 3; a trailing gap counts too).
        let healed = Candidate { heal: Some(0), ..space.base_only(&[0, 1, 2, 4, 5, 6, 8]) };
        assert_eq!(healed.shared_prefix(&space.base_only(&[0, 1, 2, 4, 5, 6, 8])), 2);
        assert_eq!(healed.shared_prefix(&healed), 7);
        let trailing = Candidate { heal: Some(1), ..space.base_only(&[0, 1, 2, 3, 4, 5, 6]) };
        assert_eq!(trailing.shared_prefix(&space.base_only(&[0, 1, 2, 3, 4, 5, 6])), 6);
        assert_eq!(
            Candidate { heal: Some(1), ..space.base_only(&[3, 4, 5, 6, 7, 8, 9]) }.shared_prefix(&space.base_only(&[3, 4, 5, 6, 7, 8, 9])),
            7,
            "no gap after a kept layer: nothing healed"
        );
        // Teachers the family does not have, or twice, are refused.
        for (teachers, why) in [
            (vec![Teacher::Sibling("nope".into())], "is not a sibling"),
            (vec![Teacher::Base, Teacher::Base], "listed twice"),
            (vec![], "give 1 to 16 teachers"),
        ] {
            let h = HealSpace { teachers, tokens: 256, ridge: 1e-3 };
            let e = SearchSpace::new(template(10, 2), 7, SpaceOptions { heal: Some(h), ..Default::default() }).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn rules_per_layer_counts_takes_and_merges_on_the_grid() {
        assert_eq!(SearchSpace::new(template(10, 0), 7, SpaceOptions::default()).unwrap().rules_per_layer(), 1);
        assert_eq!(SearchSpace::new(template(10, 1), 7, SpaceOptions::default()).unwrap().rules_per_layer(), 2);
        // Three siblings: four takes, four subsets of two or more at 1001 λ.
        assert_eq!(SearchSpace::new(template(10, 3), 7, SpaceOptions::default()).unwrap().rules_per_layer(), 4 + 4 * 1001);
    }

    #[test]
    fn a_front_space_spans_its_depths() {
        let space = SearchSpace::with_depths(template(10, 2), 5, 8, SpaceOptions::default()).unwrap();
        assert!(space.is_range() && !space.at_depth(6).is_range());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let c = space.sample(&mut rng);
            let k = c.kept().count();
            assert!((5..=8).contains(&k), "{k}");
            seen.insert(k);
            assert_eq!(space.features(&c).len(), space.feature_len());
            assert_eq!(space.from_recipe(&space.to_recipe(&c)).unwrap(), c);
            let n = space.neighbour(&c, &mut rng);
            assert!((5..=8).contains(&n.kept().count()));
            seen.insert(n.kept().count());
        }
        assert_eq!(seen.len(), 4, "every depth is reached");
        let outside = SearchSpace::new(template(10, 2), 4, SpaceOptions::default()).unwrap();
        let c = outside.sample(&mut rng);
        assert!(space.from_recipe(&outside.to_recipe(&c)).unwrap_err().to_string().contains("the space keeps 5..8"));
        assert!(SearchSpace::with_depths(template(10, 2), 8, 5, SpaceOptions::default()).is_err());
    }

    #[test]
    fn a_one_point_space_has_no_neighbour_but_does_not_hang() {
        let space = SearchSpace::new(template(3, 0), 3, SpaceOptions::default()).unwrap();
        let c = space.sample(&mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(space.neighbour(&c, &mut ChaCha8Rng::seed_from_u64(1)), c);
    }

    #[test]
    fn rules_follow_the_subset() {
        let space = SearchSpace::new(template(4, 2), 3, SpaceOptions::default()).unwrap();
        let c = Candidate::new(vec![
            Some(Choice::BASE),
            None,
            Some(Choice::new(0b10, 0.3, Method::TaskArithmetic)),
            Some(Choice::new(0b11, 0.61234, Method::TaskArithmetic)),
        ]);
        let r = space.to_recipe(&c);
        assert_eq!(r.removed_layers(), vec![1]);
        assert_eq!(r.layers[0].rule, Rule::Take("base".into()));
        assert_eq!(r.layers[1].rule, Rule::Take("s1".into()));
        assert_eq!(r.layers[2].rule, Rule::Merge(Merge::TaskArithmetic { models: vec!["s0".into(), "s1".into()], lambda: 0.612 }));
        let mut off = r.clone();
        off.layers[2].rule = Rule::Merge(Merge::TaskArithmetic { models: vec!["s0".into(), "s1".into()], lambda: 0.6125 });
        assert!(space.from_recipe(&off).is_err());
    }
}
