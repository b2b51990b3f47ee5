//! Push transfers at their edges, against the loopback test Hub: multipart objects of
//! exactly k chunks and one byte either side, a single LFS part just above the LFS
//! threshold, `chunk_size` as a number, parts that fail once and succeed on retry, and a
//! commit that fails after its uploads, resumed without sending any byte twice.

use std::path::Path;

use hf_tailor::hub::auth::Token;
use hf_tailor::hub::{self, HubConfig};

use crate::common;
use crate::testhub::{sha256_hex, Entry, TestHub, TOKEN};

const LFS: u64 = 1000;
const MULTIPART: u64 = 10_000;
const CHUNK: u64 = 4096;

fn cfg(hub: &TestHub, cache: &Path) -> HubConfig {
    HubConfig::new(&hub.url, Token::new(TOKEN), cache.to_path_buf())
}

fn opts(max_attempts: u32) -> hub::PushOptions {
    hub::PushOptions { max_attempts, ..hub::PushOptions::default() }
}

/// Deterministic bytes that differ from file to file.
fn bytes(n: u64, salt: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(salt) >> 13) as u8).collect()
}

/// (name, size): k·chunk and k·chunk ± 1 for multipart, just above the LFS threshold for a
/// single part, just at the multipart threshold (one part), and a small regular file.
fn sizes() -> Vec<(&'static str, u64)> {
    vec![
        ("exact.safetensors", 3 * CHUNK),
        ("plus-one.safetensors", 3 * CHUNK + 1),
        ("minus-one.safetensors", 3 * CHUNK - 1),
        ("above-lfs.safetensors", LFS + 1),
        ("at-multipart.safetensors", MULTIPART),
        ("config.json", 50),
    ]
}

fn folder(root: &Path) -> (std::path::PathBuf, Vec<(String, Vec<u8>)>) {
    let dir = root.join("edges");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<(String, Vec<u8>)> = sizes()
        .into_iter()
        .enumerate()
        .map(|(i, (n, s))| {
            // Text stays a regular file; binary content of any size goes by LFS, as on the Hub.
            let b = if n.ends_with(".json") { format!("{{\"pad\": \"{}\"}}", "x".repeat(s as usize - 11)).into_bytes() } else { bytes(s, i as u32) };
            (n.to_string(), b)
        })
        .collect();
    for (n, b) in &files {
        std::fs::write(dir.join(n), b).unwrap();
    }
    (dir, files)
}

/// Parts a multipart object of `size` bytes is cut into (0: a single basic upload).
fn parts(size: u64) -> usize {
    if size > MULTIPART {
        size.div_ceil(CHUNK) as usize
    } else {
        0
    }
}

fn assert_pushed(hub: &TestHub, repo: &str, files: &[(String, Vec<u8>)]) {
    for (n, b) in files {
        assert_eq!(hub.file("models", repo, "main", n).as_ref(), Some(b), "{n} differs on the Hub");
        let lfs = b.len() as u64 >= LFS;
        match hub.entry("models", repo, "main", n) {
            Some(Entry::Lfs { sha256, size }) => assert!(lfs && sha256 == sha256_hex(b) && size == b.len() as u64, "{n}"),
            Some(Entry::Regular(_)) => assert!(!lfs, "{n} should be LFS"),
            other => panic!("{n}: {other:?}"),
        }
    }
}

#[test]
fn multipart_objects_at_the_chunk_edges_arrive_intact_with_string_or_numeric_chunk_size() {
    for numeric in [false, true] {
        let hub = TestHub::start();
        hub.set_thresholds(LFS, MULTIPART, CHUNK);
        hub.numeric_chunk_size(numeric);
        let tmp = common::tempdir();
        let (dir, files) = folder(tmp.path());
        let report = hub::push_folder(&cfg(&hub, &tmp.path().join("cache")), &dir, "tester/edges", &opts(2)).unwrap();
        assert_pushed(&hub, "tester/edges", &files);
        let st = hub.stats();
        let want_parts: usize = sizes().iter().map(|(_, s)| parts(*s)).sum();
        assert_eq!(want_parts, 3 + 4 + 3, "k chunks, k+1 for one byte more, k for one byte less");
        assert_eq!(st.part_uploads, want_parts, "numeric chunk_size {numeric}: {:?}", hub.log());
        assert_eq!(st.completions, 3);
        // Above the LFS threshold but not above the multipart one: one basic PUT each.
        assert_eq!(st.basic_uploads, 2, "{:?}", hub.log());
        assert_eq!((report.lfs_files, report.lfs_uploaded), (5, 5));
    }
}

#[test]
fn parts_that_fail_once_are_retried_and_the_object_completes() {
    let hub = TestHub::start();
    hub.set_thresholds(LFS, MULTIPART, CHUNK);
    // The first and a middle part of every multipart object fail once.
    hub.fail_parts_once(&[1, 3]);
    let tmp = common::tempdir();
    let (dir, files) = folder(tmp.path());
    let report = hub::push_folder(&cfg(&hub, &tmp.path().join("cache")), &dir, "tester/retry", &opts(3)).unwrap();
    assert_pushed(&hub, "tester/retry", &files);
    let st = hub.stats();
    let want_parts: usize = sizes().iter().map(|(_, s)| parts(*s)).sum();
    // Every multipart object has parts 1 and 3: each is sent twice, everything else once.
    assert_eq!(st.part_uploads, want_parts + 3 * 2, "{:?}", hub.log());
    assert_eq!(st.completions, 3);
    assert_eq!(report.lfs_uploaded, 5);
}

#[test]
fn a_commit_failing_after_the_uploads_resumes_without_sending_anything_twice() {
    let hub = TestHub::start();
    hub.set_thresholds(LFS, MULTIPART, CHUNK);
    let tmp = common::tempdir();
    let (dir, files) = folder(tmp.path());
    let c = cfg(&hub, &tmp.path().join("cache"));
    // The first push's commit fails (a commit is not retried: a lost answer to one that
    // went through would commit twice).
    hub.fail_commits(1);
    let e = hub::push_folder(&c, &dir, "tester/commit", &opts(2)).unwrap_err();
    let msg = format!("{e} {e:?}");
    assert!(msg.contains("500") || msg.to_lowercase().contains("commit"), "{msg}");
    assert!(!msg.contains(TOKEN), "{msg}");
    assert!(hub.file("models", "tester/commit", "main", "exact.safetensors").is_none(), "nothing committed");
    assert_eq!(hub.log().iter().filter(|l| l.contains("/commit/main")).count(), 1, "{:?}", hub.log());
    let first = hub.stats();
    let want_parts: usize = sizes().iter().map(|(_, s)| parts(*s)).sum();
    assert_eq!((first.part_uploads, first.basic_uploads, first.completions), (want_parts, 2, 3), "{:?}", hub.log());
    // The re-run finds every object stored: it sends no LFS byte, only the commit.
    hub.clear_log();
    let report = hub::push_folder(&c, &dir, "tester/commit", &opts(2)).unwrap();
    let st = hub.stats();
    assert_eq!((st.part_uploads, st.basic_uploads, st.completions), (0, 0, 0), "{:?}", hub.log());
    assert_eq!((report.lfs_uploaded, report.lfs_already_present, report.bytes_uploaded), (0, 5, 0), "{report:?}");
    assert_eq!(hub.log().iter().filter(|l| l.contains("/commit/main")).count(), 1, "{:?}", hub.log());
    assert_pushed(&hub, "tester/commit", &files);
}
