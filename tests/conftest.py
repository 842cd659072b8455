"""Shared fixtures: tiny synthetic MNIST-format data, and a real tiny training run made once per session."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perceiver_mnist.data import write_idx

ROOT = Path(__file__).resolve().parents[1]
# The `accelerate` command of the Python running the tests (a venv's bin/, or the PATH).
ACCELERATE = str(Path(sys.executable).parent / "accelerate") if (Path(sys.executable).parent / "accelerate").exists() \
    else shutil.which("accelerate") or "accelerate"
N_TRAIN, N_TEST = 192, 90  # 90 test images: divides neither 2 processes x 32 nor 32, to exercise the remainder


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class k is a bright bar at row 2k+4 plus noise: learnable in a few steps, and nothing like MNIST."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 28, 28))
    for i, k in enumerate(labels):
        images[i, 2 * k + 4: 2 * k + 6, 4:24] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


def make_dataset(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, folder: str = "MNIST") -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


# Every proxy pointed at a closed local port: downloads fail fast, even on a machine with internet.
NO_NETWORK = {var: "http://127.0.0.1:9" for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")} | \
    {"no_proxy": "", "NO_PROXY": ""}


def offline_env() -> dict[str, str]:
    """The environment for subprocesses: no network, unbuffered output, one thread each."""
    return {**os.environ, **NO_NETWORK, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_python(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python ARGS`` from the repository root, offline, with its output captured: a script such as predict.py
    with its flags, or ``-c CODE``."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env={**offline_env(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def train_cmd(args: list[str], config: str | None = "cpu.yaml") -> list[str]:
    """train.py for real: through `accelerate launch --config_file accelerate_configs/CONFIG`, or plain
    `python train.py` when config is None."""
    if config is None:
        return [sys.executable, str(ROOT / "train.py"), *args]
    return [ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / config),
            str(ROOT / "train.py"), *args]


def launch(args: list[str], config: str | None = "cpu.yaml", timeout: float = 240,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run train.py to completion (see ``train_cmd``) and capture its output."""
    return subprocess.run(train_cmd(args, config), cwd=ROOT, env={**offline_env(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def run_args(data_dir: Path, logdir: Path, run: str, *extra: str) -> list[str]:
    """train.py's flags for run LOGDIR/RUN on DATA_DIR, then ``extra``."""
    return ["--data-dir", str(data_dir), "--logdir", str(logdir), "--run", run, *extra]


def tiny_args(data_dir: Path, logdir: Path, run: str, *extra: str) -> list[str]:
    return ["--preset", "tiny", *run_args(data_dir, logdir, run, *extra)]


def resume_args(data_dir: Path, logdir: Path, run: str, *extra: str) -> list[str]:
    """``--resume`` of run LOGDIR/RUN (its recipe comes from its config.json), then ``extra``."""
    return run_args(data_dir, logdir, run, "--resume", *extra)


@pytest.fixture(scope="session")
def tiny_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-epoch tiny run through `accelerate launch` with the CPU config, shared by several tests."""
    logdir = tmp_path_factory.mktemp("runs")
    result = launch(tiny_args(data_dir, logdir, "tiny", "--log-every", "2", "--grid-images", "8"))
    assert result.returncode == 0, result.stderr[-3000:]
    return logdir / "tiny"


def saved_run(path: Path, name: str = "tiny", weights_of: str | None = None, **changes: Any):
    """A run directory as train.py leaves it (config.json + model.safetensors) with freshly initialised weights, in
    a moment: the preset ``name`` with ``changes``; the weights can be another preset's. Returns the model, eval."""
    from safetensors.torch import save_file

    from perceiver_mnist import build_model, preset
    from perceiver_mnist.config import recipe_to_dict

    recipe = dataclasses.replace(preset(name), **changes)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"recipe": recipe_to_dict(recipe), "options": {}}))
    model = build_model(preset(weights_of) if weights_of else recipe)
    save_file(model.state_dict(), path / "model.safetensors")
    return model.eval()


# The files that launch the most training processes, longest first. pytest-xdist hands a file's tests to one worker
# (--dist loadfile) in collection order, which is alphabetical: test_train.py would start last, on one worker, while
# the others sat idle. Longest first keeps every core busy to the end (about 40 s less of the suite on 2 cores).
SLOW_FIRST = ["test_crash.py", "test_train.py", "test_compile.py", "test_demo.py", "test_distributed.py",
              "test_lock.py", "test_export.py", "test_gpu_check.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: each file keeps its order


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one); bench/gpu_check.sh runs them")
    config.addinivalue_line("markers", "ci: left out of the README's test command (setup.cfg's -m) to keep it within "
                            "5 minutes on 2 cores; .ci/run runs them after it (pytest -m ci)")


def probe_steps(preset: str, steps: int, env: dict[str, str], *fields: str) -> dict:
    """tests/step_probe.py in a process of its own: a preset's steps (recipe ``fields`` changed, as FIELD=VALUE) on
    the device (the GPU if there is one), under ``env``'s precision and compilation; its report of operations, host
    reads and launches per step."""
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "step_probe.py"), preset, str(steps), *fields],
                            cwd=ROOT,
                            env={**offline_env(), **env}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
