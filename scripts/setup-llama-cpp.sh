#!/usr/bin/env bash
# Fetch llama.cpp's converter (convert_hf_to_gguf.py + gguf-py) into <repo>/.venv/llama.cpp,
# for the test that converts a tailored checkpoint to GGUF. llama.cpp is not on PyPI; the
# npm package node-llama-cpp ships a git bundle of a pinned llama.cpp release, so this
# needs only the npm registry (plain HTTPS, no node), tar and git. Idempotent.
#
#   bash scripts/setup-llama-cpp.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo/.venv/llama.cpp"
version="3.22.1"
sha256="a0d9dd80eacd2ab1cfe71aee57ac8a806487fd70b3d2a38fbec637752d9e5c5f"
commit="de3ff815ea7d559ee917f063901b8986f038abc6"
registry="${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org}"

if [[ -f "$dest/convert_hf_to_gguf.py" && "$(git -C "$dest" rev-parse HEAD 2>/dev/null)" == "$commit" ]]; then
    echo "setup-llama-cpp: $dest is up to date (llama.cpp ${commit:0:8})"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "setup-llama-cpp: fetching node-llama-cpp $version (llama.cpp ${commit:0:8}) from $registry"
curl -fsSL --retry 3 -o "$work/pkg.tgz" "${registry%/}/node-llama-cpp/-/node-llama-cpp-$version.tgz"
got="$( (command -v sha256sum >/dev/null && sha256sum "$work/pkg.tgz" || shasum -a 256 "$work/pkg.tgz") | cut -d' ' -f1)"
if [[ "$got" != "$sha256" ]]; then
    echo "setup-llama-cpp: node-llama-cpp-$version.tgz has sha256 $got, expected $sha256" >&2
    exit 1
fi
tar -xzf "$work/pkg.tgz" -C "$work" package/llama/gitRelease.bundle
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
git -c advice.detachedHead=false -c init.defaultBranch=main clone --quiet "$work/package/llama/gitRelease.bundle" "$dest"
git -C "$dest" -c advice.detachedHead=false checkout --quiet "$commit"
echo "setup-llama-cpp: llama.cpp $(git -C "$dest" rev-parse --short HEAD) in $dest"
