"""Starting and stopping training runs from a bench: one `accelerate launch ... train.py` command line, and one way
to stop a run the way a user's Ctrl-C does (train.py saves a checkpoint and exits).

A run starts in a session of its own, so signals sent to the bench's group (a terminal's Ctrl-C, `timeout`'s SIGTERM,
a closed terminal's SIGHUP) do not reach it: the bench passes them on. The launcher itself is never interrupted (it
would print a traceback); its children are: train.py, or for several processes torch elastic's workers, which run
in sessions of their own too, so they are tracked by pid rather than by process group.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOP_GRACE_S = 120  # how long a stopped run may take to save its checkpoint before it is killed

_interrupted: dict[int, list[psutil.Process]] = {}  # launcher pid -> the processes that got Ctrl-C


def train_command(config: str, *train_args: str) -> list[str]:
    """`accelerate launch` of this interpreter (whatever `accelerate` on the PATH belongs to) running train.py.

    ``--quiet``: a run stopped by Ctrl-C exits non-zero, and the launcher would add a traceback for it."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file", config,
            os.path.join(ROOT, "train.py"), *train_args]


def start(cmd: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """Start a launcher in a session of its own. SIGTERM and SIGHUP to the bench become ``SystemExit`` (as Ctrl-C
    becomes ``KeyboardInterrupt``), so that the caller can ``stop`` the run on any way out."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda received, frame: sys.exit(128 + received))
    return subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, **popen_kwargs)


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    running = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:  # is_running also rules out a reused pid
                running.append(p)
        except psutil.NoSuchProcess:
            pass
    return running


def _group(pgid: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                members.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


def alive(process: subprocess.Popen) -> bool:
    """Whether anything of the run is left: the launcher, a process of its group, or one it was interrupted in
    (zombies do not count: a killed run's processes may wait a while for an init that reaps them)."""
    if process.poll() is None:
        return True
    return bool(_running(_interrupted.get(process.pid, []) + _group(process.pid)))


def _kill(process: subprocess.Popen) -> None:
    targets = _running(_interrupted.get(process.pid, []) + _group(process.pid))
    for p in targets:
        try:
            p.kill()
        except psutil.NoSuchProcess:  # it ended in the meantime
            pass
    process.wait()
    deadline = time.monotonic() + 10  # SIGKILL is delivered asynchronously
    while _running(targets) and time.monotonic() < deadline:
        time.sleep(0.05)


def interrupt(process: subprocess.Popen) -> None:
    """Ctrl-C to the run's processes, once (a second Ctrl-C would abort the checkpoint being saved). A launcher
    that has no child yet has trained nothing: it is killed at once."""
    if process.pid in _interrupted or process.poll() is not None:
        return
    try:
        launcher = psutil.Process(process.pid)
        children, descendants = launcher.children(), launcher.children(recursive=True)
    except psutil.NoSuchProcess:  # the launcher has ended
        return
    _interrupted[process.pid] = descendants  # to kill, should they outlive the grace period
    if not children:
        _kill(process)
    for child in children:  # train.py, or elastic's workers; not their own helpers (compile workers)
        try:
            child.send_signal(signal.SIGINT)
        except psutil.NoSuchProcess:  # it ended by itself meanwhile
            pass


def kill_after(process: subprocess.Popen, deadline: float) -> bool:
    """Wait until the run has ended or ``time.monotonic()`` passes ``deadline``; then SIGKILL what is left of it.
    True if something had to be killed. Interrupted while waiting, it kills the run before passing that on."""
    try:
        while alive(process) and time.monotonic() < deadline:
            time.sleep(0.5)
    except BaseException:
        _kill(process)
        raise
    if not alive(process):
        return False
    _kill(process)
    return True


def stop(*processes: subprocess.Popen) -> list[bool]:
    """Ctrl-C to every run at once, then wait, together for at most ``STOP_GRACE_S``, for each to checkpoint and
    exit; for each, True if it had to be killed."""
    for process in processes:
        interrupt(process)
    deadline = time.monotonic() + STOP_GRACE_S
    return [kill_after(process, deadline) for process in processes]
