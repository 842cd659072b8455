#!/usr/bin/env bash
# The GPU check, one prepared script for a machine with one NVIDIA GPU, sized for about 12 minutes:
#   1. one epoch of --preset seed in fp32, bf16 and fp16: epoch time, samples/s, test accuracy after epoch 1
#      (the seed notebook reported 95% after its first epoch, on 1,000 test images; this is all 10,000), and for
#      fp16 the loss-scaler steps skipped (printed as "skipped N" in the summary line when N > 0);
#   2. the default preset in bf16 until it reaches 99% test accuracy (or the time box ends).
# Usage: bash bench/gpu_check.sh [OUTDIR]     (prints everything; record it in BENCHMARKS.md with the GPU's name)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python -m pip install -q -e . >/dev/null 2>&1 || python -m pip install -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
steps_per_seed_epoch=938  # ceil(60000 / 64)
for cfg in single_gpu bf16 fp16; do
  echo "== seed preset, one epoch, accelerate_configs/$cfg.yaml"
  accelerate launch --config_file accelerate_configs/$cfg.yaml train.py --preset seed --run seed-$cfg \
    --logdir "$out/runs" --max-steps $steps_per_seed_epoch 2>&1 | tr '\r' '\n' | grep -v "it/s" | tail -4
done
echo "== default preset, bf16, until 99% (time box 7 minutes)"
timeout 420 accelerate launch --config_file accelerate_configs/bf16.yaml train.py --run default-bf16 \
  --logdir "$out/runs" 2>&1 | tr '\r' '\n' | grep -E "^epoch [0-9.]+/" | grep -v "it/s"
python bench/time_to_accuracy.py --report-only --logdir "$out/runs" --run default-bf16
