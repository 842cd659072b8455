"""torch.compile, driven by the accelerate config: a compiled run behaves exactly like an eager one.

Most tests use dynamo's ``eager`` backend: dynamo traces the model as it would for inductor (the same graph
breaks, guards and recompiles), without inductor's minutes of code generation on 2 cores. One test runs inductor.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from perceiver_mnist import load_model, tracking
from perceiver_mnist.events import read_events
from perceiver_mnist.faults import VARIABLE

from .conftest import ACCELERATE, N_TEST, ROOT, launch, offline_env, resume_args, tiny_args
from .test_train import accuracy_of

# 192 training images in batches of 20: the epoch's last batch has 12, which must not compile a second graph.
UNEVEN = ("--batch-size", "20", "--test-batch-size", "32", "--grid-images", "4")
TRACE_LOGS = {"TORCH_LOGS": "dynamo,recompiles,graph_breaks"}
COMPILED_RUN = (*UNEVEN, "--ema-decay", "0.9", "--checkpoint-every", "4")


def compiled(backend: str = "eager", mode: str = "default", fullgraph: bool = False) -> dict[str, str]:
    """The environment accelerate launch gives a process for `--dynamo_backend BACKEND --dynamo_mode MODE`."""
    return {"ACCELERATE_DYNAMO_BACKEND": backend.upper(), "ACCELERATE_DYNAMO_MODE": mode,
            "ACCELERATE_DYNAMO_USE_DYNAMIC": "False", "ACCELERATE_DYNAMO_USE_FULLGRAPH": str(fullgraph)}


# The step's compiled regions (engine.build_learner): augmentation to loss (its backward compiles with it), then
# clipping and the loss tally. dynamo numbers each region's frame [F/0] and each recompile of it [F/1], [F/2]...
STEP_REGIONS = ["0/0", "1/0"]


def traces(stderr: str) -> list[str]:
    """The [frame/compile] id of every graph dynamo traced: each region's first compile, and every recompile."""
    return re.findall(r"\[(\d+/\d+)\] .*torchdynamo start tracing", stderr)


def assert_one_graph(stderr: str) -> None:
    """Each region of the step traced once for the whole run: no recompile, no graph break."""
    assert traces(stderr) == STEP_REGIONS, re.findall(r".*(?:start tracing|Recompiling|triggered by|guard).*", stderr)
    assert "Recompiling" not in stderr and "Graph break" not in stderr


@pytest.fixture(scope="module")
def compiled_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A whole compiled tiny run with a weight average and mid-epoch checkpoints, and what dynamo logged."""
    run = tmp_path_factory.mktemp("runs") / "c"
    result = launch(tiny_args(data_dir, run.parent, run.name, *COMPILED_RUN), config=None,
                    env={**compiled(), **TRACE_LOGS})
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result.stderr


def test_a_compiled_run_traces_once_saves_plain_names_and_equals_the_eager_run(compiled_run, data_dir: Path,
                                                                               tmp_path: Path):
    """One graph for the whole run: the uneven last batch, evaluation and the weight average compile nothing
    more; the saved weights have the module's own names, so load_model and the figures read them."""
    run, stderr = compiled_run
    assert_one_graph(stderr)
    eager = launch(tiny_args(data_dir, tmp_path, "e", *COMPILED_RUN), config=None)
    assert eager.returncode == 0, eager.stderr[-3000:]
    weights, reference = load_file(run / "model.safetensors"), load_file(tmp_path / "e" / "model.safetensors")
    assert weights.keys() == reference.keys() and not any("_orig_mod" in k for k in weights)
    for name in weights:  # dynamo's eager backend runs the same kernels: the same numbers
        assert torch.equal(weights[name], reference[name]), name
    logged = read_events(str(run)).scalars[tracking.TEST_ACCURACY].values[-1]
    assert accuracy_of(load_model(str(run)), data_dir) == pytest.approx(logged)


