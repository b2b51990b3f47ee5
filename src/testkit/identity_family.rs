//! A tiny real family whose best tailoring is known by construction, for end-to-end tests
//! and the search benchmark (like [`crate::testkit::fixture`], but with tasks that need the search).
//!
//! The base (6 Llama layers) has exact identity layers 3 and 4: zero `o_proj` and
//! `down_proj`, so the residual stream passes through unchanged. Sibling `task` changes
//! layer 1 only; sibling `distractor` changes layer 5 only. The tasks are labelled by the
//! teacher "base with `task`'s layer 1": `needs_task` keeps items where the base disagrees
//! with the teacher, `avoid_distractor` items where the teacher with `distractor`'s layer 5
//! disagrees. Keeping 4 of the 6 layers, 100 % on both tasks means dropping layers 3 and 4,
//! carrying `task`'s layer 1 and keeping the base's layer 5 (siblings' untouched layers are
//! the base's, so several recipes reach it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::arch::Role;
use crate::checkpoint::{Checkpoint, CheckpointError, Family};
use crate::eval::{EvalError, EvalOptions, Evaluator, McItem, Task, TaskData};
use crate::recipe::{EdgePolicy, LayerRule, Recipe, Rule, SourceModel};
use crate::testkit::fixture::{perturb_layers, random_weights, write_model, TinySpec};

/// Source layers of the family.
pub const LAYERS: usize = 6;
/// The base's identity layers.
pub const IDENTITY: [usize; 2] = [3, 4];
/// Recipe names of the models, base first.
pub const NAMES: [&str; 3] = ["base", "task", "distractor"];

/// The family on disk and its recipe sources.
pub struct IdentityFamily {
    pub dirs: Vec<PathBuf>,
    pub base: SourceModel,
    pub siblings: Vec<SourceModel>,
}

impl IdentityFamily {
    /// Write the three models under `root` (`root/base`, `root/task`, `root/distractor`).
    pub fn write(root: &Path) -> std::io::Result<Self> {
        let spec = TinySpec { layers: LAYERS, ..TinySpec::llama() };
        let arch = spec.arch();
        let mut base = random_weights(&spec, 11);
        for l in IDENTITY {
            for role in [Role::O, Role::Down] {
                let name = arch.layer_tensor_name(l, arch.suffix(role).expect("llama has o_proj and down_proj"));
                base.get_mut(&name).expect("fixture tensor").1.iter_mut().for_each(|v| *v = 0.0);
            }
        }
        let task = perturb_layers(&spec, &base, &[1], 1.0, 12);
        let distractor = perturb_layers(&spec, &base, &[5], 1.0, 13);
        let dirs: Vec<PathBuf> = NAMES.iter().map(|n| root.join(n)).collect();
        for (d, w) in dirs.iter().zip([&base, &task, &distractor]) {
            write_model(d, &spec, w)?;
        }
        let src = |i: usize| SourceModel::local(NAMES[i], &dirs[i]);
        Ok(Self { base: src(0), siblings: vec![src(1), src(2)], dirs })
    }

    /// Open and check the family.
    pub fn open(&self) -> Result<Family, CheckpointError> {
        let mut models = NAMES.iter().zip(&self.dirs).map(|(n, d)| Ok((n.to_string(), Checkpoint::open(d)?)));
        let base = models.next().expect("three models")?;
        Family::new(base, models.collect::<Result<Vec<_>, CheckpointError>>()?)
    }

    /// A full-depth recipe taking layer ℓ from `rules[ℓ]`.
    pub fn full_recipe(&self, rules: [&str; LAYERS]) -> Recipe {
        let layers = rules.iter().enumerate().map(|(from, r)| LayerRule { from, rule: Rule::Take(r.to_string()) }).collect();
        Recipe::new("llama", LAYERS, self.base.clone(), self.siblings.clone(), layers, EdgePolicy::FollowLayers)
    }

    /// The teacher: the base with `task`'s layer 1.
    pub fn teacher(&self) -> Recipe {
        self.full_recipe(["base", "task", "base", "base", "base", "base"])
    }

    /// The two tasks (at most `per_task` items each), labelled by the teacher.
    pub fn tasks(&self, family: Arc<Family>, per_task: usize) -> Result<Vec<Task>, EvalError> {
        let mut ev = Evaluator::new(family, vec![], EvalOptions::default())?;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let word = |rng: &mut ChaCha8Rng, n: usize| (0..n).map(|_| (b'a' + rng.random_range(0..26u8)) as char).collect::<String>();
        let items: Vec<McItem> = (0..10 * per_task)
            .map(|_| {
                let n = rng.random_range(6..14);
                let context = word(&mut rng, n);
                let choices = vec![format!(" {}", word(&mut rng, 3)), format!(" {}", word(&mut rng, 3))];
                McItem { context, choices, label: 0, subject: None }
            })
            .collect();
        let t = ev.choice_log_likelihoods(&self.teacher(), &items)?;
        let plain = ev.choice_log_likelihoods(&self.full_recipe(["base"; LAYERS]), &items)?;
        let distracted = ev.choice_log_likelihoods(&self.full_recipe(["base", "task", "base", "base", "base", "distractor"]), &items)?;
        let argmax = |v: &[f64]| (0..v.len()).max_by(|a, b| v[*a].total_cmp(&v[*b])).expect("two choices");
        let pick = |other: &[Vec<f64>]| -> Vec<McItem> {
            items
                .iter()
                .enumerate()
                .filter(|(i, _)| argmax(&t[*i]) != argmax(&other[*i]))
                .map(|(i, it)| McItem { label: argmax(&t[i]), ..it.clone() })
                .take(per_task)
                .collect()
        };
        Ok(vec![
            Task::new("needs_task", TaskData::MultipleChoice(pick(&plain))),
            Task::new("avoid_distractor", TaskData::MultipleChoice(pick(&distracted))),
        ])
    }
}
