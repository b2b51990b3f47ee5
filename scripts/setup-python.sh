#!/usr/bin/env bash
# Create <repo>/.venv (if missing) with the Python reference stack the tests cross-check
# against (scripts/python-requirements.txt). Idempotent: a stamp records the hash of the
# requirements last installed, so a second run with the same file does nothing.
#
#   bash scripts/setup-python.sh          # uses python3 (or $PYTHON)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
requirements="$repo/scripts/python-requirements.txt"
stamp="$venv/.hf-tailor-requirements.sha256"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "setup-python: no '$python' on PATH; install Python 3.10+ (with venv and pip) or set PYTHON" >&2
    exit 2
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "setup-python: $venv is up to date"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup-python: creating $venv"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip
echo "setup-python: installing $(grep -cv '^\s*\(#\|$\)' "$requirements") packages from scripts/python-requirements.txt (first time: a few minutes)"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$requirements"
"$venv/bin/python" -c "import torch, transformers, safetensors, huggingface_hub, numpy, mergekit, lm_eval; print('setup-python: torch', torch.__version__, '/ transformers', transformers.__version__, '/ huggingface_hub', huggingface_hub.__version__)"
echo "$want" > "$stamp"
