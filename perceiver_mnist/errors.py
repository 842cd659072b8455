"""The one exception type that means "the user must fix something".

Anything raised as a ``UserError`` is printed by the scripts as a single line and turns into exit code 2,
without a traceback. Everything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Callable, NoReturn

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # as a shell reports a process stopped by SIGINT (128 + 2)


class UserError(Exception):
    """A problem with the user's input (flags, data, run directory, checkpoint) with a fix in its message."""


class NonFiniteLoss(UserError):
    """The training loss became NaN or infinite: the recipe diverged. A recipe search marks such a trial failed and
    goes on; every other ``UserError`` stops it."""


def run_cli(main: Callable[[], int | None], prog: str) -> None:
    """Call ``main`` and turn a ``UserError`` or Ctrl-C into one line on stderr and a non-zero exit."""
    try:
        code = main()
    except UserError as err:
        rank = os.environ.get("RANK")
        prefix = f"{prog}: error" if rank in (None, "0") else f"{prog} [rank {rank}]: error"
        print(f"{prefix}: {err}", file=sys.stderr, flush=True)
        end_process(EXIT_USER_ERROR)
    except OSError as err:
        # The disk, not the code: full, read-only or not ours. One line, like any other user error.
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        path = err.filename or "a file"
        if err.errno in (errno.EACCES, errno.EPERM):  # from a read as often as from a write
            message = f"cannot access {path} ({err.strerror}); fix its permissions or choose another location"
        else:
            message = f"cannot write {path} ({err.strerror}); free some space or choose a writable location"
        print(f"{prog}: error: {message} (--logdir, --data-dir, --out)", file=sys.stderr, flush=True)
        end_process(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        end_process(EXIT_INTERRUPTED)
    end_process(code or 0)


def in_multi_process_run() -> bool:
    """Whether this process is one of several of a run (torchrun, and so accelerate launch, sets WORLD_SIZE in each)."""
    world_size = os.environ.get("WORLD_SIZE", "")
    return world_size.isdigit() and int(world_size) > 1


def cpu_process_group() -> bool:
    """Whether this process is one of several and there is no GPU: then the processes form a gloo group on the CPU.
    accelerate's torchrun launcher (used by multi_cpu.yaml) does not pass use_cpu on, and without it they would not
    form a group at all."""
    import torch  # here, not at the top: the scripts import this module to print a one-line error fast

    return in_multi_process_run() and not torch.cuda.is_available()


def end_process(code: int) -> NoReturn:
    """Exit with ``code``; a process of a multi-process run on the CPU (gloo) skips the interpreter's teardown.

    Why: with torch 2.14, a gloo process group that DistributedDataParallel has used can keep its threads after
    ``destroy_process_group()``, and if they are still running when the interpreter tears down, the process may
    abort (SIGABRT, "terminate called without an active exception") after all its work is done; CI saw it once in
    the 2-process test, and a bare DDP program aborts in about one exit in ten on a loaded CPU (BENCHMARKS.md,
    "Multi-process exit"). Files are complete by then (checkpoints and weights are written synchronously, TensorBoard is
    flushed), so such a process ends here, as soon as its output is flushed.
    """
    if cpu_process_group():  # gloo's threads; NCCL runs (GPUs) exit normally
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # an error path skipped end_training: NCCL wants it destroyed
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001  exiting anyway; the error that brought us here is what matters
            pass
    sys.exit(code)
