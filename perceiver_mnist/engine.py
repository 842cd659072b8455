"""The training loop: one ``accelerator.prepare``, a visible ``train_one_epoch`` / ``evaluate`` pair, checkpoints.

The same code runs on a CPU, one GPU, several GPUs or machines, in fp32/fp16/bf16: the accelerate config decides.
Batch sizes in the recipe are global (``split_batches=True``): a run trains the same recipe on 1 or N processes.
"""
from __future__ import annotations

import dataclasses
import math
import os
import platform
import signal
import time
from dataclasses import dataclass
from typing import Any

import psutil
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list, set_seed
from safetensors.torch import save_file
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from . import checkpoints, faults, tracking
from .checkpoints import TrainerState
from .config import (NUM_CLASSES, ParsedArgs, Recipe, RunOptions, default_run_name, diff_model_fields, dumps,
                     recipe_from_dict, recipe_to_dict, resolve_recipe)
from .data import Splits, augment, load_datasets, make_loader, to_float
from .errors import UserError, in_multi_process_run
from .model import build_model, count_parameters
from .runs import CONFIG_FILE, WEIGHTS_FILE, atomic_path, find_run, is_run, read_config, write_atomic

EXIT_INTERRUPTED = 130


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, recipe: Recipe, reduction: str = "mean") -> torch.Tensor:
    """Per-sample or mean loss. ``mse`` is the seed's MSE between the raw outputs and one-hot labels."""
    logits = logits.float()  # fp16/bf16 logits from autocast: take the loss in fp32
    if recipe.loss == "mse":
        target = F.one_hot(labels, NUM_CLASSES).float()
        per_sample = F.mse_loss(logits, target, reduction="none").mean(dim=1)
        return per_sample.mean() if reduction == "mean" else per_sample
    smoothing = recipe.label_smoothing
    return F.cross_entropy(logits, labels, label_smoothing=smoothing, reduction=reduction)


