#!/usr/bin/env bash
# Installs hf-tailor for the GitHub Action (action.yml): the prebuilt release binary when
# HFT_VERSION names a release tag, else a cargo build of the action's own revision.
set -euo pipefail
version="${HFT_VERSION:-source}"
repo="${HFT_ACTION_REPO:-hf-tailor/hf-tailor}"
bin_dir="$HOME/.local/bin"
mkdir -p "$bin_dir"
echo "$bin_dir" >> "${GITHUB_PATH:-/dev/null}"

if [[ "$version" != "source" ]]; then
    case "$(uname -s)-$(uname -m)" in
        Linux-x86_64) target=x86_64-unknown-linux-gnu ;;
        Darwin-arm64) target=aarch64-apple-darwin ;;
        *) echo "install-action: no prebuilt binary for $(uname -s)-$(uname -m); use version: source" >&2; exit 2 ;;
    esac
    asset="hf-tailor-$version-$target.tar.gz"
    url="https://github.com/$repo/releases/download/$version/$asset"
    echo "install-action: downloading $url"
    curl --fail --location --silent --show-error "$url" | tar -xz -C "$bin_dir" hf-tailor
else
    if ! command -v cargo >/dev/null 2>&1; then
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        # shellcheck disable=SC1091
        source "$HOME/.cargo/env"
    fi
    src="${HFT_ACTION_PATH:-.}"
    echo "install-action: building hf-tailor from $src ($repo@${HFT_ACTION_REF:-local})"
    cargo install --locked --path "$src" --root "$HOME/.local" --bin hf-tailor
fi
"$bin_dir/hf-tailor" --version
