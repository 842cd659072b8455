"""Fault injection for the crash-safety tests (tests/test_crash.py); inert unless the variable below is set.

``PERCEIVER_MNIST_FAULT=POINT:STEP`` makes the training process fail at a chosen instant, so the tests can prove
that a run killed there resumes exactly:

* ``step:S``        SIGKILL right after optimizer step S (in the middle of an epoch);
* ``eval:S``        SIGKILL during the evaluation that follows step S, after its first batch;
* ``checkpoint:S``  SIGKILL while the checkpoint of step S is being written (state saved, not yet renamed);
* ``nan:S``         the loss of step S becomes NaN (the non-finite guard must stop the run);
* ``interrupt:S``   SIGINT right after optimizer step S, as a Ctrl-C would arrive (the run must stop cleanly).
"""
from __future__ import annotations

import os
import signal

VARIABLE = "PERCEIVER_MNIST_FAULT"
_point, _, _step = os.environ.get(VARIABLE, "").partition(":")


def armed(point: str, step: int) -> bool:
    return _point == point and _step == str(step)


def kill_if_armed(point: str, step: int) -> None:
    if armed(point, step):
        os.kill(os.getpid(), signal.SIGINT if point == "interrupt" else signal.SIGKILL)