def lr_factor(step: int, recipe: Recipe, steps_per_epoch: int) -> float:
    """Multiplier of the peak learning rate before optimizer step ``step`` (0-based)."""
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if recipe.scheduler == "exponential":  # torch's ExponentialLR stepped once per epoch, as in the seed
        return recipe.gamma ** (step // steps_per_epoch)
    if recipe.scheduler == "cosine":
        total = recipe.epochs * steps_per_epoch
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return recipe.lr_floor + (1.0 - recipe.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    # fused: one kernel for the whole update instead of ~10 small ops per parameter tensor (CPU and CUDA).
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, fused=True)
    # No weight decay on biases and LayerNorm gains (the 1-D parameters), as is usual for transformers.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=recipe.lr, fused=True)


def ema_update_fn(decay: float):
    """``multi_avg_fn`` for ``AveragedModel``: an exponential moving average whose decay ramps up as
    (1 + n) / (10 + n) towards ``decay`` (n: updates so far).

    Without the ramp, a 0.999 average still weighs the random initial weights by 0.999**n (63% after the first
    epoch of 469 steps), and its accuracy lags the raw weights for several epochs. The decay is computed as a
    tensor from AveragedModel's on-device counter: no host sync per step on a GPU.
    """
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = num_averaged.to(averaged[0].dtype)
        weight = 1.0 - torch.clamp((1.0 + n) / (10.0 + n), max=decay)
        torch._foreach_lerp_(averaged, current, weight)
    return update


def build_ema(model: torch.nn.Module, recipe: Recipe) -> AveragedModel | None:
    """The weight average of ``model`` that --ema-decay asks for (None when it is 0)."""
    if not recipe.ema_decay:
        return None
    return AveragedModel(model, multi_avg_fn=ema_update_fn(recipe.ema_decay), use_buffers=True)


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and exits. A second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum


@dataclass
class Loop:
    """Everything the two loop functions share (built once by ``train``)."""

    accelerator: Accelerator
    recipe: Recipe
    options: RunOptions
    run_dir: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    test_loader: Any
    val_loader: Any
    splits: Splits
    state: TrainerState
    stop: StopRequest
    ema: AveragedModel | None  # the weight average that is evaluated and saved, with --ema-decay

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model


def _stop_requested(loop: Loop) -> bool:
    """Whether any process got SIGINT/SIGTERM. Collective with >1 process, so checked every --log-every steps."""
    acc = loop.accelerator
    if acc.num_processes == 1:
        return loop.stop.signal is not None
    if loop.state.step % loop.options.log_every:
        return False
    flag = torch.tensor([float(loop.stop.signal is not None)], device=acc.device)
    return bool(acc.reduce(flag, reduction="sum").item() > 0)


def train_one_epoch(loop: Loop, epoch: int) -> str | None:
    """Train until the epoch ends (returns None), or until --max-steps or a signal (returns the reason)."""
    acc, recipe, opts, state = loop.accelerator, loop.recipe, loop.options, loop.state
    loop.model.train()
    loop.train_loader.set_epoch(epoch)
    batches = loop.train_loader
    if state.batch_in_epoch:  # resumed mid-epoch: the sampler order is a function of (seed, epoch)
        batches = acc.skip_first_batches(loop.train_loader, state.batch_in_epoch)
    # Non-finite losses are recorded on the device (no sync per step) and checked when the loss is logged.
    first_bad_step = torch.tensor(-1, device=acc.device)
    loss_sum = torch.zeros((), device=acc.device)
    # disable=None: a bar in a terminal only, not in log files (the per-epoch summary line is printed anyway).
    bar = tqdm(batches, total=len(loop.train_loader), initial=state.batch_in_epoch, dynamic_ncols=True,
               desc=f"epoch {epoch + 1}/{recipe.epochs}", leave=False,
               disable=None if acc.is_local_main_process else True)
    for images, labels in bar:
        x = augment(to_float(images), recipe)
        loss = loss_fn(loop.model(x), labels, recipe)
        if faults.armed("nan", state.step + 1):
            loss = loss * float("nan")
        acc.backward(loss)
        if recipe.grad_clip:
            acc.clip_grad_norm_(loop.model.parameters(), recipe.grad_clip)
        loop.optimizer.step()
        loop.scheduler.step()
        loop.optimizer.zero_grad(set_to_none=True)
        if loop.ema is not None:
            loop.ema.update_parameters(acc.unwrap_model(loop.model))
        state.step += 1
        state.batch_in_epoch += 1
        state.skipped_steps += int(acc.optimizer_step_was_skipped)
        loss = loss.detach()
        loss_sum += loss
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss), state.step, first_bad_step)
        if state.step % opts.log_every == 0 or state.batch_in_epoch == len(loop.train_loader):
            _check_finite(loop, first_bad_step)
            mean_loss = acc.reduce(loss, reduction="mean").item()
            acc.log({tracking.TRAIN_LOSS_STEP: mean_loss, tracking.LEARNING_RATE: loop.scheduler.get_last_lr()[0]},
                    step=state.step)
            bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
        reason = None
        if opts.max_steps and state.step >= opts.max_steps:
            reason = "max_steps"
        elif _stop_requested(loop):
            reason = "signal"
        if reason or (opts.checkpoint_every and state.step % opts.checkpoint_every == 0
                      and state.batch_in_epoch < len(loop.train_loader)):
            _check_finite(loop, first_bad_step)  # never checkpoint a poisoned model
            # The epoch's loss sum lives in the state, so a mid-epoch resume still reports the true epoch mean.
            state.epoch_loss_sum += loss_sum.item()
            loss_sum.zero_()
            if reason:
                bar.close()
                return reason
            checkpoints.save(acc, loop.run_dir, state, opts.keep_checkpoints)
        faults.kill_if_armed("step", state.step)
    bar.close()
    _check_finite(loop, first_bad_step)
    state.epoch_loss_sum += loss_sum.item()
    return None


