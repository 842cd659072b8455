#!/usr/bin/env bash
# The GPU check: one prepared script for a machine with one NVIDIA GPU, at most about 8 minutes (each part has its
# own time limit). It measures what BENCHMARKS.md's "GPU" section and issue #18's targets need:
#   1. launch to 98% and to 99% test accuracy of the `gpu` preset (global batch 1,024) in bf16, compiled
#      (accelerate_configs/bf16_compile.yaml), compile included; the run gets RECIPE_BOX seconds (default 180),
#      then Ctrl-C, and bench/time_to_accuracy.py reports the epochs it finished (all 80 if they fit);
#   2. the training step alone (bench/flops.py), bf16: samples/s eager, compiled (inductor) and reduce-overhead
#      (CUDA graphs) at batch 128 and 1,024 (the model of `default` and `gpu`), the compile time of each (the later
#      ones may hit inductor's cache), how many graphs inductor declined to capture as CUDA graphs, and torch's
#      sync debug mode as an error over 100 timed steps of each (a step that waits for the GPU fails with a
#      traceback naming the synchronising op).
# Usage: bash bench/gpu_check.sh [OUTDIR]     (prints everything; record it in BENCHMARKS.md with the GPU's name)
# Data: the MNIST .gz files shipped in data/ (no download). Offline machines: when perceiver_mnist and
# perceiver_pytorch already import (e.g. PYTHONPATH=$PWD plus a carried perceiver-pytorch wheel), nothing is
# installed, since `pip install -e .` needs an index for its build isolation.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu_check}}
py=${PYTHON:-python3}  # on the lent GPU machines python3, not python, is the interpreter that holds torch
recipe_box=${RECIPE_BOX:-180}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ! "$py" -c "import perceiver_mnist, perceiver_pytorch" 2>/dev/null; then
  "$py" -m pip install -q -e . || { echo "gpu_check: could not install the package; see the pip output above"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$py" -c "import torch, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(0), 'accelerate', accelerate.__version__)" || exit 1

echo "== 1. the gpu preset, bf16, compiled: launch to 98% / 99% (time box $recipe_box s)"
timeout $((recipe_box + 40)) "$py" bench/time_to_accuracy.py --config bf16_compile.yaml --data-dir data \
  --logdir "$out/runs" --run gpu-bf16-compiled --time-box "$recipe_box" -- --preset gpu >"$out/recipe.log" 2>&1
echo "exit $?"
grep -E "^(epoch [0-9]|run |done:|interrupted)|rror" "$out/recipe.log" | tail -70
sed -n '/^{/,/^}/p' "$out/recipe.log" | grep -v '^  *[0-9]*,\?$'

echo "== 2. the training step, bf16: eager, compiled, reduce-overhead (CUDA graphs); sync debug mode"
timeout 240 "$py" bench/flops.py --device cuda --precision bf16 --batch-sizes 128 1024 --steps 100 \
  --compile default reduce-overhead --sync-debug 2>&1 | grep -v Warning
echo "exit $? (non-zero with a traceback naming a synchronizing op: the step waited for the GPU; 124: time limit)"
