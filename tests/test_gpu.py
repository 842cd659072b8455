"""On a GPU only (marked ``gpu``; skipped elsewhere, saying so): the step never waits for the host, the compiled step
launches little, fp32 uses TF32, and what resuming promises there holds. bench/gpu_check.sh runs these.

    python -m pytest -m gpu tests/
"""
from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from perceiver_mnist.faults import VARIABLE

from .conftest import launch, probe_steps, resume_args, tiny_args
from .test_compile import compiled

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh runs it)")]

GPU = "single_gpu.yaml"


def gpu_steps(preset: str, steps: int, env: dict[str, str]) -> dict:
    """tests/step_probe.py on the GPU: it fails if a step synchronises with the host."""
    report = probe_steps(preset, steps, env)
    assert report["device"] == "cuda"
    return report


@pytest.mark.parametrize("precision", ["bf16", "no"])
def test_an_eager_step_never_synchronises(precision):
    """The twin of test_step's host-read test, on the device, with a preset that augments, mixes nothing, clips and
    averages its weights: under sync debug mode "error" any synchronisation would fail the run."""
    report = gpu_steps("default", 10, {"ACCELERATE_MIXED_PRECISION": precision})
    assert report["host_reads_per_step"] == 0 and not report["compiled"]
    if precision == "no":  # fp32 on a GPU uses TF32 tensor cores
        assert report["float32_matmul_precision"] == "high"


def test_the_compiled_step_never_synchronises_and_launches_a_fraction_of_the_eager_step():
    """inductor in CUDA graph mode, bf16: no synchronisation; at most 20 operations a step outside the compiled
    regions (the target), and far fewer CUDA launches than the eager step."""
    eager = gpu_steps("default", 10, {"ACCELERATE_MIXED_PRECISION": "bf16"})
    graphs = gpu_steps("default", 10, {"ACCELERATE_MIXED_PRECISION": "bf16",
                                       **compiled("inductor", mode="reduce-overhead")})
    assert graphs["compiled"] and graphs["host_reads_per_step"] == 0
    assert graphs["ops_per_step"] <= 20, graphs["ops"]
    assert graphs["cuda_launches_per_step"] * 4 < eager["cuda_launches_per_step"], (graphs, eager)


def test_a_resumed_gpu_run_continues_from_its_checkpoint_within_the_kernels_noise(data_dir: Path, tmp_path: Path):
    """What resuming promises on a GPU: the same position, data order and random streams, so the killed and resumed
    run ends where the run left alone does, up to the GPU kernels' own non-determinism (atomics in some backward
    kernels, cuBLAS's choice of algorithm): close weights, not bit-for-bit ones (the CPU's test asserts those)."""
    args = ("--batch-size", "20", "--checkpoint-every", "4")
    alone = launch(tiny_args(data_dir, tmp_path, "alone", *args), config=GPU)
    assert alone.returncode == 0, alone.stderr[-3000:]
    killed = launch(tiny_args(data_dir, tmp_path, "k", *args), config=GPU, env={VARIABLE: "step:14"})
    assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
    resumed = launch(resume_args(data_dir, tmp_path, "k", *args), config=GPU)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at epoch 1, step 12 (2 batches into epoch 2)" in resumed.stdout
    weights = load_file(tmp_path / "k" / "model.safetensors")
    reference = load_file(tmp_path / "alone" / "model.safetensors")
    for name in reference:
        assert torch.allclose(weights[name], reference[name], rtol=1e-3, atol=1e-4), name
