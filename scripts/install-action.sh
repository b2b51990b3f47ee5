#!/usr/bin/env bash
# Installs hf-tailor for the GitHub Action (action.yml). By default the prebuilt release
# binary: the release the action is pinned to (uses: hf-tailor/hf-tailor@vX.Y.Z), else the
# latest one. HFT_VERSION=vX.Y.Z picks a release; HFT_VERSION=source builds the action's own
# revision with cargo. HFT_DEVICE=cuda installs the CUDA build (Linux x86_64; the kernels for
# the runner's GPU generation) and, when the machine has no CUDA 13 runtime libraries, the
# pinned cuBLAS/cuRAND/cudart wheels from PyPI next to it.
set -euo pipefail
version="${HFT_VERSION:-}"
device="${HFT_DEVICE:-cpu}"
repo="${HFT_ACTION_REPO:-hf-tailor/hf-tailor}"
src="${HFT_ACTION_PATH:-.}"
bin_dir="$HOME/.local/bin"
mkdir -p "$bin_dir"
echo "$bin_dir" >> "${GITHUB_PATH:-/dev/null}"

# The CUDA 13 libraries the CUDA build links (the driver's libcuda.so.1 comes with the driver).
cuda_runtime() {
    if ldconfig -p 2>/dev/null | grep -q 'libcublasLt.so.13' && ldconfig -p | grep -q 'libcurand.so.10' && ldconfig -p | grep -q 'libcudart.so.13'; then
        return 0
    fi
    local dir="$HOME/.local/lib/hf-tailor-cuda"
    echo "install-action: installing the CUDA 13.0 runtime libraries (PyPI wheels) into $dir"
    local reqs="${RUNNER_TEMP:-/tmp}/hf-tailor-cuda-runtime.txt"
    grep -E '^nvidia-(cublas|curand|cuda-runtime)==' "$src/scripts/cuda-requirements.txt" > "$reqs"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dir" -r "$reqs"
    local lib="$dir/nvidia/cu13/lib"
    echo "LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" >> "${GITHUB_ENV:-/dev/null}"
    export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

if [[ "$device" == "cuda" && "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
    echo "install-action: the CUDA build exists for Linux x86_64 only" >&2
    exit 2
fi

if [[ "$version" == "source" ]]; then
    if ! command -v cargo >/dev/null 2>&1; then
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        # shellcheck disable=SC1091
        source "$HOME/.cargo/env"
    fi
    echo "install-action: building hf-tailor from $src ($repo@${HFT_ACTION_REF:-local}) for $device"
    if [[ "$device" == "cuda" ]]; then
        built="$(cd "$src" && bash scripts/build-cuda.sh --release --locked | tail -1)"
        install -m 755 "$built" "$bin_dir/hf-tailor"
        cuda_runtime
    else
        cargo install --locked --path "$src" --root "$HOME/.local" --bin hf-tailor
    fi
else
    if [[ -z "$version" ]]; then
        if [[ "${HFT_ACTION_REF:-}" =~ ^v[0-9] ]]; then
            version="$HFT_ACTION_REF"
        else
            # The latest release's tag, from the redirect of /releases/latest.
            version="$(curl --fail --silent --show-error --head "https://github.com/$repo/releases/latest" \
                | tr -d '\r' | awk 'tolower($1) == "location:" {n = split($2, p, "/"); print p[n]}')"
            [[ -n "$version" ]] || { echo "install-action: no release of $repo found; use version: source" >&2; exit 2; }
        fi
    fi
    case "$(uname -s)-$(uname -m)" in
        Linux-x86_64) target=x86_64-unknown-linux-gnu ;;
        Darwin-arm64) target=aarch64-apple-darwin ;;
        *) echo "install-action: no prebuilt binary for $(uname -s)-$(uname -m); use version: source" >&2; exit 2 ;;
    esac
    if [[ "$device" == "cuda" ]]; then
        cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
        [[ -n "$cap" ]] || { echo "install-action: device: cuda, but nvidia-smi finds no GPU on this runner" >&2; exit 2; }
        if (( cap >= 90 )); then target="$target-cuda-sm90"; else target="$target-cuda-sm80"; fi
    fi
    asset="hf-tailor-$version-$target.tar.gz"
    url="https://github.com/$repo/releases/download/$version/$asset"
    echo "install-action: downloading $url"
    curl --fail --location --silent --show-error "$url" | tar -xz -C "$bin_dir" hf-tailor
    [[ "$device" == "cuda" ]] && cuda_runtime
fi
"$bin_dir/hf-tailor" --version
