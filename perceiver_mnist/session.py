"""Opening a run, in one place: every pre-flight check, the one-writer lock, ``config.json`` and the position to
resume from. ``engine.train`` opens a run, builds what it trains, then asks ``Run.start`` where to begin.

Nothing is written until every check that can be made has passed, and nothing is written at all by a process that
does not hold the run's lock (``runs.RunLock``).
"""
from __future__ import annotations

import dataclasses
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from . import checkpoints
from .checkpoints import TrainerState
from .config import (ParsedArgs, Recipe, RunOptions, default_run_name, diff_fields, diff_model_fields, dumps,
                     preset_name, recipe_from_dict, recipe_to_dict, resolve_recipe)
from .errors import UserError
from .runs import CONFIG_FILE, LOCK_FILE, WEIGHTS_FILE, RunLock, find_run, is_run, read_config, write_atomic


@dataclass
class Run:
    """One session of a run: where it writes, what it trains, and the clock of its training time."""

    dir: str
    recipe: Recipe               # what this session trains (the saved recipe plus any flags, when resuming)
    options: RunOptions
    preset: str | None           # the preset a fresh run starts from, its dataset's if none was given; for a resumed
                                 # session the --preset given, if any (recorded in config.json)
    saved_config: dict[str, Any] | None  # config.json of the run being resumed; None for a fresh run
    saved_recipe: Recipe | None = None   # the recipe that config.json holds, checked (resumed runs)
    started: float = dataclasses.field(default_factory=time.perf_counter)  # this session's start
    elapsed_before: float = 0.0  # training wall time of the earlier sessions (from the checkpoint)

    @property
    def fresh(self) -> bool:
        return self.saved_config is None

    def elapsed(self) -> float:
        """Wall time since the run started, summed over its sessions."""
        return self.elapsed_before + time.perf_counter() - self.started

    def start(self, acc: Accelerator, parameters: int, steps_per_epoch: int) -> TrainerState | None:
        """Where training begins: step 0 of a fresh run (after writing its config.json), or the newest loadable
        checkpoint of a resumed one (restored into the prepared objects). None when the run has nothing left to
        do. Call on every process, after ``accelerator.prepare`` and after registering the weight average."""
        if self.fresh:
            _on_main(acc, lambda: write_atomic(os.path.join(self.dir, CONFIG_FILE),
                                               dumps(self._config(acc, parameters))),
                     lambda err: f"cannot write the run directory {self.dir} ({err.strerror or err}); choose a "
                                 f"writable --logdir")
            return TrainerState()
        state, unreadable = checkpoints.load_latest(acc, self.dir)
        check_resume_position(state, self.saved_recipe, self.recipe, self.options, steps_per_epoch)
        checkpoints.set_aside(acc, unreadable)  # only once the resume is sure: a refused one changes nothing
        if state.epoch >= self.recipe.epochs and os.path.isfile(os.path.join(self.dir, WEIGHTS_FILE)):
            acc.print(f"{self.dir} has already finished its {state.epoch} epochs (step {state.step}); nothing to "
                      f"do. To train longer, resume with --epochs N (N > {state.epoch}).")
            return None
        if self.saved_config["recipe"] != recipe_to_dict(self.recipe):
            # Resumed with changed flags (e.g. more --epochs): config.json stays the recipe this run now trains.
            _on_main(acc, lambda: write_atomic(os.path.join(self.dir, CONFIG_FILE),
                                               dumps({**self.saved_config, "recipe": recipe_to_dict(self.recipe)})),
                     lambda err: f"cannot rewrite {os.path.join(self.dir, CONFIG_FILE)} ({err.strerror or err})")
        self.elapsed_before = state.elapsed_s
        where = f" ({state.batch_in_epoch} batches into epoch {state.epoch + 1})" if state.batch_in_epoch else ""
        acc.print(f"resumed {self.dir} at epoch {state.epoch}, step {state.step}{where}")
        return state

    def _config(self, acc: Accelerator, parameters: int) -> dict[str, Any]:
        from importlib.metadata import version
        return {"recipe": recipe_to_dict(self.recipe), "preset": self.preset,
                "options": dataclasses.asdict(self.options), "parameters": parameters,
                "num_processes": acc.num_processes, "mixed_precision": acc.mixed_precision,
                "hardware": _hardware(acc),
                "versions": {pkg: version(pkg) for pkg in ("torch", "accelerate", "perceiver-pytorch")}}


def _hardware(acc: Accelerator) -> dict[str, Any]:
    """What the run started on (a model card reports it): the device type and name, and the machine's CPU cores."""
    cuda = acc.device.type == "cuda"
    name = torch.cuda.get_device_name(acc.device) if cuda else platform.processor() or platform.machine()
    return {"device": acc.device.type, "device_name": name, "cpu_cores": os.cpu_count()}


