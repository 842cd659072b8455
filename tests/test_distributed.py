"""Distributed correctness on the CPU: 2 processes (multi_cpu.yaml) and 2 "machines" over loopback."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from perceiver_mnist import load_model, tracking
from perceiver_mnist.events import read_events

from .conftest import ACCELERATE, N_TEST, ROOT, offline_env, tiny_args
from .test_train import accuracy_of


def test_ranks_see_different_shards_and_their_weights_stay_equal(tmp_path):
    cmd = [ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / "multi_cpu.yaml"),
           str(ROOT / "tests" / "dist_check.py"), str(tmp_path)]
    result = subprocess.run(cmd, cwd=ROOT, env=offline_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert all(r["backend"].endswith("MULTI_CPU") for r in ranks)
    a, b = ranks[0]["first_batch"], ranks[1]["first_batch"]
    assert len(a) == len(b) == 4 and not set(a) & set(b)             # different halves of the global batch
    assert sorted(a + b) == sorted(ranks[0]["global_first_batch"])   # together: exactly the global batch
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)  # synchronized gradients
    assert ranks[0]["augmented"] != ranks[1]["augmented"]  # each rank its own random stream


@pytest.mark.parametrize("world_size, teardown", [("2", False), ("1", True), (None, True)])
def test_a_process_of_a_multi_process_run_ends_without_the_interpreters_teardown(world_size, teardown):
    # Why it matters: torch's gloo threads can outlive destroy_process_group() and abort the teardown (errors.py).
    script = ("import atexit\nfrom perceiver_mnist.errors import run_cli\n"
              "atexit.register(print, 'teardown ran')\nrun_cli(lambda: print('work done', end='') or 3, 'x')\n")
    env = {k: v for k, v in offline_env().items() if k not in ("WORLD_SIZE", "PYTHONUNBUFFERED")}
    if world_size:
        env["WORLD_SIZE"] = world_size
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    # Pending (block-buffered) output is flushed either way; atexit handlers run only without WORLD_SIZE > 1.
    assert result.stdout == "work done" + ("teardown ran\n" if teardown else "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_over_loopback_train_and_agree_with_one_process(data_dir: Path, tmp_path: Path):
    logdir, port = tmp_path / "runs", free_port()
    procs = []
    for rank in (0, 1):
        cmd = [ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / "multi_node.yaml"),
               "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               str(ROOT / "train.py"), *tiny_args(data_dir, logdir, "nodes", "--epochs", "1")]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=offline_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    run = logdir / "nodes"
    assert json.loads((run / "config.json").read_text())["num_processes"] == 2
    events = read_events(str(run))
    assert events.scalars[tracking.TEST_SAMPLES].values == [N_TEST]
    logged = events.scalars[tracking.TEST_ACCURACY].values[-1]
    assert accuracy_of(load_model(str(run)), data_dir) == pytest.approx(logged)
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # only rank 0 logs
