"""bench/launching.py, which the benches use to stop training runs as Ctrl-C does, on a stand-in for
`accelerate launch`: a launcher process whose child handles SIGINT the way train.py does (or ignores it)."""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import launching  # noqa: E402

CHILD = """
import signal, sys, time
from pathlib import Path
out, sigints = Path(sys.argv[1]), []
def on_sigint(signum, frame):
    sigints.append(signum)
    out.joinpath("sigints").write_text(str(len(sigints)))
signal.signal(signal.SIGINT, on_sigint if sys.argv[2] == "handle" else signal.SIG_IGN)
out.joinpath("ready").write_text("")
for _ in range(2400):
    if sigints:  # saving a checkpoint takes a while; a second Ctrl-C meanwhile would abort it
        time.sleep(0.5)
        sys.exit(130)
    time.sleep(0.05)
"""
# The stand-in launcher: starts the child and exits with its status, as accelerate launch --quiet does.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', sys.argv[1], *sys.argv[2:]]))"


def start_run(tmp_path: Path, on_sigint: str) -> tuple:
    process = launching.start([sys.executable, "-c", LAUNCHER, CHILD, str(tmp_path), on_sigint])
    deadline = time.monotonic() + 60
    while not (tmp_path / "ready").exists():
        assert time.monotonic() < deadline and process.poll() is None, "the stand-in run did not start"
        time.sleep(0.05)
    child = psutil.Process(process.pid).children()[0]
    return process, child


def gone(process: psutil.Process) -> bool:
    """Ended: a zombie has ended too, it only waits for init to reap it."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(autouse=True)
def restore_signal_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_stop_sends_ctrl_c_to_the_run_once_and_waits_for_it(tmp_path: Path):
    process, child = start_run(tmp_path, "handle")
    launching.interrupt(process)
    assert launching.stop(process) == [False]  # it exited by itself, nothing was killed
    assert (tmp_path / "sigints").read_text() == "1"  # stopping twice sends Ctrl-C once
    assert process.returncode == 130 and not launching.alive(process) and gone(child)


def test_a_run_that_ignores_ctrl_c_is_killed_after_the_grace_period(tmp_path: Path):
    process, child = start_run(tmp_path, "ignore")
    launching.interrupt(process)
    began = time.monotonic()
    assert launching.kill_after(process, began + 1.0) is True
    assert 1.0 <= time.monotonic() - began < 30
    assert not launching.alive(process) and gone(child)
    assert not (tmp_path / "sigints").exists()


def test_a_bench_stopped_while_it_waits_leaves_no_run_behind(tmp_path: Path):
    """SIGTERM to the bench (gpu_check.sh's `timeout`) during the grace period: the run is killed, not orphaned."""
    process, child = start_run(tmp_path, "ignore")
    launching.interrupt(process)
    signal.signal(signal.SIGALRM, signal.getsignal(signal.SIGTERM))  # the handler that start() installed
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(SystemExit):
            launching.kill_after(process, time.monotonic() + 60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert not launching.alive(process) and gone(child)


def test_stop_at_sees_an_accuracy_once_an_epoch_has_logged_it(tmp_path: Path):
    """bench/time_to_accuracy.py --stop-at: the run's own event file says when an epoch reached the accuracy."""
    from torch.utils.tensorboard import SummaryWriter

    import time_to_accuracy
    from perceiver_mnist import tracking

    run = tmp_path / "run"
    assert not time_to_accuracy.reached(str(run), 99.0)  # not started yet
    run.mkdir()
    assert not time_to_accuracy.reached(str(run), 99.0)  # no event file yet
    writer = SummaryWriter(str(run))
    for step, accuracy in [(100, 97.5), (200, 98.9)]:
        writer.add_scalar(tracking.TEST_ACCURACY, accuracy, step)
    writer.flush()
    assert not time_to_accuracy.reached(str(run), 99.0) and time_to_accuracy.reached(str(run), 98.9)
    writer.add_scalar(tracking.TEST_ACCURACY, 99.1, 300)
    writer.close()
    assert time_to_accuracy.reached(str(run), 99.0) and not time_to_accuracy.reached(str(run), 0)
