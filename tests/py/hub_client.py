"""Drive the official huggingface_hub client against the loopback test Hub (HF_ENDPOINT),
without Xet (HF_HUB_DISABLE_XET=1). Prints JSON for the Rust test to check.

  download REPO REVISION FILE...   hf_hub_download each file + snapshot_download
  upload REPO FOLDER               create_repo(private) + upload_folder
  cached REPO FILE                 try_to_load_from_cache (no network)
  errors REPO                      the typed errors for a missing repo / revision / file and a bad token
"""
import hashlib
import json
import os
import sys

import huggingface_hub as hh
from huggingface_hub import HfApi, errors

assert os.environ.get("HF_HUB_DISABLE_XET") == "1", "run without Xet"
cmd, args = sys.argv[1], sys.argv[2:]


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


if cmd == "download":
    repo, rev, files = args[0], args[1], args[2:]
    out = {"files": {}, "snapshot": {}}
    for f in files:
        out["files"][f] = sha(hh.hf_hub_download(repo, f, revision=rev))
    snap = hh.snapshot_download(repo, revision=rev)
    for root, _, names in os.walk(snap):
        for n in names:
            p = os.path.join(root, n)
            out["snapshot"][os.path.relpath(p, snap)] = sha(p)
    out["commit"] = os.path.basename(snap)
    print(json.dumps(out))
elif cmd == "upload":
    repo, folder = args
    api = HfApi()
    url = api.create_repo(repo, private=True, exist_ok=True)
    info = api.upload_folder(repo_id=repo, folder_path=folder, commit_message="upload from huggingface_hub")
    again = api.create_repo(repo, exist_ok=True)  # an existing repo is fine
    print(json.dumps({"url": str(url), "commit": info.oid, "again": str(again), "private": api.model_info(repo).private}))
elif cmd == "cached":
    repo, f = args
    p = hh.try_to_load_from_cache(repo, f)
    print(json.dumps({"path": p if isinstance(p, str) else None, "sha": sha(p) if isinstance(p, str) else None}))
elif cmd == "errors":
    repo = args[0]
    out = {}
    try:
        hh.hf_hub_download("nobody/missing", "config.json")
    except errors.RepositoryNotFoundError:
        out["missing_repo"] = "RepositoryNotFoundError"
    try:
        hh.hf_hub_download(repo, "config.json", revision="no-such-branch")
    except errors.RevisionNotFoundError:
        out["missing_revision"] = "RevisionNotFoundError"
    try:
        hh.hf_hub_download(repo, "no-such-file.json")
    except errors.EntryNotFoundError:
        out["missing_file"] = "EntryNotFoundError"
    try:
        HfApi(token="hf_wrong").model_info(repo)
    except errors.HfHubHTTPError as e:
        out["bad_token"] = e.response.status_code
    print(json.dumps(out))
else:
    sys.exit(f"unknown command {cmd}")