def _check_finite(loop: Loop, first_bad_step: torch.Tensor) -> None:
    bad = int(loop.accelerator.reduce(first_bad_step.clone().float(), reduction="max").item())
    if bad >= 0:
        saved = checkpoints.complete_checkpoints(loop.run_dir)
        last = f"the last good checkpoint {saved[-1][0]} is intact" if saved else "no checkpoint was written"
        # The losses that led here are the diagnosis. TensorBoard's writer thread writes them on its own time,
        # and a multi-process run ends with os._exit (errors.end_process): hand them over now.
        if loop.accelerator.is_main_process:
            _writer(loop.accelerator).flush()
        raise UserError(f"the training loss became NaN or infinite at step {bad}; {last}. Lower --lr, or use "
                        f"bf16 (accelerate_configs/bf16.yaml) instead of fp16")


@torch.no_grad()
def evaluate(loop: Loop, loader: Any) -> dict[str, float]:
    """Loss and accuracy over every sample of ``loader`` exactly once, however many processes share it."""
    acc = loop.accelerator
    model = loop.eval_model
    model.eval()
    loss_sum = torch.zeros((), device=acc.device, dtype=torch.float64)
    correct = torch.zeros((), device=acc.device, dtype=torch.long)
    count = 0
    for images, labels in loader:
        with acc.autocast():  # the EMA copy is not wrapped by prepare(): give it the same precision
            logits = model(to_float(images))
        losses = loss_fn(logits, labels, loop.recipe, reduction="none")
        # gather_for_metrics drops the samples accelerate duplicated to even out the last batch.
        losses, preds, labels = acc.gather_for_metrics((losses, logits.argmax(dim=-1), labels))
        loss_sum += losses.double().sum()
        correct += (preds == labels).sum()
        count += labels.numel()
        faults.kill_if_armed("eval", loop.state.step)
    return {"loss": loss_sum.item() / max(count, 1), "accuracy": 100.0 * correct.item() / max(count, 1),
            "count": count}


def _log_predictions(loop: Loop, epoch_label: str) -> None:
    """Main process only: the prediction grid of the first --grid-images test digits."""
    n = min(loop.options.grid_images, len(loop.splits.test))
    if not n:
        return
    model = loop.accelerator.unwrap_model(loop.eval_model)  # not the DDP wrapper: no collectives on one rank
    images = to_float(loop.splits.test.images[:n]).to(loop.accelerator.device)
    with torch.no_grad(), loop.accelerator.autocast():
        preds = model(images).argmax(dim=-1).cpu()
    png = tracking.prediction_grid(images.cpu(), preds, loop.splits.test.labels[:n], epoch_label)
    tracking.log_png(_writer(loop.accelerator), tracking.PREDICTIONS, png, loop.state.step)


def _end_of_epoch(loop: Loop, train_seconds: float, samples: int, session_start: float,
                  elapsed_before: float) -> dict[str, float]:
    """Evaluate, log and print the epoch's numbers (at the current global step)."""
    acc, state = loop.accelerator, loop.state
    steps_per_epoch = len(loop.train_loader)
    batches = state.batch_in_epoch or steps_per_epoch
    train_loss = acc.reduce(torch.tensor(state.epoch_loss_sum / batches, device=acc.device), "mean").item()
    t0 = time.perf_counter()
    test = evaluate(loop, loop.test_loader)
    eval_seconds = time.perf_counter() - t0
    epoch_done = state.epoch + state.batch_in_epoch / steps_per_epoch if state.batch_in_epoch else state.epoch
    elapsed = elapsed_before + time.perf_counter() - session_start
    values = {
        tracking.TRAIN_LOSS: train_loss, tracking.LEARNING_RATE: loop.scheduler.get_last_lr()[0],
        tracking.SAMPLES_PER_S: samples / max(train_seconds, 1e-9), tracking.TEST_LOSS: test["loss"],
        tracking.TEST_ACCURACY: test["accuracy"], tracking.TEST_SAMPLES: test["count"], tracking.EPOCH: epoch_done,
        tracking.EPOCH_TIME: train_seconds, tracking.EVAL_TIME: eval_seconds, tracking.ELAPSED: elapsed,
        tracking.SKIPPED_STEPS: state.skipped_steps,
        tracking.MEMORY: psutil.Process().memory_info().rss / 2**20,
    }
    val_text = ""
    if loop.val_loader is not None:
        val = evaluate(loop, loop.val_loader)
        values.update({tracking.VAL_LOSS: val["loss"], tracking.VAL_ACCURACY: val["accuracy"]})
        val_text = f" | val acc {val['accuracy']:.2f}%"
    acc.log(values, step=state.step)
    if acc.is_main_process:
        _log_predictions(loop, f"epoch {epoch_done:.4g}, step {state.step}")
        _writer(acc).flush()
    skipped = f" | skipped {state.skipped_steps}" if state.skipped_steps else ""
    acc.print(f"epoch {epoch_done:.4g}/{loop.recipe.epochs} | step {state.step} | train loss {train_loss:.4f} | "
              f"test loss {test['loss']:.4f} | test acc {test['accuracy']:.2f}% ({test['count']} images){val_text} | "
              f"lr {values[tracking.LEARNING_RATE]:.2e} | {values[tracking.SAMPLES_PER_S]:.0f} samples/s | "
              f"epoch {train_seconds:.1f}s + eval {eval_seconds:.1f}s | elapsed {elapsed:.0f}s{skipped}")
    return {"test_loss": test["loss"], "test_accuracy": test["accuracy"], "test_count": test["count"],
            "epoch": epoch_done, "step": state.step}


