"""Crash-safe checkpoints: accelerate ``save_state`` into a temporary directory, then one atomic rename.

A checkpoint directory is complete exactly when it has its final name and holds ``trainer_state.json`` (written
last, inside the temporary directory). A kill at any instant leaves the previous complete checkpoint untouched,
and ``--resume`` never picks up a half-written one.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import RNG_STATE_NAME
from accelerate.utils import load as accelerate_load
from safetensors import SafetensorError

from . import faults
from .config import dumps
from .errors import UserError
from .runs import CHECKPOINTS_DIR, write_atomic

STATE_FILE = "trainer_state.json"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".old-"
UNREADABLE_PREFIX = ".unreadable-"  # a checkpoint that failed to load, kept for inspection but never resumed from


@dataclass
class TrainerState:
    """The loop's position, saved beside accelerate's model/optimizer/scheduler/RNG state."""

    epoch: int = 0            # complete epochs
    step: int = 0             # optimizer steps done in total
    batch_in_epoch: int = 0   # batches of epoch ``epoch + 1`` already trained on (0 at an epoch boundary)
    elapsed_s: float = 0.0    # training wall time so far, summed over sessions
    skipped_steps: int = 0    # fp16 steps skipped by the loss scaler so far
    epoch_loss_sum: float = 0.0  # the current epoch's batch losses so far, summed (each the mean over processes)
    processes: int = 0        # processes that saved it, one RNG state file each (0: not recorded)

    @property
    def name(self) -> str:
        return f"epoch_{self.epoch}" if self.batch_in_epoch == 0 else f"step_{self.step}"


def _read_state(path: str) -> TrainerState | None:
    """The checkpoint's position, or None when its state file is missing or not what ``save`` writes."""
    try:
        with open(os.path.join(path, STATE_FILE)) as f:
            state = TrainerState(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None
    numbers = [getattr(state, f.name) for f in fields(state)]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        return None
    return state


def complete_checkpoints(run_dir: str) -> list[tuple[str, TrainerState]]:
    """Complete checkpoints of a run, oldest first."""
    root = os.path.join(run_dir, CHECKPOINTS_DIR)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        if name.startswith((TMP_PREFIX, TRASH_PREFIX, UNREADABLE_PREFIX)):
            continue
        state = _read_state(os.path.join(root, name))
        if state is not None:
            found.append((os.path.join(root, name), state))
    return sorted(found, key=lambda item: item[1].step)


def save(accelerator: Accelerator, run_dir: str, state: TrainerState, keep: int) -> str:
    """Save the full training state atomically; keep the ``keep`` newest checkpoints. Call on every process."""
    root = os.path.join(run_dir, CHECKPOINTS_DIR)
    final = os.path.join(root, state.name)
    tmp = os.path.join(root, TMP_PREFIX + state.name)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left over from a crash during an earlier write
        os.makedirs(root, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)  # every process writes its own RNG state into it
    accelerator.wait_for_everyone()
    faults.kill_if_armed("checkpoint", state.step)
    if accelerator.is_main_process:
        write_atomic(os.path.join(tmp, STATE_FILE), dumps(asdict(replace(state, processes=accelerator.num_processes))))
        if os.path.exists(final):  # the same position saved before: an unreadable one that set_aside could not rename
            trash = os.path.join(root, TRASH_PREFIX + state.name)
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(final, trash)
        os.replace(tmp, final)
        for path, _ in complete_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
        for name in os.listdir(root):
            if name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _check_rng_states(path: str, num_processes: int) -> None:
    """Raise if any process's RNG state in the checkpoint is unreadable.

    ``load_state`` swallows that error (it logs it at info level) and goes on with the current RNG state, so the
    resumed run would quietly draw other augmentations than the uninterrupted one. Every process checks every
    process's file, so that all of them reach the same verdict and fall back to the same checkpoint. The states
    are applied to throwaway generators: that checks their content, not just their keys.
    """
    for rank in range(num_processes):
        states = accelerate_load(os.path.join(path, f"{RNG_STATE_NAME}_{rank}.pkl"))
        random.Random().setstate(states["random_state"])
        np.random.RandomState().set_state(states["numpy_random_seed"])
        torch.Generator().set_state(states["torch_manual_seed"])
        # Saved only where CUDA was available; a CPU checkpoint resumed on a GPU has none (and none is needed).
        for cuda_state in states.get("torch_cuda_manual_seed", []):
            if not isinstance(cuda_state, torch.Tensor) or cuda_state.dtype != torch.uint8:
                raise ValueError(f"rank {rank}'s CUDA random state is not a byte tensor")


# What a missing, truncated or garbled checkpoint file raises while it is read; anything else is a bug in our code
# and keeps its traceback. RuntimeError: torch's zip reader ("PytorchStreamReader failed ...") and load_state_dict's
# key or shape mismatch; ValueError: an optimizer state of another shape; KeyError: a state without its entries.
UNREADABLE = (OSError, EOFError, pickle.UnpicklingError, SafetensorError, RuntimeError, ValueError, KeyError)
# RuntimeErrors that say nothing about the file: out of memory, a failed collective.
NOT_THE_FILE = (torch.cuda.OutOfMemoryError, torch.distributed.DistError)


def load_latest(accelerator: Accelerator, run_dir: str) -> tuple[TrainerState, list[str]]:
    """Restore the newest loadable checkpoint; an unreadable one is reported and the previous one tried. Returns
    the restored position and the unreadable checkpoints passed over, for ``set_aside`` once the resume is sure."""
    candidates = complete_checkpoints(run_dir)
    if not candidates:
        raise UserError(f"{run_dir} has no complete checkpoint to resume from; start it again without --resume "
                        f"under a new --run name")
    unreadable = []
    for path, state in reversed(candidates):
        saved_by = state.processes or _rng_state_files(path) or accelerator.num_processes
        try:
            # The states' content goes straight into setstate: there a TypeError means a bad file, too.
            _check_rng_states(path, saved_by)
        except (*UNREADABLE, TypeError) as err:
            _warn_unreadable(accelerator, path, err)
            unreadable.append(path)
            continue
        try:
            accelerator.load_state(path)  # a rank with no saved RNG state keeps its own (seeded) one
        except NOT_THE_FILE:
            raise
        except UNREADABLE as err:
            _warn_unreadable(accelerator, path, err)
            unreadable.append(path)
            continue
        if saved_by != accelerator.num_processes:
            accelerator.print(f"note: {path} was saved by {saved_by} process(es) and this session has "
                              f"{accelerator.num_processes}: training continues from the same position, but the "
                              f"ranks' random augmentations differ from those of an uninterrupted run")
        return state, unreadable
    raise UserError(f"every checkpoint in {os.path.join(run_dir, CHECKPOINTS_DIR)} is unreadable; "
                    f"start a new run")


def _rng_state_files(path: str) -> int:
    """How many ranks' RNG states a checkpoint holds (for one that did not record its ``processes``)."""
    ranks = [name[len(RNG_STATE_NAME) + 1:-len(".pkl")] for name in os.listdir(path)
             if name.startswith(RNG_STATE_NAME + "_") and name.endswith(".pkl")]
    return max((int(r) + 1 for r in ranks if r.isdigit()), default=0)


def set_aside(accelerator: Accelerator, paths: list[str]) -> None:
    """Rename unreadable checkpoints out of the run's list (call on every process). Left in place, one would count
    among the newest when the checkpoints written after the fallback (at lower steps) are pruned, and those would
    be deleted instead."""
    if not paths:
        return
    accelerator.wait_for_everyone()  # every process is done reading them
    if accelerator.is_main_process:
        for path in paths:
            root, name = os.path.split(path)
            target, n = os.path.join(root, UNREADABLE_PREFIX + name), 1
            while os.path.exists(target):
                n += 1
                target = os.path.join(root, f"{UNREADABLE_PREFIX}{name}-{n}")
            try:
                os.replace(path, target)
            except OSError as err:  # the run can go on: pruning may then take fresh checkpoints first
                accelerator.print(f"warning: could not rename the unreadable {path} ({err.strerror or err}); "
                                  f"remove it by hand")
            else:
                accelerator.print(f"kept the unreadable checkpoint as {target}")
    accelerator.wait_for_everyone()


def _warn_unreadable(accelerator: Accelerator, path: str, err: Exception) -> None:
    first_line = str(err).splitlines()[0][:120] if str(err) else ""
    accelerator.print(f"warning: checkpoint {path} is unreadable ({type(err).__name__}: {first_line}); "
                      f"trying the previous one")
