//! The heal's fit in the evaluator ([`crate::heal`] holds the arithmetic): one pass over
//! the calibration tokens through the candidate and its full-depth teacher, layer by layer,
//! accumulating `MᵀM` and `Mᵀ(h − y)` in f64 on the device (padding masked, never the
//! N × d activations of the whole set beyond the batches' hidden states), solving each gap
//! as it is reached and continuing on the candidate's healed activations, so that later
//! gaps are fitted on what the healed model computes.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use super::forward;
use super::plan;
use super::weights::LayerWeights;
use super::{terr, EvalError, Evaluator};
use crate::heal::{self, Maps};
use crate::layout::FusedMap;
use crate::recipe::{Heal, HealGap, Recipe, Teacher};

/// Fits a search keeps: a candidate revisited (promoted to a higher budget, scored again on
/// the selection split) is not fitted twice.
const FIT_CACHE: usize = 8;

/// Largest teacher hidden states kept for a search's fits, all teachers together: the states
/// entering every source layer for every calibration token, (L + 1) · N · d values (bench
/// family: 31 · 4096 · 576 · 4 B ≈ 290 MB; Llama-2-13B in bf16: 41 · 4096 · 5120 · 2 B ≈
/// 1.7 GB). Beyond it each fit runs its teacher again.
const TEACHER_CACHE_BYTES: u64 = 2 << 30;

/// What a search's heals share: the calibration texts every candidate is fitted on (set once
/// per search; a request's token count takes its first tokens: the trials' fidelity, or
/// all the written heal's), the last fits, and the teachers' hidden states on those tokens,
/// so that a healed trial runs the candidate once more, not the teacher.
#[derive(Default)]
pub struct SearchHeals {
    texts: Option<Arc<Vec<String>>>,
    /// (token count, the texts' first tokens), for the counts asked for so far.
    sequences: Vec<(usize, Arc<Vec<Vec<u32>>>)>,
    /// (the request recipe as JSON, the fitted recipe), newest last.
    fits: std::collections::VecDeque<(String, Recipe)>,
    /// (teacher recipe as JSON, its states entering each source layer 0..=L, per batch).
    teachers: Vec<(String, Arc<Vec<Vec<Tensor>>>)>,
}

impl SearchHeals {
    fn teacher_bytes(&self) -> u64 {
        self.teachers.iter().flat_map(|(_, s)| s.iter().flatten()).map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64).sum()
    }
}

/// The teacher's hidden states during one fit: the search's cached states at every depth, or
/// (no cache) the batches' states run forward as far as the gaps so far needed.
enum TeacherStates {
    Kept(Arc<Vec<Vec<Tensor>>>),
    Running { states: Vec<Tensor>, depth: usize },
}

/// A fitted heal: the healed recipe (its `heal` section names [`heal::MAPS_FILE`], with no
/// sha256 until [`save`] writes the maps) and the maps, already usable by the evaluator.
#[derive(Debug, Clone)]
pub struct HealFit {
    pub recipe: Recipe,
    pub maps: Maps,
    /// Source layers removed before the first kept one, left unhealed.
    pub unhealed: Vec<usize>,
    pub seconds: f64,
}

/// One gap's accumulated system: (output layer, G = MᵀM, C = Mᵀ(h − y)), d × d each.
#[cfg(feature = "testkit")]
pub type System = (usize, Vec<f64>, Vec<f64>);