def _save_weights(loop: Loop) -> None:
    state_dict = loop.accelerator.get_state_dict(loop.eval_model)  # collective under some backends: all processes
    if loop.accelerator.is_main_process:
        path = os.path.join(loop.run_dir, WEIGHTS_FILE)
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in state_dict.items()}, tmp)
    loop.accelerator.wait_for_everyone()


def _prepare_run_dir(acc: Accelerator, args: ParsedArgs) -> tuple[str, Recipe, dict[str, Any] | None,
                                                                   Recipe | None]:
    """Check the run directory against --resume; return (run_dir, recipe, the saved config.json and the saved
    recipe, both None for a fresh run). Writes nothing."""
    opts = args.options  # opts.run is set: train() names fresh runs and refuses --resume without --run
    if opts.resume:
        run_dir = find_run(opts.logdir, opts.run)
        config = read_config(run_dir)
        saved = recipe_from_dict(config["recipe"], os.path.join(run_dir, CONFIG_FILE))
        recipe = resolve_recipe(args, saved)
        differ = diff_model_fields(saved, recipe)
        if bool(saved.ema_decay) != bool(recipe.ema_decay):  # the checkpoints hold a weight average or do not
            differ.append(f"ema_decay: {saved.ema_decay} -> {recipe.ema_decay}")
        if differ:
            raise UserError(f"cannot resume {run_dir}: its checkpoints hold a different model ({'; '.join(differ)}); "
                            f"drop those flags, or start a new run")
        changed = [f"{k}: {v} -> {getattr(recipe, k)}" for k, v in recipe_to_dict(saved).items()
                   if getattr(recipe, k) != v]
        if changed:
            acc.print(f"resuming with a changed recipe: {'; '.join(changed)}")
        return run_dir, recipe, config, saved
    recipe = resolve_recipe(args)
    run_dir = os.path.join(opts.logdir, opts.run)
    if os.path.exists(run_dir):
        if not os.path.isdir(run_dir):
            raise UserError(f"{run_dir} is a file, not a run directory; pick another --run name")
        if is_run(run_dir):
            raise UserError(f"{run_dir} already holds a run; continue it with --resume, or pick another --run name")
        if os.listdir(run_dir):
            raise UserError(f"{run_dir} holds files but no run; pick another --run name (nothing there is touched)")
    return run_dir, recipe, None, None