@contextmanager
def open_run(acc: Accelerator, args: ParsedArgs) -> Iterator[Run]:
    """Check the run directory against the flags, take its lock (main process only: one per run, however many
    processes or machines train it) and yield the ``Run``; the lock is held until the block ends.

    A fresh run's directory is created to hold the lock; if the block fails before ``config.json`` is written,
    the directory is removed again, so a refused start leaves nothing behind.
    """
    opts = args.options
    if not opts.run:
        if opts.resume:
            raise UserError("--resume needs --run NAME (the run to continue)")
        # Every process must use the same name: the timestamped default is decided on rank 0.
        opts.run = _from_main(acc, lambda: default_run_name(preset_name(args)))
    run_dir = os.path.join(opts.logdir, opts.run)
    if opts.resume:
        find_run(opts.logdir, opts.run)  # before the lock: an unknown run gets no directory
    elif os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise UserError(f"{run_dir} is a file, not a run directory; pick another --run name")
    lock = RunLock(run_dir)
    created = _on_main(acc, lambda: _lock(run_dir, lock),
                       lambda err: f"cannot lock {lock.path} ({err.strerror or err}); choose a writable --logdir on a "
                                   f"filesystem with file locks")
    try:
        run = _check(acc, args, run_dir)
        for name, size in (("batch-size", run.recipe.batch_size), ("test-batch-size", run.recipe.test_batch_size)):
            if size % acc.num_processes:
                raise UserError(f"--{name} {size} does not divide among {acc.num_processes} processes (it is the "
                                f"global batch); use a multiple of {acc.num_processes}")
        yield run
    except BaseException:
        if created and os.listdir(run_dir) == [LOCK_FILE]:  # ours, and still empty: a refused start leaves no trace
            _remove_created(run_dir, created)
        raise
    finally:
        if acc.is_main_process:
            lock.release()


def _lock(run_dir: str, lock: RunLock) -> str | None:
    """Take the run's lock, creating its directory if needed; returns the outermost directory created here."""
    created, path = None, os.path.abspath(run_dir)
    while not os.path.exists(path):
        created, path = path, os.path.dirname(path)
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the run directory {run_dir} ({err.strerror}); choose a writable "
                        f"--logdir") from None
    lock.acquire()
    return created


def _remove_created(run_dir: str, created: str) -> None:
    """Remove the lock file, the run directory and its parents up to ``created``, each only while it is empty
    (another run may have been started beside it meanwhile)."""
    os.remove(os.path.join(run_dir, LOCK_FILE))
    path = os.path.abspath(run_dir)
    while True:
        try:
            os.rmdir(path)
        except OSError:
            return
        if path == created:
            return
        path = os.path.dirname(path)


def _check(acc: Accelerator, args: ParsedArgs, run_dir: str) -> Run:
    """The recipe this session trains, after checking the run directory against --resume. Writes nothing."""
    opts = args.options
    if not opts.resume:
        if is_run(run_dir):
            raise UserError(f"{run_dir} already holds a run; continue it with --resume, or pick another --run name")
        if os.path.isdir(run_dir) and set(os.listdir(run_dir)) - {LOCK_FILE}:  # a machine without it: no files
            raise UserError(f"{run_dir} holds files but no run; pick another --run name (nothing there is touched)")
        return Run(run_dir, resolve_recipe(args), opts, preset_name(args), None)
    config = read_config(run_dir)
    saved = recipe_from_dict(config["recipe"], os.path.join(run_dir, CONFIG_FILE))
    recipe = resolve_recipe(args, saved)
    differ = diff_model_fields(saved, recipe)
    if bool(saved.ema_decay) != bool(recipe.ema_decay):  # the checkpoints hold a weight average or do not
        differ.append(f"ema_decay: {saved.ema_decay} -> {recipe.ema_decay}")
    if differ:
        raise UserError(f"cannot resume {run_dir}: its checkpoints hold a different model ({'; '.join(differ)}); "
                        f"drop those flags, or start a new run")
    changed = diff_fields(recipe_to_dict(saved), recipe_to_dict(recipe))
    if changed:
        acc.print(f"resuming with a changed recipe: {'; '.join(changed)}")
    return Run(run_dir, recipe, opts, args.preset, config, saved)


def check_resume_position(state: TrainerState, saved: Recipe, recipe: Recipe, opts: RunOptions,
                          steps_per_epoch: int) -> None:
    """Refuse flags that contradict where the checkpoint stands, before anything is rewritten."""
    done = state.epoch + (1 if state.batch_in_epoch else 0)  # epochs begun
    if recipe.epochs < done:
        raise UserError(f"the run has already begun epoch {done}; --epochs must be at least {done}")
    if opts.max_steps and opts.max_steps <= state.step:
        raise UserError(f"the run is already at step {state.step}; give a larger --max-steps, or none")
    # Mid-epoch, the checkpoint counts batches of the epoch as it was: another batch size or training set
    # would make that position meaningless (and past the end of a shorter epoch the epoch never ends).
    if state.batch_in_epoch and (recipe.batch_size != saved.batch_size or recipe.val_size != saved.val_size
                                 or state.batch_in_epoch >= steps_per_epoch):
        raise UserError(f"the checkpoint is {state.batch_in_epoch} batches into epoch {state.epoch + 1}, trained "
                        f"with --batch-size {saved.batch_size} --val-size {saved.val_size}: resume with those and "
                        f"the same data until the epoch ends (--max-steps can stop it there), then change them")


def _from_main(acc: Accelerator, make: Callable[[], Any]) -> Any:
    """``make()`` computed on the main process and sent to the others."""
    return broadcast_object_list([make() if acc.is_main_process else None])[0] if acc.num_processes > 1 else make()


def _on_main(acc: Accelerator, action: Callable[[], Any], os_error: Callable[[OSError], str]) -> Any:
    """Run ``action`` on the main process only; every process raises its ``UserError`` (or the message
    ``os_error`` makes of an ``OSError``), so that all of them stop together. Returns the action's result on the
    main process and None elsewhere."""
    result, error = None, None
    if acc.is_main_process:
        try:
            result = action()
        except UserError as err:
            error = str(err)
        except OSError as err:
            error = os_error(err)
    if acc.num_processes > 1:
        error = broadcast_object_list([error])[0]
    if error:
        raise UserError(error)
    return result
