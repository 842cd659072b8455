"""The layout of a run directory, in one place (no torch import: figures.py uses it too).

    LOGDIR/NAME/
      events.out.tfevents.*     TensorBoard scalars, prediction grids, hparams
      config.json               the fully resolved recipe and run options, written at start
      checkpoints/epoch_N/      accelerate save_state after N complete epochs (+ trainer_state.json)
      checkpoints/step_S/       mid-epoch checkpoints (--checkpoint-every, interrupts, --max-steps)
      model.safetensors         final weights
      figures/                  written by figures.py
      .lock                     held by the one process that writes the run (see ``RunLock``)
"""
from __future__ import annotations

import glob
import json
import os
import socket
import time
from contextlib import contextmanager
from typing import Any, Iterator

from .errors import UserError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINTS_DIR = "checkpoints"
FIGURES_DIR = "figures"
EVENTS_GLOB = "events.out.tfevents.*"
LOCK_FILE = ".lock"


def list_runs(logdir: str) -> list[str]:
    """Names of the directories under ``logdir`` that look like runs."""
    if not os.path.isdir(logdir):
        return []
    return sorted(d for d in os.listdir(logdir) if is_run(os.path.join(logdir, d)))


def is_run(path: str) -> bool:
    return os.path.isdir(path) and (
        os.path.exists(os.path.join(path, CONFIG_FILE)) or bool(glob.glob(os.path.join(path, EVENTS_GLOB)))
        or os.path.isdir(os.path.join(path, CHECKPOINTS_DIR)))


def newest_finished_run(logdir: str) -> str | None:
    """The name of the run under ``logdir`` whose final weights were written last (None when no run finished)."""
    finished = [(os.path.getmtime(os.path.join(logdir, name, WEIGHTS_FILE)), name) for name in list_runs(logdir)
                if os.path.isfile(os.path.join(logdir, name, WEIGHTS_FILE))]
    return max(finished)[1] if finished else None


def unknown_run_error(logdir: str, name: str) -> UserError:
    runs = list_runs(logdir)
    known = f"runs in {logdir}: {', '.join(runs)}" if runs else f"there are no runs in {logdir!r}"
    return UserError(f"no run named {name!r} ({known})")


def find_run(logdir: str, name: str) -> str:
    """The path of an existing run, or a ``UserError`` listing the runs that do exist."""
    path = os.path.join(logdir, name)
    if not is_run(path):
        raise unknown_run_error(logdir, name)
    return path


class RunLock:
    """The one-writer lock of a run directory: an exclusive ``flock`` (filelock's) on ``RUN/.lock``.

    The writing process holds it for its whole life and writes who it is into the file. The OS drops a ``flock``
    when its process dies, however it dies, so a crash never leaves a stale lock that blocks ``--resume``. Readers
    (TensorBoard, figures.py, predict.py, export.py) never take it.
    """

    def __init__(self, run_dir: str):
        from filelock import FileLock
        self.path = os.path.join(run_dir, LOCK_FILE)
        # Never wait: a second writer is refused at once. No soft-lock fallback where the filesystem has no flock:
        # a lock file that outlives a killed process would block --resume; such a filesystem is an OSError here.
        self._lock = FileLock(self.path, timeout=0, fallback_to_soft=False)

    def acquire(self) -> None:
        """Take the lock, or raise a ``UserError`` naming its holder."""
        from filelock import Timeout
        try:
            self._lock.acquire()
        except Timeout:
            raise UserError(f"{os.path.dirname(self.path)} is being written by {self.holder()}; wait for it to "
                            f"finish or stop it (Ctrl-C saves a checkpoint), then --resume") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}
        with open(self.path, "w") as f:  # the locked file itself: a flock does not care what the file holds
            f.write(json.dumps(holder) + "\n")

    def release(self) -> None:
        # Emptied while still held: a finished run's directory is the same after any later refused or idle
        # --resume, and a holder's name is never left behind except by a process that was killed.
        if os.path.exists(self.path):  # else removed with the directory of a fresh run that was refused
            os.truncate(self.path, 0)
        self._lock.release()

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it."""
        try:
            with open(self.path) as f:
                holder = json.load(f)
            return f"process {holder['pid']} on {holder['host']} since {holder['since']}"
        except (OSError, ValueError, KeyError, TypeError):  # written a moment after the lock is taken
            return "another process"


def read_config(run_dir: str) -> dict[str, Any]:
    path = os.path.join(run_dir, CONFIG_FILE)
    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} not found: the run was never started properly") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is unreadable ({err}); restore it or start a new run") from None
    if not isinstance(config, dict) or not isinstance(config.get("recipe"), dict):
        raise UserError(f"{path} holds no recipe (not a config.json written by train.py or export.py); restore it "
                        f"or start a new run")
    return config


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary name to write ``path`` under: renamed to ``path`` when the block succeeds and removed when it
    fails, so a crash or a full disk leaves the old file or the new one, never half of one."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.isfile(tmp):
            os.remove(tmp)
        raise


def write_atomic(path: str, text: str) -> None:
    """Write a text file so that a crash leaves either the old or the new content, never half of it."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
