//! The built-in demo family (`assets/demo-family`, made by `scripts/make_demo_family.py`):
//! a tiny trained Llama base and three siblings each sharpened on one synthetic skill, with
//! a calibration split (what the search optimises) and a held-out test split (what the
//! table reports) for each skill. The files are embedded in the binary so that
//! `hf-tailor demo` works offline from any folder, `cargo install`ed or not.

use std::path::{Path, PathBuf};

/// The siblings, in the order the demo lists them.
pub const SIBLINGS: [&str; 3] = ["arith", "reverse", "recall"];
/// The skills (task names); each sibling sharpens the skill of the same name.
pub const SKILLS: [&str; 3] = ["arith", "reverse", "recall"];

/// What each skill asks, for reports and cards (as the README's table of the family says).
pub const SKILL_DESCRIPTIONS: [(&str, &str); 3] = [
    ("arith", "the last digit of the sum of two two-digit numbers (`47+38=` → `5`)"),
    ("reverse", "the next letter of a word written backwards (`rev kqzmw=wmz` → `q`)"),
    ("recall", "the digit a fixed table of 700 three-letter keys gives a key (`fact rdf=` → `6`), knowledge held in the weights"),
];

/// `task` (one of [`SKILLS`], read from the family's `split` folder) described as the demo
/// family's skill rather than as an anonymous local file.
pub fn describe(task: &mut crate::eval::Task, split: &str) {
    if let Some((_, d)) = SKILL_DESCRIPTIONS.iter().find(|(s, _)| *s == task.name) {
        let a = &mut task.about;
        a.description = Some(format!("{d}; a synthetic skill of the demo family (`scripts/make_demo_family.py`)"));
        a.title = format!("demo family: {}, {split} split", task.name);
        a.split = Some(split.to_string());
    }
}

macro_rules! model_files {
    ($model:literal) => {
        [
            ("config.json", include_bytes!(concat!("../../assets/demo-family/", $model, "/config.json")).as_slice()),
            ("generation_config.json", include_bytes!(concat!("../../assets/demo-family/", $model, "/generation_config.json")).as_slice()),
            ("model.safetensors", include_bytes!(concat!("../../assets/demo-family/", $model, "/model.safetensors")).as_slice()),
            ("special_tokens_map.json", include_bytes!(concat!("../../assets/demo-family/", $model, "/special_tokens_map.json")).as_slice()),
            ("tokenizer.json", include_bytes!(concat!("../../assets/demo-family/", $model, "/tokenizer.json")).as_slice()),
            ("tokenizer_config.json", include_bytes!(concat!("../../assets/demo-family/", $model, "/tokenizer_config.json")).as_slice()),
        ]
    };
}

macro_rules! task_files {
    ($split:literal) => {
        [
            ("arith.jsonl", include_bytes!(concat!("../../assets/demo-family/tasks/", $split, "/arith.jsonl")).as_slice()),
            ("reverse.jsonl", include_bytes!(concat!("../../assets/demo-family/tasks/", $split, "/reverse.jsonl")).as_slice()),
            ("recall.jsonl", include_bytes!(concat!("../../assets/demo-family/tasks/", $split, "/recall.jsonl")).as_slice()),
        ]
    };
}

type Files = [(&'static str, &'static [u8]); 6];
type Tasks = [(&'static str, &'static [u8]); 3];

const MODELS: [(&str, Files); 4] =
    [("base", model_files!("base")), ("arith", model_files!("arith")), ("reverse", model_files!("reverse")), ("recall", model_files!("recall"))];
const TASKS: [(&str, Tasks); 2] = [("calibration", task_files!("calibration")), ("test", task_files!("test"))];

/// Where [`write_family`] put the family.
#[derive(Debug, Clone)]
pub struct DemoFamily {
    pub root: PathBuf,
    pub base: PathBuf,
    pub siblings: Vec<PathBuf>,
    /// `calibration/<skill>.jsonl`, in [`SKILLS`] order.
    pub calibration: Vec<PathBuf>,
    /// `test/<skill>.jsonl`, in [`SKILLS`] order.
    pub test: Vec<PathBuf>,
}

/// The layout of a family folder at `root` (as written by [`write_family`] or the script).
pub fn layout(root: &Path) -> DemoFamily {
    DemoFamily {
        root: root.to_path_buf(),
        base: root.join("base"),
        siblings: SIBLINGS.iter().map(|s| root.join(s)).collect(),
        calibration: SKILLS.iter().map(|s| root.join("tasks/calibration").join(format!("{s}.jsonl"))).collect(),
        test: SKILLS.iter().map(|s| root.join("tasks/test").join(format!("{s}.jsonl"))).collect(),
    }
}

/// Write the embedded family under `root` (files already identical are left alone).
pub fn write_family(root: &Path) -> std::io::Result<DemoFamily> {
    for (model, files) in &MODELS {
        let dir = root.join(model);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in files {
            write_if_changed(&dir.join(name), bytes)?;
        }
    }
    for (split, files) in &TASKS {
        let dir = root.join("tasks").join(split);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in files {
            write_if_changed(&dir.join(name), bytes)?;
        }
    }
    Ok(layout(root))
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    crate::fsutil::write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_family_is_the_assets_folder() {
        let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo-family");
        for (model, files) in &MODELS {
            for (name, bytes) in files {
                let on_disk = std::fs::read(assets.join(model).join(name)).expect("asset file");
                assert!(on_disk == *bytes, "{model}/{name} differs from the embedded copy");
            }
        }
        let l = layout(&assets);
        for p in l.calibration.iter().chain(&l.test).chain(std::iter::once(&l.base)).chain(&l.siblings) {
            assert!(p.exists(), "{} is missing", p.display());
        }
    }
}
