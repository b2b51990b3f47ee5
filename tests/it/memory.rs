//! The search under a real memory limit. An address-space limit (`prlimit --as`, what
//! `ulimit -v` sets) needs no privileges, unlike a cgroup, so CI can set it. The limit leaves
//! the search 256 MiB of room beyond what it maps at start (its binary, the family's files);
//! the search's distinct merged layers (about 0.5 GB) exceed that: with the evaluator's old
//! fixed bounds (8 + 4 + 4 GiB) its caches grew into the limit and the process aborted on a
//! failed allocation (`memory allocation of 2097152 bytes failed`, seen with the binary
//! before `eval::budget`); the bounds derived from the limit keep them inside it.

use std::path::Path;
use std::process::Command;

use hf_tailor::testkit::fixture::{write_family, TinySpec};

use crate::common::tempdir;

/// Room left to the search beyond the address space it maps at start.
const ROOM: u64 = 256 << 20;

/// `hf-tailor search` on the family under `root` under an address-space limit of `limit`
/// bytes, with `extra` arguments. Compute threads and malloc arenas are pinned so that the
/// address space the process maps besides its caches does not depend on the core count.
fn limited_search(root: &Path, limit: u64, extra: &[&str]) -> std::process::Output {
    let dirs = |names: &[&str]| names.iter().map(|n| root.join(n).display().to_string()).collect::<Vec<_>>().join(",");
    Command::new("prlimit")
        .arg(format!("--as={limit}"))
        .arg(env!("CARGO_BIN_EXE_hf-tailor"))
        .args(["search", "--base", &dirs(&["base"]), "--finetunes", &dirs(&["sib1", "sib2", "sib3"]), "--keep-layers", "6"])
        .args(["--tasks", &format!("mc:t={}", root.join("t.jsonl").display()), "--baselines", "none"])
        .args(["--optimizer", "random", "--budgets", "12", "--out", &root.join("out").display().to_string()])
        .args(extra)
        .env("RAYON_NUM_THREADS", "2")
        .env("MALLOC_ARENA_MAX", "2")
        .output()
        .expect("prlimit runs (util-linux)")
}

/// Bytes of `1.5 GiB`, `781.2 MiB`, … (the CLI's human sizes) at the start of `s`.
fn bytes(s: &str) -> f64 {
    let mut it = s.split_whitespace();
    let v: f64 = it.next().unwrap().parse().unwrap();
    v * match it.next().unwrap().trim_end_matches([',', ':']) {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => (1u64 << 20) as f64,
        "GiB" => (1u64 << 30) as f64,
        u => panic!("unit {u}"),
    }
}

/// (peak, bound) in bytes of one cache on the closing summary's `memory (peak of bound …)` line.
fn peak_of(stderr: &str, cache: &str) -> (f64, f64) {
    let line = stderr.lines().find(|l| l.contains("memory (peak of bound")).unwrap_or_else(|| panic!("no memory summary:\n{stderr}"));
    let rest = &line[line.find(cache).unwrap_or_else(|| panic!("no {cache} in {line}")) + cache.len()..];
    let (peak, bound) = rest.split_once(" of ").unwrap();
    (bytes(peak), bytes(bound))
}

#[test]
fn a_search_under_an_address_space_limit_plans_within_it_and_completes() {
    let dir = tempdir();
    // 7 MB a layer in f32; three siblings, so most kept layers are merges at a new λ.
    let spec = TinySpec { layers: 8, hidden: 256, intermediate: 2048, heads: 4, kv_heads: 2, shard_bytes: None, ..TinySpec::llama() };
    write_family(dir.path(), &spec, 3, 11).unwrap();
    let items: Vec<String> =
        (0..12).map(|i| serde_json::json!({"context": format!("item {i} says"), "choices": [" yes", " no"], "label": i % 2}).to_string()).collect();
    std::fs::write(dir.path().join("t.jsonl"), items.join("\n") + "\n").unwrap();

    // What the search maps at start: a loose limit less what its plan says is available.
    let loose = 16u64 << 30;
    let o = limited_search(dir.path(), loose, &["--trials", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let plan = err.lines().find(|l| l.contains("memory plan (host memory, ")).unwrap_or_else(|| panic!("no plan:\n{err}"));
    // The tightest limit comes first; the address-space limit with what it leaves free.
    let free = match plan.split_once("address-space limit 16.0 GiB: ") {
        Some((_, rest)) => bytes(rest),
        None => bytes(&plan["hf-tailor: memory plan (host memory, ".len()..]),
    };
    assert!(plan.contains("address-space limit 16.0 GiB"), "{plan}");
    let mapped = loose - free as u64;
    let limit = mapped + ROOM;
    let _ = std::fs::remove_dir_all(dir.path().join("out"));

    // The old defaults, asked for explicitly: refused at start, in one line that says what
    // is available and what each bound asks.
    let o = limited_search(dir.path(), limit, &["--trials", "16", "--weight-cache-mb", "8192", "--prefix-cache-mb", "4096", "--state-mb", "4096"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("available (address-space limit "), "{err}");
    assert!(last.ends_with("asked --weight-cache-mb 8.0 GiB, --prefix-cache-mb 4.0 GiB, --state-mb 4.0 GiB (16.0 GiB in all)"), "{err}");
    assert!(!dir.path().join("out/journal.jsonl").exists(), "refused before the first trial");

    // The derived defaults: the plan is printed at the start, the search completes, and the
    // merged layers filled their bound (it wanted more than the limit leaves room for).
    let o = limited_search(dir.path(), limit, &["--trials", "16"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("memory plan (host memory, ") && err.contains("available: address-space limit "), "{err}");
    let (peak, bound) = peak_of(&err, "merged layers ");
    assert!(bound < ROOM as f64 && peak <= bound && peak > 0.5 * bound, "merged layers {peak} of {bound} bytes:\n{err}");
    assert!(dir.path().join("out/tailor.yaml").is_file());
}
