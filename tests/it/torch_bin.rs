//! PyTorch `.bin` sources: a `torch.save` state dict (single file, or shards with an index)
//! reads to exactly the tensors of its safetensors twin, written by transformers; a pickle
//! carrying code is refused without running it; a truncated archive is a one-line error.

use std::path::Path;

use hf_tailor::checkpoint::{torch_bin, Checkpoint};

use crate::common;

/// Every tensor of `a` equals `b`'s: same names, dtypes, shapes and bytes.
fn assert_same_tensors(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>());
    for name in a.tensors.keys() {
        let (x, y) = (a.view(name).unwrap(), b.view(name).unwrap());
        assert_eq!((x.dtype, &x.shape), (y.dtype, &y.shape), "{name}");
        assert!(x.data == y.data, "{name}: bytes differ");
    }
}

fn one_line_failure(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "should fail: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn bin_checkpoints_read_like_their_safetensors_twins_and_pickled_code_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = tmp.path().join("fx");
    let marker = tmp.path().join("pwned");
    common::run_python("torch_bin_fixture.py", &[fx.to_str().unwrap(), marker.to_str().unwrap()]);
    let cache = tmp.path().join("cache");

    for (bin, st) in [("bin", "st"), ("bin16", "st16")] {
        let conv = torch_bin::converted_folder_in(&fx.join(bin), &cache).unwrap();
        assert!(conv.starts_with(&cache));
        let ours = Checkpoint::open(&conv).unwrap();
        let twin = Checkpoint::open(&fx.join(st)).unwrap();
        assert_same_tensors(&ours, &twin);
        // A second open reuses the conversion.
        assert_eq!(torch_bin::converted_folder_in(&fx.join(bin), &cache).unwrap(), conv);
    }
    // The user's folder is left as it was.
    let mut names: Vec<_> = std::fs::read_dir(fx.join("bin16")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"]);

    // Through the binary, with the Hub cache where Checkpoint::open converts into.
    let hub_cache = tmp.path().join("hub-cache");
    let tasks = tmp.path().join("mc.jsonl");
    std::fs::write(&tasks, r#"{"context": "a", "choices": [" b", " c"], "label": 0}"#).unwrap();
    let eval = |model: &Path| {
        common::hf_tailor()
            .args(["eval", "--model", model.to_str().unwrap(), "--tasks", tasks.to_str().unwrap()])
            .env("HF_HUB_CACHE", &hub_cache)
            .output()
            .unwrap()
    };
    let err = one_line_failure(&eval(&fx.join("evil")));
    assert!(err.contains("refused pickle global") && err.contains("system"), "{err}");
    assert!(!marker.exists(), "the pickled os.system ran");
    let err = one_line_failure(&eval(&fx.join("trunc")));
    assert!(err.contains("pytorch_model.bin") && err.contains("not a PyTorch zip archive"), "{err}");
    // Nothing half-converted is left in the cache.
    let left: Vec<_> = std::fs::read_dir(hub_cache.join("hf-tailor-converted")).map(|d| d.count()).into_iter().collect();
    assert!(left.iter().all(|&n| n == 0), "{left:?}");

    // The control: an unrestricted loader does run the payload, so the check above can fail.
    common::run_python("torch_bin_fixture.py", &["--unsafe-load", fx.join("evil/pytorch_model.bin").to_str().unwrap()]);
    assert!(marker.exists(), "the control did not create the marker");
}
