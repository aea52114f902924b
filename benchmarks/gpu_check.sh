#!/usr/bin/env bash
# The one prepared GPU check: BAR-B and BAR-B/4 (random weights, the authors' shapes) at batch 125,
# bf16, eager and compiled (`mode="reduce-overhead"`: CUDA graphs), generation images/s, the tokenizer decode
# separately, and the fraction of the chip's FLOP ceiling. About 5-8 minutes on one H200 (compilation included).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # PEAK_TFLOPS=989 (H100/H200 dense bf16 datasheet) by default
#
# On a machine without diffusers (or with an older transformers), carry wheels and put them first on PYTHONPATH:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d .whl diffusers==0.42.1 transformers==5.24.0
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
OUT=${1:-benchmarks/results}
PEAK=${PEAK_TFLOPS:-989}
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$HERE/../src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu_info.csv"
python3 "$HERE/bench_flops.py" --out "$OUT/flops_gpu_check" >/dev/null
python3 "$HERE/benchmark_sampling.py" --device cuda --shapes bar-b-4 bar-b --batch-sizes 125 \
    --variants compiled-bf16 bf16 decode --repeats 3 --kv-shape '' --peak-tflops "$PEAK" \
    --out "$OUT/sampling_gpu" 2>&1 | tee "$OUT/sampling_gpu.log"
