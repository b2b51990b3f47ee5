#!/usr/bin/env bash
# The whole test suite: the Python reference stack (for the cross-checks), then every
# Rust test target. This is the command the README and CI run.
#
#   bash scripts/test.sh [extra cargo test args, e.g. -- --nocapture]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# The tests find Python through HF_TAILOR_PYTHON, else <repo>/.venv/bin/python.
if [[ -n "${HF_TAILOR_PYTHON:-}" ]] && "$HF_TAILOR_PYTHON" -c "import torch, transformers, huggingface_hub, mergekit, lm_eval" 2>/dev/null; then
    echo "test.sh: using the Python reference at $HF_TAILOR_PYTHON"
else
    bash scripts/setup-python.sh
    export HF_TAILOR_PYTHON="$repo/.venv/bin/python"
fi

# llama.cpp's converter and runtime, for the GGUF test (HF_TAILOR_LLAMA_CPP and
# HF_TAILOR_LLAMA_CPP_RUNTIME override them).
if [[ -z "${HF_TAILOR_LLAMA_CPP:-}" || -z "${HF_TAILOR_LLAMA_CPP_RUNTIME:-}" ]]; then
    bash scripts/setup-llama-cpp.sh
    export HF_TAILOR_LLAMA_CPP="${HF_TAILOR_LLAMA_CPP:-$repo/.venv/llama.cpp}"
    export HF_TAILOR_LLAMA_CPP_RUNTIME="${HF_TAILOR_LLAMA_CPP_RUNTIME:-$repo/.venv/node-llama-cpp}"
fi

# Tests never touch the real Hub: the Hub tests run a loopback server (HF_ENDPOINT set per
# test), so offline mode must stay off here.
export HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false

# Examples and benchmarks must keep compiling, even though they hold no tests.
cargo build --all-targets
cargo test --doc
# Last, so the run ends on the suite's own summary: unit tests, the binary, integration tests.
cargo test --lib --bins --tests "$@"