#[cfg(feature = "testkit")]
thread_local! {
    /// Hook for tests: the systems of this thread's last fit, gap by gap (per thread, so
    /// tests fitting in parallel do not see each other's).
    pub static LAST_SYSTEMS: std::cell::RefCell<Vec<System>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Evaluator {
    /// Calibration sequences for a heal: each text encoded after the prefix token, cut to the
    /// longest window, until `max_tokens` tokens in all (the last sequence cut to fit).
    pub fn heal_sequences(&self, texts: &[String], max_tokens: usize) -> Result<Vec<Vec<u32>>, EvalError> {
        let mut out = Vec::new();
        let mut left = max_tokens;
        for t in texts {
            if left < 2 {
                break;
            }
            let mut tokens = vec![self.encoder.prefix_token];
            tokens.extend(self.encoder.encode(t)?);
            tokens.truncate(self.options.max_window.max(2).min(left));
            if tokens.len() < 2 {
                continue;
            }
            left -= tokens.len();
            out.push(tokens);
        }
        Ok(out)
    }

    /// The calibration texts a search's heal requests ([`Heal::is_request`]) are fitted on,
    /// each request on their first [`Heal::tokens`] tokens (see [`Evaluator::heal_sequences`]).
    pub fn set_heal_calibration(&mut self, texts: Vec<String>) {
        self.heals = SearchHeals { texts: Some(Arc::new(texts)), ..SearchHeals::default() };
    }

    /// Take `from`'s heal calibration texts and the tokens it has encoded of them (a search's
    /// workers fit on the same tokens; they are encoded once).
    pub fn share_heal_calibration(&mut self, from: &Evaluator) {
        self.heals = SearchHeals { texts: from.heals.texts.clone(), sequences: from.heals.sequences.clone(), ..SearchHeals::default() };
    }

    /// The first `tokens` calibration tokens of the search's heal texts (encoded once per count).
    pub fn heal_calibration_sequences(&mut self, tokens: usize) -> Result<Arc<Vec<Vec<u32>>>, EvalError> {
        if let Some((_, s)) = self.heals.sequences.iter().find(|(n, _)| *n == tokens) {
            return Ok(s.clone());
        }
        let texts = self.heals.texts.clone().ok_or_else(|| {
            EvalError::Spec("the recipe asks for a heal, but this evaluation has no heal calibration text (a search sets it)".into())
        })?;
        let seqs = Arc::new(self.heal_sequences(&texts, tokens)?);
        if seqs.is_empty() {
            return Err(heal::HealError::Input("no calibration tokens to fit on".into()).into());
        }
        self.heals.sequences.push((tokens, seqs.clone()));
        Ok(seqs)
    }

    /// `recipe` (whose heal is a request) healed as it asks, on the search's calibration
    /// tokens: from the fit cache, else fitted now (its maps registered for scoring).
    pub(crate) fn fitted(&mut self, recipe: &Recipe) -> Result<Recipe, EvalError> {
        let h = recipe.heal.as_deref().filter(|h| h.is_request()).ok_or_else(|| EvalError::Spec("not a heal request".into()))?.clone();
        let key = serde_json::to_string(recipe).map_err(|e| EvalError::Spec(e.to_string()))?;
        if let Some((_, r)) = self.heals.fits.iter().find(|(k, _)| *k == key) {
            return Ok(r.clone());
        }
        let seqs = self.heal_calibration_sequences(h.tokens)?;
        let fit = self.fit_heal_with(recipe, &h.teacher, &seqs, h.ridge, true)?;
        if self.heals.fits.len() == FIT_CACHE {
            let (_, old) = self.heals.fits.pop_front().expect("full");
            for g in old.heal.iter().flat_map(|h| h.gaps.iter()) {
                let in_use = fit
                    .recipe
                    .heal
                    .iter()
                    .chain(self.heals.fits.iter().filter_map(|(_, r)| r.heal.as_ref()))
                    .any(|h| h.gaps.iter().any(|x| x.sha256 == g.sha256));
                if !in_use {
                    self.store.unregister_map(&g.sha256);
                }
            }
        }
        self.heals.fits.push_back((key, fit.recipe.clone()));
        Ok(fit.recipe)
    }

    /// The teacher's hidden states entering each of its source layers (0 = the embeddings),
    /// batch by batch of `p`, kept for the search's later fits while they fit in
    /// [`TEACHER_CACHE_BYTES`]; `None` when they do not.
    fn cached_teacher_states(&mut self, teacher: &Recipe, p: &plan::Plan, key: String) -> Result<Option<Arc<Vec<Vec<Tensor>>>>, EvalError> {
        if let Some((_, s)) = self.heals.teachers.iter().find(|(k, _)| *k == key) {
            return Ok(Some(s.clone()));
        }
        let per_depth: u64 = p.batches.iter().map(|b| (b.ctx.batch * b.ctx.len * self.dims.hidden * self.dtype.size_in_bytes()) as u64).sum();
        let need = per_depth * (teacher.layers.len() as u64 + 1);
        if self.heals.teacher_bytes() + need > TEACHER_CACHE_BYTES {
            return Ok(None);
        }
        let mut hs = self.embed_batches(teacher, p)?;
        let mut states = vec![hs.clone()];
        for (l, layer) in teacher.layers.iter().enumerate() {
            let w = self.store.layer(l, layer, None)?;
            self.forward_batches(&w, p, &mut hs)?;
            states.push(hs.clone());
        }
        let states = Arc::new(states);
        self.heals.teachers.push((key, states.clone()));
        Ok(Some(states))
    }

    /// The embeddings of every batch of `p` under `recipe`'s embedding table.
    fn embed_batches(&mut self, recipe: &Recipe, p: &plan::Plan) -> Result<Vec<Tensor>, EvalError> {
        let table = self.store.embeddings(recipe)?;
        p.batches.iter().map(|b| forward::embed(&table, &b.ids, &self.dims)).collect::<Result<_, _>>().map_err(terr("heal fit"))
    }

    /// Every batch's hidden state `hs` one layer (`w`) further.
    fn forward_batches(&mut self, w: &LayerWeights, p: &plan::Plan, hs: &mut [Tensor]) -> Result<(), EvalError> {
        for (b, h) in p.batches.iter().zip(hs.iter_mut()) {
            *h = forward::layer_forward(w, h, &b.ctx, &self.dims).map_err(terr("heal fit"))?;
            self.stats.layer_forwards_run += 1;
        }
        Ok(())
    }

    /// The teacher's states entering source layer `depth` (its output after `depth` layers):
    /// read from the search's cache, or run forward from where the fit last needed them.
    fn teacher_at<'t>(&mut self, teacher: &'t mut TeacherStates, recipe: &Recipe, p: &plan::Plan, depth: usize) -> Result<&'t [Tensor], EvalError> {
        match teacher {
            TeacherStates::Kept(states) => Ok(&states[depth]),
            TeacherStates::Running { states, depth: at } => {
                while *at < depth {
                    let w = self.store.layer(*at, &recipe.layers[*at], None)?;
                    self.forward_batches(&w, p, states)?;
                    *at += 1;
                }
                Ok(states)
            }
        }
    }

    /// Fit a map for every gap of `recipe` against `teacher` on `sequences` (from
    /// [`Evaluator::heal_sequences`]); see the module docs. A heal the recipe already has is
    /// replaced. The maps are registered, so the healed recipe scores at once, in memory.
    pub fn fit_heal(&mut self, recipe: &Recipe, teacher: &Teacher, sequences: &[Vec<u32>], ridge: f64) -> Result<HealFit, EvalError> {
        self.fit_heal_with(recipe, teacher, sequences, ridge, false)
    }

    /// [`Evaluator::fit_heal`]; `keep_teacher`: keep the teacher's states for later fits on
    /// the same tokens (a search's).
    fn fit_heal_with(
        &mut self,
        recipe: &Recipe,
        teacher: &Teacher,
        sequences: &[Vec<u32>],
        ridge: f64,
        keep_teacher: bool,
    ) -> Result<HealFit, EvalError> {
        let started = std::time::Instant::now();
        let mut cand = recipe.clone();
        cand.heal = None;
        self.check_recipe(&cand)?;
        heal::check_arch(&cand)?;
        if !(ridge.is_finite() && ridge >= 0.0) {
            return Err(heal::HealError::Input(format!("the ridge must be a finite number >= 0 (got {ridge})")).into());
        }
        let teacher_recipe = heal::teacher_recipe(&cand, teacher)?;
        self.check_recipe(&teacher_recipe)?;
        let (gaps, unhealed) = heal::gaps(&cand);
        if sequences.is_empty() && !gaps.is_empty() {
            return Err(heal::HealError::Input("no calibration tokens to fit on".into()).into());
        }
        let d = self.dims.hidden;
        let mut set = plan::SequenceSet::default();
        for s in sequences {
            set.add_plain(s.clone());
        }
        let p = plan::finish(set, vec![], self.packing(), &self.rope, &self.device, self.dtype)?;
        let e = terr("heal fit");
        // Real (unpadded) rows of each batch, as flat positions.
        let mut real = Vec::with_capacity(p.batches.len());
        for b in &p.batches {
            let t = b.ctx.len;
            let rows: Vec<u32> = b.lengths.iter().enumerate().flat_map(|(r, &l)| (0..l).map(move |i| (r * t + i) as u32)).collect();
            real.push(Tensor::from_slice(&rows, rows.len(), &self.device).map_err(&e)?);
        }
        let tokens: usize = p.batches.iter().map(|b| b.lengths.iter().sum::<usize>()).sum();

        let mut maps = Maps::new();
        let mut healed = cand.clone();
        let mut heal_gaps = Vec::new();
        #[cfg(feature = "testkit")]
        LAST_SYSTEMS.with(|s| s.borrow_mut().clear());
        if !gaps.is_empty() {
            let mut hs = self.embed_batches(&cand, &p)?;
            let kept = match keep_teacher {
                true => {
                    let key = format!(
                        "{} {}",
                        serde_json::to_string(&teacher_recipe).map_err(|e| EvalError::Spec(e.to_string()))?,
                        heal::tokens_sha256(sequences)
                    );
                    self.cached_teacher_states(&teacher_recipe, &p, key)?
                }
                false => None,
            };
            let mut teacher_states = match kept {
                Some(states) => TeacherStates::Kept(states),
                None => TeacherStates::Running { states: self.embed_batches(&teacher_recipe, &p)?, depth: 0 },
            };
            for (l, layer) in cand.layers.iter().enumerate() {
                let w = self.store.layer(l, layer, None)?;
                let Some(g) = gaps.iter().find(|g| g.layer == l) else {
                    self.forward_batches(&w, &p, &mut hs)?;
                    continue;
                };
                let ts = self.teacher_at(&mut teacher_states, &teacher_recipe, &p, g.until)?;
                let mut gram = Tensor::zeros((d, d), DType::F64, &self.device).map_err(&e)?;
                let mut cross = gram.clone();
                for (i, b) in p.batches.iter().enumerate() {
                    let (out, mlp) = forward::layer_forward_parts(&w, &hs[i], &b.ctx, &self.dims).map_err(&e)?;
                    self.stats.layer_forwards_run += 1;
                    let flat = |x: &Tensor| x.reshape((b.ctx.batch * b.ctx.len, d))?.index_select(&real[i], 0)?.to_dtype(DType::F64);
                    let m = flat(&mlp).map_err(&e)?;
                    let y = (flat(&out).map_err(&e)? - &m).map_err(&e)?;
                    let target = (flat(&ts[i]).map_err(&e)? - y).map_err(&e)?;
                    let mt = m.t().map_err(&e)?;
                    gram = (gram + mt.matmul(&m).map_err(&e)?).map_err(&e)?;
                    cross = (cross + mt.matmul(&target).map_err(&e)?).map_err(&e)?;
                }
                let host = |x: &Tensor| x.flatten_all().and_then(|x| x.to_vec1::<f64>());
                let (gv, cv) = (host(&gram).map_err(&e)?, host(&cross).map_err(&e)?);
                let t = heal::solve(&gv, &cv, d, ridge, g.from)?;
                #[cfg(feature = "testkit")]
                LAST_SYSTEMS.with(|s| s.borrow_mut().push((g.layer, gv, cv)));
                let t: Vec<f32> = t.into_iter().map(|x| x as f32).collect();
                let gap = HealGap { layer: g.layer, from: g.from, until: g.until, map: heal::map_name(g.layer), sha256: heal::map_sha256(&t) };
                let fused = FusedMap { name: gap.map.clone(), sha256: gap.sha256.clone() };
                self.store.register_map(gap.sha256.clone(), Arc::new(t.clone()));
                maps.insert(gap.map.clone(), t);
                heal_gaps.push(gap);
                // Go on with what the healed layer computes (its fused weights).
                let fw = self.store.layer(l, layer, Some(&fused))?;
                self.forward_batches(&fw, &p, &mut hs)?;
            }
            healed.heal = Some(Box::new(Heal {
                file: heal::MAPS_FILE.into(),
                sha256: String::new(),
                teacher: teacher.clone(),
                tokens,
                ridge,
                calibration_sha256: heal::tokens_sha256(sequences),
                gaps: heal_gaps,
                unhealed: unhealed.clone(),
            }));
        }
        Ok(HealFit { recipe: healed, maps, unhealed, seconds: started.elapsed().as_secs_f64() })
    }
}

/// Write a fitted heal's maps beside `recipe_path` ([`heal::MAPS_FILE`]) and the healed
/// recipe itself, naming the file and its sha256. Returns the recipe as saved.
pub fn save(fit: &HealFit, recipe_path: &std::path::Path, d: usize) -> Result<Recipe, EvalError> {
    let mut recipe = fit.recipe.clone();
    if let Some(h) = &mut recipe.heal {
        let dir = recipe_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        let stem = recipe_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        // One maps file per recipe: `heal.safetensors` beside `tailor.yaml`, else `NAME.heal.safetensors`.
        let name = if stem == "tailor" || stem.is_empty() { heal::MAPS_FILE.to_string() } else { format!("{stem}.{}", heal::MAPS_FILE) };
        h.sha256 = heal::write_maps(&dir.join(&name), &fit.maps, d)?;
        h.file = name.into();
    }
    recipe.save(recipe_path)?;
    Ok(recipe)
}