def _check_resume_position(state: TrainerState, saved: Recipe, recipe: Recipe, opts: RunOptions,
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


def _write_config(acc: Accelerator, run_dir: str, recipe: Recipe, args: ParsedArgs, parameters: int) -> None:
    """Main process: create the run directory and write config.json; every process learns if that failed."""
    error = None
    if acc.is_main_process:
        config = {
            "recipe": recipe_to_dict(recipe), "preset": args.preset,
            "options": dataclasses.asdict(args.options), "parameters": parameters,
            "num_processes": acc.num_processes, "mixed_precision": acc.mixed_precision,
            "hardware": _hardware(acc), "versions": _versions(),
        }
        try:
            os.makedirs(run_dir, exist_ok=True)
            write_atomic(os.path.join(run_dir, CONFIG_FILE), dumps(config))
        except OSError as err:
            error = f"cannot write the run directory {run_dir} ({err.strerror or err}); choose a writable --logdir"
    error = broadcast_object_list([error])[0] if acc.num_processes > 1 else error
    if error:
        raise UserError(error)


def _hardware(acc: Accelerator) -> dict[str, Any]:
    """What the run started on (a model card reports it): the device type and name, and the machine's CPU cores."""
    cuda = acc.device.type == "cuda"
    name = torch.cuda.get_device_name(acc.device) if cuda else platform.processor() or platform.machine()
    return {"device": acc.device.type, "device_name": name, "cpu_cores": os.cpu_count()}


def _versions() -> dict[str, str]:
    from importlib.metadata import version
    return {pkg: version(pkg) for pkg in ("torch", "accelerate", "perceiver-pytorch")}


def _writer(acc: Accelerator) -> Any:
    """The run's TensorBoard SummaryWriter (main process only: the others have no tracker)."""
    return acc.get_tracker(tracking.TRACKER, unwrap=True)


def make_accelerator(logdir: str) -> Accelerator:
    """The one Accelerator of a run. Precision and devices come from the accelerate config, never from here."""
    # One gap to fill: accelerate's torchrun launcher (used by multi_cpu.yaml) does not pass use_cpu on, and
    # without a GPU the processes would then not form a group at all. Several processes and no GPU: gloo on CPU.
    no_gpu_group = in_multi_process_run() and not torch.cuda.is_available()
    # split_batches: the recipe's batch sizes are global, so N processes take the same steps as one.
    return Accelerator(cpu=no_gpu_group, log_with=tracking.TRACKER, project_dir=logdir,
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def train(args: ParsedArgs) -> int:
    """Run (or resume) one training run; returns the process exit code."""
    session_start = time.perf_counter()
    acc = make_accelerator(args.options.logdir)
    # Every process must use the same run name: the timestamped default is decided on rank 0.
    if not args.options.run:
        if args.options.resume:
            raise UserError("--resume needs --run NAME (the run to continue)")
        name = [default_run_name(args.preset)]
        args.options.run = broadcast_object_list(name)[0] if acc.num_processes > 1 else name[0]
    opts = args.options
    run_dir, recipe, saved_config, saved_recipe = _prepare_run_dir(acc, args)
    fresh = saved_config is None
    for name, size in (("batch-size", recipe.batch_size), ("test-batch-size", recipe.test_batch_size)):
        if size % acc.num_processes:
            raise UserError(f"--{name} {size} does not divide among {acc.num_processes} processes (it is the "
                            f"global batch); use a multiple of {acc.num_processes}")
    set_seed(opts.seed)

    with acc.local_main_process_first():  # one download/extraction per machine; the others then read it
        splits = load_datasets(opts.data_dir, recipe.dataset, recipe.val_size)
    model = build_model(recipe)
    if fresh:
        _write_config(acc, run_dir, recipe, args, count_parameters(model))

    train_loader = make_loader(splits.train, recipe.batch_size, True, opts.seed, opts.num_workers)
    test_loader = make_loader(splits.test, recipe.test_batch_size, False, opts.seed, opts.num_workers)
    val_loader = (make_loader(splits.val, recipe.test_batch_size, False, opts.seed, opts.num_workers)
                  if splits.val is not None else None)
    steps_per_epoch = len(train_loader)
    optimizer = build_optimizer(model, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, recipe, steps_per_epoch))
    model, optimizer, train_loader, test_loader, scheduler = acc.prepare(
        model, optimizer, train_loader, test_loader, scheduler)
    if val_loader is not None:
        val_loader = acc.prepare(val_loader)

    ema = build_ema(acc.unwrap_model(model), recipe)
    if ema is not None:
        acc.register_for_checkpointing(ema)  # saved and restored with the checkpoints, before load_state
    state = TrainerState() if fresh else checkpoints.load_latest(acc, run_dir)
    if not fresh:
        _check_resume_position(state, saved_recipe, recipe, opts, steps_per_epoch)
        if state.epoch >= recipe.epochs and os.path.isfile(os.path.join(run_dir, WEIGHTS_FILE)):
            acc.print(f"{run_dir} has already finished its {state.epoch} epochs (step {state.step}); nothing to "
                      f"do. To train longer, resume with --epochs N (N > {state.epoch}).")
            return 0
        if acc.is_main_process and saved_config["recipe"] != recipe_to_dict(recipe):
            # Resumed with changed flags (e.g. more --epochs): config.json stays the recipe this run now trains.
            write_atomic(os.path.join(run_dir, CONFIG_FILE),
                         dumps({**saved_config, "recipe": recipe_to_dict(recipe)}))
        acc.print(f"resumed {run_dir} at epoch {state.epoch}, step {state.step}"
                  + (f" ({state.batch_in_epoch} batches into epoch {state.epoch + 1})" if state.batch_in_epoch else ""))
    # purge_step: TensorBoard drops events at or after it from earlier sessions' files, so the curves continue
    # from the checkpoint without duplicate or stale steps.
    acc.init_trackers(opts.run, init_kwargs={tracking.TRACKER: {"purge_step": state.step + 1} if not fresh else {}})
    if fresh and acc.is_main_process:
        writer = _writer(acc)
        tracking.log_hparams(writer, {**recipe_to_dict(recipe), "seed": opts.seed,
                                      "num_processes": acc.num_processes, "mixed_precision": acc.mixed_precision})
        writer.flush()
    acc.print(f"run {run_dir}: {count_parameters(acc.unwrap_model(model)):,} parameters, "
              f"{acc.num_processes} process(es) on {acc.device}, precision {acc.mixed_precision}, "
              f"{len(splits.train)} train / {len(splits.test)} test images, {steps_per_epoch} steps per epoch")

    elapsed_before = state.elapsed_s
    summary: dict[str, Any] = {}
    with StopRequest() as stop:
        loop = Loop(acc, recipe, opts, run_dir, model, optimizer, scheduler, train_loader, test_loader, val_loader,
                    splits, state, stop, ema)
        while state.epoch < recipe.epochs:
            start_batch, t0 = state.batch_in_epoch, time.perf_counter()
            reason = train_one_epoch(loop, state.epoch)
            train_seconds = time.perf_counter() - t0
            samples = min(len(splits.train), (state.batch_in_epoch or steps_per_epoch) * recipe.batch_size) \
                - start_batch * recipe.batch_size
            if reason == "signal":
                state.elapsed_s = elapsed_before + time.perf_counter() - session_start
                path = checkpoints.save(acc, run_dir, state, opts.keep_checkpoints)
                acc.print(f"interrupted at step {state.step}: saved {path}. Resume with: {opts.resume_command()}")
                acc.end_training()
                return EXIT_INTERRUPTED
            if state.batch_in_epoch == steps_per_epoch:  # also when --max-steps fell on the epoch's last step
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            summary = _end_of_epoch(loop, train_seconds, samples, session_start, elapsed_before)
            state.elapsed_s = elapsed_before + time.perf_counter() - session_start
            if state.batch_in_epoch == 0:
                state.epoch_loss_sum = 0.0
            checkpoints.save(acc, run_dir, state, opts.keep_checkpoints)
            if reason == "max_steps":
                acc.print(f"stopped at --max-steps {opts.max_steps}")
                break
    _save_weights(loop)
    acc.end_training()
    acc.print(f"done: {os.path.join(run_dir, WEIGHTS_FILE)}" + (
        f" | test accuracy {summary['test_accuracy']:.2f}%" if summary else ""))
    return 0
