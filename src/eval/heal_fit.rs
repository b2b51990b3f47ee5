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
use super::{terr, EvalError, Evaluator};
use crate::heal::{self, Maps};
use crate::layout::FusedMap;
use crate::recipe::{Heal, HealGap, Recipe, Teacher};

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

    /// Fit a map for every gap of `recipe` against `teacher` on `sequences` (from
    /// [`Evaluator::heal_sequences`]); see the module docs. A heal the recipe already has is
    /// replaced. The maps are registered, so the healed recipe scores at once, in memory.
    pub fn fit_heal(&mut self, recipe: &Recipe, teacher: &Teacher, sequences: &[Vec<u32>], ridge: f64) -> Result<HealFit, EvalError> {
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
            let table = self.store.embeddings(&cand)?;
            let mut hs: Vec<Tensor> = p.batches.iter().map(|b| forward::embed(&table, &b.ids, &self.dims)).collect::<Result<_, _>>().map_err(&e)?;
            let table = self.store.embeddings(&teacher_recipe)?;
            let mut ts: Vec<Tensor> = p.batches.iter().map(|b| forward::embed(&table, &b.ids, &self.dims)).collect::<Result<_, _>>().map_err(&e)?;
            let mut teacher_depth = 0;
            for (l, layer) in cand.layers.iter().enumerate() {
                let w = self.store.layer(l, layer, None)?;
                let Some(g) = gaps.iter().find(|g| g.layer == l) else {
                    for (b, h) in p.batches.iter().zip(hs.iter_mut()) {
                        *h = forward::layer_forward(&w, h, &b.ctx, &self.dims).map_err(&e)?;
                        self.stats.layer_forwards_run += 1;
                    }
                    continue;
                };
                while teacher_depth < g.until {
                    let tw = self.store.layer(teacher_depth, &teacher_recipe.layers[teacher_depth], None)?;
                    for (b, h) in p.batches.iter().zip(ts.iter_mut()) {
                        *h = forward::layer_forward(&tw, h, &b.ctx, &self.dims).map_err(&e)?;
                        self.stats.layer_forwards_run += 1;
                    }
                    teacher_depth += 1;
                }
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
                for (b, h) in p.batches.iter().zip(hs.iter_mut()) {
                    *h = forward::layer_forward(&fw, h, &b.ctx, &self.dims).map_err(&e)?;
                    self.stats.layer_forwards_run += 1;
                }
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