def test_two_compiled_processes_train_and_save_plain_names(data_dir: Path, tmp_path: Path):
    logdir = tmp_path / "runs"
    cmd = [ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / "multi_cpu.yaml"),
           "--dynamo_backend", "eager", str(ROOT / "train.py"), *tiny_args(data_dir, logdir, "two", "--epochs", "1")]
    result = subprocess.run(cmd, cwd=ROOT, env=offline_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = logdir / "two"
    assert read_events(str(run)).scalars[tracking.TEST_SAMPLES].values == [N_TEST]
    assert not any("_orig_mod" in k for k in load_file(run / "model.safetensors"))
    logged = read_events(str(run)).scalars[tracking.TEST_ACCURACY].values[-1]
    assert accuracy_of(load_model(str(run)), data_dir) == pytest.approx(logged)


@pytest.mark.ci  # about 45 s, most of it inductor's cold compile: in CI after the README's suite (.ci/run)
def test_inductor_in_cuda_graph_mode_traces_once_and_a_killed_run_resumes_exactly(data_dir: Path, tmp_path: Path):
    """The real compiler, as a GPU run that captures CUDA graphs would use it (reduce-overhead, fullgraph: a graph
    break would fail the run). Left alone, an epoch and a step into the next, its smaller last batch included, train
    with each region traced once, no recompile; the weights are saved with plain names. Killed with -9 after a
    checkpoint and resumed, compiled again (a mid-epoch start, traced once too), the run ends with the weights of the
    run left alone, bit for bit, the weight average included: inductor's generated code draws the augmentation's
    random numbers from seeds it takes from torch's generator, which checkpoints save. On a CPU inductor skips the
    capture itself, so what this proves is the graphs a capture needs."""
    steps = 11  # 10 steps per epoch (192 images, batches of 20): the 10th has 12 images, the 11th is epoch 2's first
    args = (*UNEVEN, "--ema-decay", "0.9", "--checkpoint-every", "4", "--max-steps", str(steps))
    env = {**compiled("inductor", mode="reduce-overhead", fullgraph=True), **TRACE_LOGS}
    alone = launch(tiny_args(data_dir, tmp_path, "alone", *args), config=None, env=env, timeout=600)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert_one_graph(alone.stderr)
    assert "epoch 1/2 | step 10 " in alone.stdout and f"stopped at --max-steps {steps}" in alone.stdout
    assert not any("_orig_mod" in k for k in load_file(tmp_path / "alone" / "model.safetensors"))
    logged = read_events(str(tmp_path / "alone")).scalars[tracking.TEST_ACCURACY].values[-1]
    assert accuracy_of(load_model(str(tmp_path / "alone")), data_dir) == pytest.approx(logged)
    killed = launch(tiny_args(data_dir, tmp_path, "k", *args), config=None, env={**env, VARIABLE: "step:6"},
                    timeout=600)
    assert killed.returncode == -signal.SIGKILL
    resumed = launch(resume_args(data_dir, tmp_path, "k", *args), config=None, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at epoch 0, step 4 (4 batches into epoch 1)" in resumed.stdout
    assert_one_graph(resumed.stderr)
    weights = load_file(tmp_path / "k" / "model.safetensors")
    reference = load_file(tmp_path / "alone" / "model.safetensors")
    for name in reference:
        assert torch.equal(weights[name], reference[name]), name


def test_time_to_accuracy_stops_a_run_at_its_time_box_and_reports_it(data_dir: Path, tmp_path: Path):
    """bench/time_to_accuracy.py --time-box: Ctrl-C after S seconds; the run checkpoints, the report covers the
    epochs it finished (what gpu_check.sh's launch-to-99% measurement relies on)."""
    logdir = tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "bench" / "time_to_accuracy.py"), "--data-dir", str(data_dir), "--logdir",
           str(logdir), "--run", "boxed", "--time-box", "20", "--", "--preset", "tiny", "--epochs", "1000",
           "--batch-size", "64", "--grid-images", "0"]
    result = subprocess.run(cmd, cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index("\n{") + 1:])
    assert report["time_box_s"] == 20 and 20 / 60 <= report["wall_minutes"] < 95 / 60
    assert 1 <= report["epochs"] < 1000 and report["test_images_counted"] == N_TEST
    assert "interrupted at step" in result.stdout and list((logdir / "boxed" / "checkpoints").iterdir())
