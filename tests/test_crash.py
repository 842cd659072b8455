"""Nothing lost: runs killed (SIGKILL) at several points, or interrupted (SIGINT/SIGTERM), resume exactly."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from perceiver_mnist import tracking
from perceiver_mnist.checkpoints import (TMP_PREFIX, UNREADABLE_PREFIX, TrainerState, complete_checkpoints,
                                         load_latest)
from perceiver_mnist.errors import UserError
from perceiver_mnist.events import read_events
from perceiver_mnist.faults import VARIABLE

from .conftest import ROOT, launch, offline_env, resume_args, tiny_args, train_cmd
from .test_train import STEPS_PER_EPOCH, raw_steps

TOTAL_STEPS = 2 * STEPS_PER_EPOCH  # tiny preset: 2 epochs
CHECKPOINT_EVERY = 5
EXTRA = ("--checkpoint-every", str(CHECKPOINT_EVERY), "--log-every", "1", "--keep-checkpoints", "10")


def final_numbers(run: Path) -> tuple[dict[str, torch.Tensor], float, float]:
    events = read_events(str(run))
    return (load_file(run / "model.safetensors"), events.scalars[tracking.TEST_ACCURACY].values[-1],
            events.scalars[tracking.TEST_LOSS].values[-1])


@pytest.fixture(scope="module")
def uninterrupted(data_dir: Path, tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("baseline")
    result = launch(tiny_args(data_dir, logdir, "base", *EXTRA), config=None)
    assert result.returncode == 0, result.stderr[-3000:]
    return logdir / "base"


def assert_same_run(run: Path, reference: Path) -> None:
    weights, acc, loss = final_numbers(run)
    ref_weights, ref_acc, ref_loss = final_numbers(reference)
    assert weights.keys() == ref_weights.keys()
    for name in weights:
        assert torch.allclose(weights[name], ref_weights[name], rtol=1e-5, atol=1e-6), name
    assert acc == pytest.approx(ref_acc) and loss == pytest.approx(ref_loss, rel=1e-5)
    # TensorBoard shows one continuous curve: every step once, in order.
    assert raw_steps(run, tracking.TRAIN_LOSS_STEP) == list(range(1, TOTAL_STEPS + 1))
    assert raw_steps(run, tracking.TEST_ACCURACY) == [STEPS_PER_EPOCH, TOTAL_STEPS]


def resume(data_dir: Path, logdir: Path, name: str) -> subprocess.CompletedProcess:
    result = launch(resume_args(data_dir, logdir, name, *EXTRA), config=None)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("point, resumes_from", [
    ("step:7", "epoch 0, step 5 (5 batches into epoch 1)"),        # in the middle of an epoch
    ("eval:12", "epoch 0, step 10 (10 batches into epoch 1)"),     # during the evaluation at the end of epoch 1
    ("checkpoint:12", "epoch 0, step 10 (10 batches into epoch 1)"),  # while writing the epoch_1 checkpoint
    ("checkpoint:15", "epoch 1, step 12"),                # while writing a mid-epoch checkpoint
])
def test_killed_runs_resume_exactly(point, resumes_from, data_dir, uninterrupted, tmp_path):
    logdir = tmp_path / "runs"
    killed = launch(tiny_args(data_dir, logdir, "k", *EXTRA), config=None, env={VARIABLE: point})
    assert killed.returncode == -signal.SIGKILL
    assert not (logdir / "k" / "model.safetensors").exists()
    result = resume(data_dir, logdir, "k")
    assert f"at {resumes_from}" in result.stdout
    assert not any(p.name.startswith(TMP_PREFIX) for p in (logdir / "k" / "checkpoints").iterdir())
    assert_same_run(logdir / "k", uninterrupted)


# The tiny run's checkpoints: every CHECKPOINT_EVERY steps and at each epoch's end.
CHECKPOINTS = sorted({*range(CHECKPOINT_EVERY, TOTAL_STEPS + 1, CHECKPOINT_EVERY), STEPS_PER_EPOCH, TOTAL_STEPS})
# Every point after the first checkpoint (before it there is nothing to resume, by design): right after any optimizer
# step, during either evaluation, while any later checkpoint is written.
KILL_POINTS = ([f"step:{s}" for s in range(CHECKPOINTS[0], TOTAL_STEPS + 1)]
               + [f"eval:{s}" for s in range(STEPS_PER_EPOCH, TOTAL_STEPS + 1, STEPS_PER_EPOCH)]
               + [f"checkpoint:{s}" for s in CHECKPOINTS[1:]])
# Which point is drawn by a seeded generator: a failure is replayed with its seed, and CI can try other points by
# setting the variable (to its build number, say).
CRASH_SEED = int(os.environ.get("PERCEIVER_MNIST_CRASH_SEED", "0"))


def newest_checkpoint(point: str, step: int) -> int:
    """The step of the newest complete checkpoint when a run is killed at POINT:STEP: one due every CHECKPOINT_EVERY
    steps is written before the kill after its step (faults.py), an epoch's own only after the epoch's evaluation."""
    written_first = point == "step" and step % CHECKPOINT_EVERY == 0 and step % STEPS_PER_EPOCH != 0
    return max(c for c in CHECKPOINTS if c < step or (c == step and written_first))


def position(step: int) -> str:
    """How the resume names the position of the checkpoint of ``step``."""
    epoch, batches = divmod(step, STEPS_PER_EPOCH)
    return f"epoch {epoch}, step {step}" + (f" ({batches} batches into epoch {epoch + 1})" if batches else "")


def test_a_kill_at_a_drawn_point_resumes_exactly(data_dir, uninterrupted, tmp_path):
    assert [state.step for _, state in complete_checkpoints(str(uninterrupted))] == CHECKPOINTS
    point = random.Random(CRASH_SEED).choice(KILL_POINTS)
    where, step = point.split(":")
    logdir = tmp_path / "runs"
    killed = launch(tiny_args(data_dir, logdir, "r", *EXTRA), config=None, env={VARIABLE: point})
    # The kill is an event of the run, not a moment: a run that did not meet it ends normally, and fails here.
    assert killed.returncode == -signal.SIGKILL, f"{point} (PERCEIVER_MNIST_CRASH_SEED={CRASH_SEED}) never came"
    assert not (logdir / "r" / "model.safetensors").exists()
    result = resume(data_dir, logdir, "r")
    assert f"at {position(newest_checkpoint(where, int(step)))}" in result.stdout, (point, result.stdout[-2000:])
    assert_same_run(logdir / "r", uninterrupted)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_checkpoints_and_says_how_to_resume(sig, data_dir, tmp_path):
    logdir = tmp_path / "runs"
    args = tiny_args(data_dir, logdir, "i", "--epochs", "200", "--log-every", "1")
    proc = subprocess.Popen(train_cmd(args, None), cwd=ROOT, env=offline_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 1/200"):  # the first epoch's summary: training is under way
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Resume with: accelerate launch train.py --run i" in out and "Traceback" not in err
    saved = sorted((logdir / "i" / "checkpoints").iterdir())
    assert saved and (saved[-1] / "trainer_state.json").exists()
    # The printed command works as printed: it repeats the options the run was started with (the data
    # directory is not saved with the run), not the recipe, which --resume reloads.
    printed = shlex.split(out.split("Resume with: ", 1)[1].splitlines()[0])
    assert printed[:3] == ["accelerate", "launch", "train.py"]
    assert printed[3:] == ["--run", "i", "--logdir", str(logdir), "--data-dir", str(data_dir), "--log-every", "1",
                           "--resume"]
    resumed = launch([*printed[3:], "--max-steps", str(STEPS_PER_EPOCH * 3)], config=None)
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr[-2000:]


def test_a_non_finite_loss_stops_clearly_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    logdir = tmp_path / "runs"
    result = launch(tiny_args(data_dir, logdir, "n", *EXTRA), config=None, env={VARIABLE: "nan:7"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "became NaN or infinite at step 7" in lines[0]
    assert "step_5 is intact" in lines[0] and "bf16" in lines[0]
    assert [p.name for p in (logdir / "n" / "checkpoints").iterdir()] == ["step_5"]
    # Every finite loss logged before the failure reaches TensorBoard (step 6 is after the last epoch's flush).
    assert read_events(str(logdir / "n")).scalars[tracking.TRAIN_LOSS_STEP].steps == list(range(1, 7))
    assert "at epoch 0, step 5" in resume(data_dir, logdir, "n").stdout


def test_an_interrupt_on_an_epochs_last_step_ends_that_epoch_then_resumes_exactly(data_dir, uninterrupted, tmp_path):
    """The epoch is evaluated, logged and checkpointed as ended (epoch_1), not left at batch 12 of 12, a position
    --resume would refuse."""
    logdir = tmp_path / "runs"
    stopped = launch(tiny_args(data_dir, logdir, "e", *EXTRA), config=None,
                     env={VARIABLE: f"interrupt:{STEPS_PER_EPOCH}"})
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert f"epoch 1/2 | step {STEPS_PER_EPOCH} |" in stopped.stdout  # evaluated and logged before leaving
    assert f"saved {logdir / 'e' / 'checkpoints' / 'epoch_1'}" in stopped.stdout
    assert f"at epoch 1, step {STEPS_PER_EPOCH}\n" in resume(data_dir, logdir, "e").stdout
    assert_same_run(logdir / "e", uninterrupted)


# accelerate itself ignores an unreadable RNG state; a resume with another RNG state would not be exact.
@pytest.mark.parametrize("broken", ["model.safetensors", "random_states_0.pkl"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(broken, data_dir, uninterrupted, tmp_path):
    logdir = tmp_path / "runs"
    killed = launch(tiny_args(data_dir, logdir, "c", *EXTRA), config=None, env={VARIABLE: "step:17"})
    assert killed.returncode == -signal.SIGKILL
    newest = logdir / "c" / "checkpoints" / "step_15" / broken
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    refused = launch(resume_args(data_dir, logdir, "c", *EXTRA, "--max-steps", "12"), config=None)
    assert refused.returncode == 2 and "already at step 12" in refused.stderr
    assert newest.exists()  # a refused resume changes nothing
    result = resume(data_dir, logdir, "c")
    assert "step_15 is unreadable" in result.stdout and "at epoch 1, step 12" in result.stdout
    assert_same_run(logdir / "c", uninterrupted)
    # Set aside, not deleted, and out of the list: among the newest it would have displaced the fresh checkpoints.
    kept = logdir / "c" / "checkpoints" / (UNREADABLE_PREFIX + "step_15") / broken
    assert len(kept.read_bytes()) == 100
    assert [Path(p).name for p, _ in complete_checkpoints(str(logdir / "c"))][-1] == "epoch_2"


def test_a_killed_run_with_a_weight_average_resumes_exactly(data_dir, tmp_path):
    logdir = tmp_path / "runs"
    args = (*EXTRA, "--ema-decay", "0.9")
    assert launch(tiny_args(data_dir, logdir, "base", *args), config=None).returncode == 0
    killed = launch(tiny_args(data_dir, logdir, "k", *args), config=None, env={VARIABLE: "step:17"})
    assert killed.returncode == -signal.SIGKILL
    resumed = launch(resume_args(data_dir, logdir, "k", *args), config=None)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(logdir / "k", logdir / "base")


def test_rng_states_of_every_process_are_checked_by_their_content(tmp_path):
    import numpy as np

    from perceiver_mnist.checkpoints import _check_rng_states

    good = {"random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
            "torch_manual_seed": torch.get_rng_state()}
    torch.save(good, tmp_path / "random_states_0.pkl")
    torch.save(good, tmp_path / "random_states_1.pkl")
    _check_rng_states(str(tmp_path), 2)
    # Rank 1's file is broken: rank 0 must reach the same verdict, or the processes resume from different steps.
    torch.save({**good, "torch_manual_seed": torch.zeros(3)}, tmp_path / "random_states_1.pkl")
    with pytest.raises(TypeError, match="RNG state must be a torch.ByteTensor"):
        _check_rng_states(str(tmp_path), 2)
    _check_rng_states(str(tmp_path), 1)


def _one_checkpoint(tmp_path, processes=0):
    """A run directory with one complete checkpoint whose RNG state is valid (its other files are never read),
    saved by ``processes`` processes (0: not recorded) of which only rank 0's RNG state file exists."""
    from types import SimpleNamespace

    import numpy as np

    from perceiver_mnist.checkpoints import STATE_FILE

    path = tmp_path / "checkpoints" / "step_3"
    path.mkdir(parents=True)
    state = TrainerState(step=3, batch_in_epoch=3, processes=processes)
    (path / STATE_FILE).write_text(json.dumps(dataclasses.asdict(state)))
    torch.save({"random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
                "torch_manual_seed": torch.get_rng_state()}, path / "random_states_0.pkl")
    printed: list[str] = []
    return SimpleNamespace(num_processes=1, print=printed.append), printed


