"""One writer per run directory: real processes racing for the same run, a live run and its readers."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from perceiver_mnist.runs import LOCK_FILE

from .conftest import ROOT, launch, offline_env, resume_args, tiny_args, train_cmd


def start(args: list[str]) -> subprocess.Popen:
    """train.py in its own process (plain python: the Popen pid is the process that takes the lock)."""
    return subprocess.Popen(train_cmd(args, config=None), cwd=ROOT, env=offline_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_epoch_1(proc: subprocess.Popen) -> None:
    """Until the first epoch's summary line: its scalars are in the event file, and it has a checkpoint."""
    for line in proc.stdout:
        if line.startswith("epoch 1/"):
            return
    raise AssertionError(proc.communicate()[1][-3000:])


def holder_text(pid: int) -> str:
    return f"is being written by process {pid} on {socket.gethostname()} since "


def test_twin_starts_one_trains_and_the_other_exits_2_touching_nothing(data_dir: Path, tmp_path: Path):
    logdir = tmp_path / "runs"
    # A schedule far longer than the test: the winner is still training whenever the loser reaches the lock.
    args = tiny_args(data_dir, logdir, "same", "--epochs", "1000", "--grid-images", "0")
    twins = [start(args), start(args)]
    deadline = time.monotonic() + 180
    while all(p.poll() is None for p in twins):
        if time.monotonic() > deadline:
            for p in twins:
                p.kill()
            raise AssertionError("neither twin was refused")
        time.sleep(0.2)
    loser, = [p for p in twins if p.poll() is not None]
    winner, = [p for p in twins if p is not loser]
    loser_err = loser.communicate(timeout=60)[1]
    wait_for_epoch_1(winner)  # the winner trains: once its first epoch is done, stop it the usual way
    winner.send_signal(signal.SIGINT)
    winner_out, winner_err = winner.communicate(timeout=120)
    assert loser.returncode == 2 and winner.returncode == 130, (loser_err[-2000:], winner_err[-2000:])
    lines = loser_err.strip().splitlines()
    assert len(lines) == 1 and holder_text(winner.pid) in lines[0] and "Traceback" not in loser_err
    assert "Resume with:" in winner_out
    run = logdir / "same"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # only the winner ever logged
    assert json.loads((run / "config.json").read_text())["options"]["run"] == "same"
    assert (run / LOCK_FILE).read_text() == ""  # released: the holder's name is not left behind


def test_a_live_run_refuses_resume_serves_readers_and_resumes_at_once_after_kill_9(data_dir: Path, tmp_path: Path):
    logdir = tmp_path / "runs"
    run = logdir / "live"
    live = start(tiny_args(data_dir, logdir, "live", "--epochs", "1000", "--grid-images", "0",
                           "--checkpoint-every", "4"))
    try:
        wait_for_epoch_1(live)
        # A reader is never blocked by the lock.
        figures = subprocess.run([sys.executable, str(ROOT / "figures.py"), "--run", "live", "--logdir", str(logdir),
                                  "--no-model"], cwd=ROOT, env=offline_env(), capture_output=True, text=True,
                                 timeout=120)
        assert figures.returncode == 0, figures.stderr[-2000:]
        assert (run / "figures" / "accuracy.png").is_file()
        # A second writer, as a scheduler that requeues a job would start it, is refused while the first lives.
        second = launch(resume_args(data_dir, logdir, "live"), config=None, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-2000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and holder_text(live.pid) in lines[0]
        assert live.poll() is None  # the holder trains on
    finally:
        live.send_signal(signal.SIGKILL)
        live.communicate(timeout=60)
    # The OS dropped the lock with the process: no stale lock, --resume works at once.
    newest = max((json.loads(p.read_text())["step"] for p in run.glob("checkpoints/*/trainer_state.json")))
    resumed = launch(resume_args(data_dir, logdir, "live", "--max-steps", str(newest + 2)), config=None, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"step {newest}" in resumed.stdout and f"stopped at --max-steps {newest + 2}" in resumed.stdout
