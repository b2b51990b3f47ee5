//! Shared test helpers: temporary folders, fixture families, the Python reference.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh temporary folder, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("hft-test-").tempdir().expect("temp dir")
}

/// The Python interpreter with torch, transformers and huggingface_hub installed:
/// `HF_TAILOR_PYTHON`, else `<repo>/.venv/bin/python` (made by `scripts/setup-python.sh`).
/// Missing Python is a test failure, never a skip: the cross-checks are the point.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_TAILOR_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(p.exists(), "no Python reference at {}: run `bash scripts/setup-python.sh` or set HF_TAILOR_PYTHON", p.display());
    p
}

/// A llama.cpp checkout with `convert_hf_to_gguf.py` and `gguf-py`: `HF_TAILOR_LLAMA_CPP`,
/// else `<repo>/.venv/llama.cpp` (made by `scripts/setup-llama-cpp.sh`). Missing is a
/// failure, never a skip.
pub fn llama_cpp() -> PathBuf {
    let p = env_or_repo("HF_TAILOR_LLAMA_CPP", ".venv/llama.cpp");
    assert!(
        p.join("convert_hf_to_gguf.py").is_file(),
        "no llama.cpp at {}: run `bash scripts/setup-llama-cpp.sh` or set HF_TAILOR_LLAMA_CPP",
        p.display()
    );
    p
}

/// llama.cpp's runtime: node-llama-cpp with its prebuilt CPU binaries and a `node`:
/// `HF_TAILOR_LLAMA_CPP_RUNTIME`, else `<repo>/.venv/node-llama-cpp` (made by
/// `scripts/setup-llama-cpp.sh`). Missing is a failure, never a skip.
pub fn llama_cpp_runtime() -> PathBuf {
    let p = env_or_repo("HF_TAILOR_LLAMA_CPP_RUNTIME", ".venv/node-llama-cpp");
    assert!(
        p.join("node").exists() && p.join("node_modules/node-llama-cpp").is_dir(),
        "no llama.cpp runtime at {}: run `bash scripts/setup-llama-cpp.sh` or set HF_TAILOR_LLAMA_CPP_RUNTIME",
        p.display()
    );
    p
}

/// The path in environment variable `var`, else `<repo>/<default>`.
fn env_or_repo(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(default))
}

/// Run `tests/py/<script>` with `args`; panics with its stderr unless it exits 0. Returns stdout.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("TOKENIZERS_PARALLELISM", "false")
        .output()
        .expect("spawn python");
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// The hf-tailor binary built for this test run.
pub fn hf_tailor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hf-tailor"))
}

/// Largest |ours − theirs| over logits rows, `theirs` as a transformers script wrote them
/// (positions × vocabulary, as JSON); panics when the shapes differ.
pub fn max_logit_diff(ours: &[Vec<f32>], theirs: &serde_json::Value) -> f64 {
    let theirs = theirs.as_array().expect("rows");
    assert_eq!(ours.len(), theirs.len(), "positions");
    let mut m = 0f64;
    for (a, b) in ours.iter().zip(theirs) {
        let b = b.as_array().expect("a row");
        assert_eq!(a.len(), b.len(), "vocabulary");
        for (x, y) in a.iter().zip(b) {
            m = m.max((*x as f64 - y.as_f64().expect("a number")).abs());
        }
    }
    m
}

/// A multiple-choice item.
pub fn mc_item(context: &str, choices: &[&str], label: usize) -> hf_tailor::eval::McItem {
    hf_tailor::eval::McItem { context: context.into(), choices: choices.iter().map(|c| c.to_string()).collect(), label, subject: None }
}
