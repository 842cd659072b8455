#!/usr/bin/env bash
# The GPU check: one prepared script for a machine with one NVIDIA GPU, at most about 8 minutes (each part has its
# own time limit, and each part's results survive a later part's failure). It measures what BENCHMARKS.md's "GPU"
# section needs:
#   1. launch to 98% and to 99% test accuracy of the `gpu` preset (global batch 1,024) in bf16, compiled
#      (accelerate_configs/bf16_compile.yaml), compile included; the run gets RECIPE_BOX seconds (default 120),
#      then Ctrl-C, and bench/time_to_accuracy.py reports the epochs it finished (all 80 if they fit);
#   2. the training step alone (bench/flops.py), bf16: samples/s eager, compiled (inductor) and reduce-overhead
#      (CUDA graphs) at batch 128 and 1,024 (the model of `default` and `gpu`), the compile time of each (the later
#      ones may hit inductor's cache), how many graphs inductor declined to capture as CUDA graphs, and the host-device
#      synchronisations of 20 more steps of each (torch's sync debug mode), with the first one's op;
#   3. the same recipe as 1. in bf16 eager (accelerate_configs/bf16.yaml) for EAGER_BOX seconds (default 60): whether
#      compiling pays for itself on the way to 99%.
# Usage: bash bench/gpu_check.sh [OUTDIR]     (prints a summary; OUTDIR, default $OUT, keeps the logs and the event
#        files; record the numbers in BENCHMARKS.md with the GPU's name)
# Data: the MNIST .gz files shipped in data/ (no download). Offline machines: when perceiver_mnist and
# perceiver_pytorch already import (e.g. PYTHONPATH=$PWD plus a carried perceiver-pytorch wheel), nothing is
# installed, since `pip install -e .` needs an index for its build isolation.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu_check}}
runs=/tmp/gpu_check_runs  # checkpoints stay here; only the event files are copied to $out
py=${PYTHON:-python3}  # on the lent GPU machines python3, not python, is the interpreter that holds torch
recipe_box=${RECIPE_BOX:-120}
eager_box=${EAGER_BOX:-60}
mkdir -p "$out"
rm -rf "$runs"
export PYTHONUNBUFFERED=1
if ! "$py" -c "import perceiver_mnist, perceiver_pytorch" 2>/dev/null; then
  "$py" -m pip install -q -e . || { echo "gpu_check: could not install the package; see the pip output above"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
"$py" -c "import torch, accelerate, perceiver_pytorch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(0), 'accelerate', accelerate.__version__, 'cpus', __import__('os').cpu_count())" || exit 1

recipe() {  # recipe NAME CONFIG BOX: the gpu preset under an accelerate config, stopped after BOX seconds
  timeout $(($3 + 40)) "$py" bench/time_to_accuracy.py --config "$2" --data-dir data --logdir "$runs" --run "$1" \
    --time-box "$3" -- --preset gpu >"$out/$1.log" 2>&1
  echo "exit $?"
  grep -E "^(run |done:|interrupted)|rror|raceback" "$out/$1.log" | tail -8
  # epochs 1-3, then every 5th, and the last: enough to see the curve and the per-epoch times
  grep -E "^epoch [0-9]" "$out/$1.log" | awk 'NR <= 3 || NR % 5 == 0 {print; last = ""; next} {last = $0} END {if (last) print last}'
  sed -n '/^{/,/^}/p' "$out/$1.log" | grep -v -E '^  *([0-9]+,?|\],?)$|"(command|rss_mb_per_epoch)"'
  for f in "$runs/$1"/events.out.tfevents.*; do [ -e "$f" ] && cp "$f" "$out/$1.tfevents"; done
}

echo "== 1. the gpu preset, bf16, compiled: launch to 98% / 99% (time box $recipe_box s)"
recipe gpu-bf16-compiled bf16_compile.yaml "$recipe_box"

echo "== 2. the training step, bf16: eager, compiled, reduce-overhead (CUDA graphs); host syncs"
timeout 200 "$py" bench/flops.py --device cuda --precision bf16 --batch-sizes 128 1024 --steps 100 \
  --compile default reduce-overhead --sync-debug >"$out/flops.log" 2>&1
echo "exit $? (124: its time limit)"
grep -E '^\{|rror|raceback' "$out/flops.log"

echo "== 3. the gpu preset, bf16, eager (time box $eager_box s)"
recipe gpu-bf16-eager bf16.yaml "$eager_box"
