#!/usr/bin/env bash
# The search's cost on a GPU, with no network and no model download: the `bench_gpu` example
# writes Llama-2-7B- and 13B-shaped families (base + 3 siblings, random bf16 weights, real
# tensor names and config) into /dev/shm, scores a calibration stream shaped like the
# reference's (MMLU validation 0-shot + WSC train: item, token and choice counts; random
# tokens) and prints one table: prefill tokens/s and MFU against the GPU's bf16 peak,
# seconds per trial at each Hyperband budget, device merge seconds per layer, prefix-cache
# savings on the reference's warm-start stream, peak device memory, and the projected wall
# time of the reference's 500-trial search. Aim: under 5 minutes on one H100/H200.
#
#   bash scripts/bench-gpu.sh                 # CUDA: shapes 7b,13b
#   bash scripts/bench-gpu.sh --shapes 13b    # extra arguments go to `bench_gpu`
#   bash scripts/bench-gpu.sh --cpu           # tiny shape on the CPU (the test suite runs this)
#
# HF_TAILOR_BENCH_BIN: the benchmark binary (default: target/cuda/{release,debug}/examples/bench_gpu,
# which scripts/build-cuda.sh builds; --cpu builds `cargo build --example bench_gpu` and runs
# that). PEAK_TFLOPS overrides the
# dense bf16 peak read from the GPU's name (needed for MFU on GPUs not in the table below).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

cpu=0
args=()
for a in "$@"; do
    if [[ "$a" == "--cpu" ]]; then cpu=1; else args+=("$a"); fi
done

find_bin() {
    local c
    for c in "${HF_TAILOR_BENCH_BIN:-}" "$@"; do
        if [[ -n "$c" && -x "$c" ]]; then echo "$c"; return 0; fi
    done
}

if (( cpu )); then
    if [[ -z "${HF_TAILOR_BENCH_BIN:-}" ]]; then
        (cd "$repo" && "${CARGO:-cargo}" build --quiet --example bench_gpu) || exit 2
    fi
    bin="$(find_bin "${CARGO_TARGET_DIR:-$repo/target}/debug/examples/bench_gpu")"
    [[ -n "$bin" ]] || { echo "bench-gpu.sh: no bench_gpu binary (cargo build --example bench_gpu, or set HF_TAILOR_BENCH_BIN)" >&2; exit 2; }
    start=$SECONDS
    "$bin" --device cpu --shapes tiny --budgets 8,16,40 --trials 1 --warm-start 6 --project-trials 500 "${args[@]}"
    echo "bench-gpu.sh: CPU smoke run in $((SECONDS - start)) s" >&2
    exit 0
fi

bin="$(find_bin "$repo/target/cuda/release/examples/bench_gpu" "$repo/target/cuda/debug/examples/bench_gpu")"
[[ -n "$bin" ]] || { echo "bench-gpu.sh: no CUDA build of the benchmark (bash scripts/build-cuda.sh, or set HF_TAILOR_BENCH_BIN)" >&2; exit 2; }
command -v nvidia-smi >/dev/null || { echo "bench-gpu.sh: no nvidia-smi: this machine has no NVIDIA driver (use --cpu for the CPU smoke run)" >&2; exit 2; }

# The CUDA libraries the binary links (cuBLAS, cuRAND, cudart): from the system, else from
# the wheels scripts/build-cuda.sh unpacked. Never the driver stub in lib/stubs.
if ldd "$bin" | grep -q "not found"; then
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib "$repo/.venv-cuda/site/nvidia/cu13/lib"; do
        [[ -d "$d" ]] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    done
fi
if ldd "$bin" | grep "not found"; then
    echo "bench-gpu.sh: $bin misses the libraries above (CUDA 13 runtime: pip install -r scripts/cuda-requirements.txt, or a CUDA 13 toolkit)" >&2
    exit 2
fi

gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
name="${gpu%%,*}"
if [[ -z "${PEAK_TFLOPS:-}" ]]; then
    # Dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets.
    case "$name" in
        *H200*) PEAK_TFLOPS=989.4 ;;
        *H100*PCIe*) PEAK_TFLOPS=756 ;;
        *H100*) PEAK_TFLOPS=989.4 ;;
        *GH200*) PEAK_TFLOPS=989.4 ;;
        *A100*) PEAK_TFLOPS=312 ;;
        *L40S*) PEAK_TFLOPS=362 ;;
        *L4*) PEAK_TFLOPS=121 ;;
        *A10G*) PEAK_TFLOPS=70 ;;
        *) PEAK_TFLOPS="" ;;
    esac
fi
echo "bench-gpu.sh: $gpu; bf16 peak ${PEAK_TFLOPS:-unknown (set PEAK_TFLOPS)} TFLOP/s; binary $bin"
peak=()
[[ -n "$PEAK_TFLOPS" ]] && peak=(--peak-tflops "$PEAK_TFLOPS")
start=$SECONDS
shapes=(--shapes 7b,13b)
for a in "${args[@]}"; do [[ "$a" == --shapes* ]] && shapes=(); done
"$bin" --device cuda "${shapes[@]}" "${peak[@]}" "${args[@]}"
took=$((SECONDS - start))
echo "bench-gpu.sh: finished in $took s$( (( took > 300 )) && echo ' (over the 5-minute aim)')"