@pytest.mark.parametrize("error", [OSError("disk gone"), EOFError("truncated"), RuntimeError("size mismatch")])
def test_an_unreadable_checkpoint_is_reported_and_skipped(error, tmp_path):
    accelerator, printed = _one_checkpoint(tmp_path)

    def load_state(path):
        raise error
    accelerator.load_state = load_state
    with pytest.raises(UserError, match="every checkpoint in .* is unreadable"):
        load_latest(accelerator, str(tmp_path))
    assert "step_3 is unreadable" in printed[0] and type(error).__name__ in printed[0]


def test_every_rng_state_a_checkpoint_was_saved_with_is_checked_however_many_processes_resume(tmp_path):
    """A checkpoint that says two processes saved it but lacks rank 1's state is unreadable, even on one process;
    one that one process saved resumes on two (their rank 1 keeps its own seeded state), with a note; so does one
    that does not say, with one RNG state file."""
    accelerator, printed = _one_checkpoint(tmp_path / "a", processes=2)
    accelerator.load_state = lambda path: None
    with pytest.raises(UserError, match="every checkpoint in .* is unreadable"):
        load_latest(accelerator, str(tmp_path / "a"))
    assert "FileNotFoundError" in printed[0]  # rank 1's file
    accelerator, printed = _one_checkpoint(tmp_path / "b", processes=1)
    accelerator.num_processes, accelerator.load_state = 2, lambda path: None
    assert load_latest(accelerator, str(tmp_path / "b")) == (TrainerState(step=3, batch_in_epoch=3, processes=1), [])
    assert "saved by 1 process(es) and this session has 2" in printed[0]
    # One that did not record its processes: as many as it has RNG state files.
    accelerator, printed = _one_checkpoint(tmp_path / "c", processes=0)
    accelerator.num_processes, accelerator.load_state = 2, lambda path: None
    assert load_latest(accelerator, str(tmp_path / "c"))[0].step == 3
    assert "saved by 1 process(es) and this session has 2" in printed[0]


def test_a_bug_while_loading_a_checkpoint_keeps_its_traceback(tmp_path):
    """A TypeError from our own code is not a corrupt file: it must not turn into "trying the previous one"."""
    accelerator, printed = _one_checkpoint(tmp_path)

    def load_state(path):
        raise TypeError("load_state() got an unexpected keyword argument")  # as a bug of ours would
    accelerator.load_state = load_state
    with pytest.raises(TypeError, match="unexpected keyword"):
        load_latest(accelerator, str(tmp_path))
    assert printed == []
