"""The training loop: one ``accelerator.prepare``, one ``train_step``, a visible ``train_one_epoch`` / ``evaluate``.

The same code runs on a CPU, one GPU, several GPUs or machines, in fp32/fp16/bf16: the accelerate config decides.
Batch sizes in the recipe are global (``split_batches=True``): a run trains the same recipe on 1 or N processes.
``train`` reads top to bottom: open the run (``session.open_run``: checks, lock, config.json), build and prepare,
find where to start, then for each epoch train, evaluate, log and checkpoint.
"""
from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import einops
import numpy as np
import psutil
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, DynamoBackend, TorchDynamoPlugin, set_seed
from safetensors.torch import save_file
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from . import checkpoints, faults, tracking
from .checkpoints import TrainerState
from .config import NUM_CLASSES, ParsedArgs, Recipe, recipe_to_dict
from .data import DeviceBatches, Splits, augment, load_datasets, mix_pairs, to_float
from .datasets import DATASETS
from .errors import EXIT_INTERRUPTED, NonFiniteLoss, UserError, cpu_process_group
from .model import build_model, count_parameters
from .runs import WEIGHTS_FILE, atomic_path
from .session import Run, open_run


# ----------------------------------------------------------------------------------------------------------
# What one step is made of: loss, schedule, optimizer, weight average
# ----------------------------------------------------------------------------------------------------------

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


class WeightAverage(AveragedModel):
    """An exponential moving average of a model's weights whose decay ramps up as (1 + n) / (10 + n) towards
    ``decay`` (n: updates so far), updated without ever reading a value on the host.

    Without the ramp, a 0.999 average still weighs the random initial weights by 0.999**n (63% after the first
    epoch of 469 steps), and its accuracy lags the raw weights for several epochs. torch's own update reads its
    counter on the host every step (``if n_averaged == 0``, a sync on a GPU) and lerps parameter by parameter. Here
    the host keeps its own count of the updates (``updates``, set from ``n_averaged`` when a checkpoint is loaded:
    the one read), computes the step's weight as a Python number and updates every tensor in one fused
    ``_foreach_lerp_`` (the first update, a copy, is a lerp with weight 1: exact). Same state dict as
    ``AveragedModel``: checkpoints load either way.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        device = next(model.parameters()).device
        super().__init__(model, device=device, use_buffers=True)
        self.decay = decay
        self.updates = 0  # == n_averaged, on the host

    def weight(self) -> float:
        """How far the next update moves the average towards the model."""
        n = self.updates
        return 1.0 if n == 0 else 1.0 - min((1.0 + n) / (10.0 + n), self.decay)

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [t.detach() for t in (*model.parameters(), *model.buffers())]
        torch._foreach_lerp_(averaged, current, self.weight())
        self.n_averaged += 1
        self.updates += 1

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.updates = int(self.n_averaged)
        return result


def build_ema(model: torch.nn.Module, recipe: Recipe) -> WeightAverage | None:
    """The weight average of ``model`` that --ema-decay asks for (None when it is 0)."""
    if not recipe.ema_decay:
        return None
    return WeightAverage(model, recipe.ema_decay)


# Tally.first_bad when no loss was NaN or infinite: larger than any step count.
NO_BAD_STEP = 2**62


@dataclass
class Tally:
    """What the steps add up on the device between two looks of the loop (reading it waits for the device, so the
    loop reads it only where it stops anyway: logging, checkpoints, an epoch's end)."""

    loss_sum: torch.Tensor   # 0-dim float32: the steps' losses, summed
    steps: torch.Tensor      # 0-dim int64: steps tallied since the last reset
    first_bad: torch.Tensor  # 0-dim int64: the first of them (from 1) whose loss was not finite, else NO_BAD_STEP
    skipped: torch.Tensor    # 0-dim int64: steps the fp16 loss scaler skipped

    @classmethod
    def zeros(cls, device: torch.device) -> "Tally":
        new = lambda dtype: torch.zeros((), dtype=dtype, device=device)  # noqa: E731
        tally = cls(new(torch.float32), new(torch.int64), new(torch.int64), new(torch.int64))
        tally.reset()
        return tally

    def reset(self) -> None:
        for t in (self.loss_sum, self.steps, self.skipped):
            t.zero_()
        self.first_bad.fill_(NO_BAD_STEP)


@dataclass
class Learner:
    """What one training step updates, as prepared by the accelerator, and the step's two parts, compiled when the
    accelerate config asks for it (``build_learner``)."""

    accelerator: Accelerator
    recipe: Recipe
    model: torch.nn.Module            # wrapped by prepare() (DistributedDataParallel on several processes)
    optimizer: torch.optim.Optimizer
    scheduler: Any                    # per-step LambdaLR over ``lr_factor``
    ema: WeightAverage | None         # the weight average that is evaluated and saved, with --ema-decay
    tally: Tally                      # the loss sum, the first non-finite loss, fp16's skipped steps (on the device)
    # The step's two parts, set by build_learner (compiled or not): (uint8 images, labels) -> loss, and (loss) -> None
    forward_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    clip_and_tally: Callable[[torch.Tensor], None] | None = None
    compiled: bool = False            # whether those two are torch.compile regions

    @property
    def module(self) -> torch.nn.Module:
        """The network itself, without the DistributedDataParallel wrapper of prepare()."""
        return self.accelerator.unwrap_model(self.model)

    @property
    def eval_model(self) -> torch.nn.Module:
        """What is evaluated and saved: the weight average, else the network, never compiled: evaluation's other
        batch size and no-grad mode would compile further graphs for a few batches an epoch."""
        return self.ema.module if self.ema is not None else self.module


def compile_options(plugin: TorchDynamoPlugin | None = None) -> dict[str, Any] | None:
    """torch.compile's arguments for the training step, from the accelerate config's ``dynamo_config`` block (which
    ``accelerate launch`` passes on as ``ACCELERATE_DYNAMO_*``, as ``--dynamo_backend`` does), or from ``plugin``
    (the benches' own settings); None: eager. The one place where the config's compilation is read:
    ``make_accelerator`` tells accelerate not to compile the model itself, since the step compiles it together with
    everything around it."""
    plugin = plugin or TorchDynamoPlugin()  # without one, reads the environment as accelerate's own does
    if plugin.backend == DynamoBackend.NO:
        return None
    options = plugin.to_kwargs()
    options["backend"] = plugin.backend.value.lower()
    return options


def build_learner(acc: Accelerator, recipe: Recipe, steps_per_epoch: int,
                  compile: dict[str, Any] | None = None) -> Learner:
    """A fresh model, optimizer, schedule and weight average for ``recipe``, prepared in one
    ``accelerator.prepare``, and its training step, compiled with torch.compile's arguments ``compile`` (see
    ``compile_options``) or eager. Seed the global RNG first: it draws the initial weights."""
    model = build_model(recipe)
    # einops caches a backend per tensor type on first use, and torch.compile guards on that cache's size: fill it
    # for both types the model hands einops (Tensor, Parameter) before the first trace, or step 2 compiles again.
    for tensor in (torch.zeros(1), torch.nn.Parameter(torch.zeros(1))):
        einops.rearrange(tensor, "a -> a")
    optimizer = build_optimizer(model, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, recipe=recipe, steps_per_epoch=steps_per_epoch))
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    learner = Learner(acc, recipe, model, optimizer, scheduler, ema=None, tally=Tally.zeros(acc.device))
    learner.ema = build_ema(learner.module, recipe)
    if learner.ema is not None:
        acc.register_for_checkpointing(learner.ema)  # saved and restored with the checkpoints (before load_state)
    if acc.scaler is not None and not hasattr(acc.scaler, "_get_scale_async"):
        raise UserError(f"fp16 needs torch.amp.GradScaler._get_scale_async, which torch {torch.__version__} does "
                        f"not have; use bf16 (accelerate_configs/bf16.yaml) or fp32")

    # Two functions of their own (not two partials of one): dynamo keeps its graphs per code object.
    def forward_loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return _forward_loss(learner, images, labels)

    def clip_and_tally(loss: torch.Tensor) -> None:
        _clip_and_tally(learner, loss)

    if compile is not None:
        if not hasattr(torch._dynamo, "maybe_mark_dynamic"):  # documented, not in torch.compiler
            raise UserError(f"compiling the step needs torch._dynamo.maybe_mark_dynamic, which torch "
                            f"{torch.__version__} does not have; drop the accelerate config's dynamo_config, or "
                            f"upgrade torch")
        if compile.get("fullgraph") and acc.num_processes > 1:
            raise UserError("fullgraph compilation needs one process: dynamo cannot trace DistributedDataParallel's "
                            "forward whole; drop dynamo_use_fullgraph from the accelerate config")
        # The tally's tensors never move (reset works in place): said so, CUDA graphs may capture the region that
        # updates them (a graph that mutates an ordinary input is not captured).
        for t in vars(learner.tally).values():
            torch._dynamo.mark_static_address(t)
        # A fresh start for dynamo: the regions' code is the same for every learner of the process (tune.py's
        # trials), and each learner's guards would otherwise pile up to dynamo's cache limit, past which it runs
        # eager without a word.
        torch.compiler.reset()
        forward_loss = torch.compile(forward_loss, **compile)
        # fp16's loss scaler unscales the gradients before clipping with a host-side bookkeeping of its own: that
        # part stays eager (bf16 and fp32 need no scaler).
        if acc.scaler is None:
            clip_and_tally = torch.compile(clip_and_tally, **compile)
    learner.forward_loss, learner.clip_and_tally, learner.compiled = forward_loss, clip_and_tally, compile is not None
    return learner


# The step, in the regions that compile (``build_learner``): (1) ``_forward_loss`` from the batch's uint8 images to the
# loss, whose backward autograd runs as (2) one compiled graph too; (3) ``_clip_and_tally`` after the backward.
# Between them, eagerly: the backward's start, the fused optimizer (one kernel), the schedule (host only) and the
# weight average (one fused lerp and its counter). With DistributedDataParallel, the gradients' all-reduce runs in
# the backward, between compiled pieces (dynamo splits the graph at DDP's buckets).

def _forward_loss(learner: Learner, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """uint8 images ``(B, 28, 28)`` -> augment, mix, forward -> the batch's mean loss (0-dim, float32)."""
    recipe = learner.recipe
    x, partner_labels, lam = mix_pairs(augment(to_float(images), recipe), labels, recipe)
    logits = learner.model(x)
    if lam is None:
        return loss_fn(logits, labels, recipe)
    # A mix of two labels: the loss is linear in the target (MSE up to a term constant in the logits: the same
    # gradient, a higher logged loss), so mix the two labels' losses.
    own, partners = (loss_fn(logits, y, recipe, reduction="none") for y in (labels, partner_labels))
    return torch.lerp(partners, own, lam).mean()


def _clip_and_tally(learner: Learner, loss: torch.Tensor) -> None:
    """After the backward: clip the gradients (--grad-clip) and add the step's loss to the tally."""
    if learner.recipe.grad_clip:
        learner.accelerator.clip_grad_norm_(learner.model.parameters(), learner.recipe.grad_clip)
    tally = learner.tally
    tally.steps.add_(1)
    tally.loss_sum.add_(loss)
    # where(), not an `if`: no host read
    tally.first_bad.copy_(torch.where(torch.isfinite(loss), tally.first_bad, torch.minimum(tally.first_bad,
                                                                                           tally.steps)))


# Where accelerate's backward is a plain loss.backward() (no DeepSpeed, no Megatron).
PLAIN_BACKWARD = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)


def train_step(learner: Learner, images: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
    """One optimizer step on a batch of uint8 images ``(B, 28, 28)``: augment, mix, forward, loss, backward, clip,
    update, schedule, weight average; the loss is added to ``learner.tally``. ``step`` numbers this step from 1
    (fault injection only).

    Returns the detached loss, still on the device: reading it waits for the device, so callers read it only
    on the steps that log."""
    acc = learner.accelerator
    if learner.compiled:
        # Under dynamo_mode reduce-overhead (CUDA graphs) a graph's outputs live in memory that its next replay
        # overwrites; marking each step as a new generation says nothing from the last step is still read.
        torch.compiler.cudagraph_mark_step_begin()
        # One graph for any batch size, so an epoch's last, smaller batch compiles nothing new.
        torch._dynamo.maybe_mark_dynamic(images, 0)
        torch._dynamo.maybe_mark_dynamic(labels, 0)
    loss = learner.forward_loss(images, labels)
    if faults.armed("nan", step):
        loss = loss * float("nan")
    if acc.scaler is None and acc.gradient_accumulation_steps == 1 and acc.distributed_type in PLAIN_BACKWARD:
        loss.backward()  # what acc.backward comes to here, less its division by 1: two kernels a step
    else:
        acc.backward(loss)  # fp16's loss scaling
    loss = loss.detach()
    learner.clip_and_tally(loss)
    # fp16: the loss scaler skips a step whose gradients overflowed and halves its scale. A fused optimizer skips
    # inside its kernel, where accelerate's optimizer_step_was_skipped cannot see it; so compare the scale before and
    # after, on the device (get_scale() would wait for it). Every process checks the same all-reduced gradients,
    # so all skip the same steps and the count needs no reduction.
    scaler = acc.scaler
    scale_before = scaler._get_scale_async().clone() if scaler is not None else None
    learner.optimizer.step()
    if scale_before is not None:
        learner.tally.skipped.add_(scaler._get_scale_async() < scale_before)
    learner.scheduler.step()
    learner.optimizer.zero_grad(set_to_none=True)
    if learner.ema is not None:
        learner.ema.update_parameters(learner.module)
    return loss


@torch.no_grad()
def evaluate(learner: Learner, batches: DeviceBatches, step: int = 0) -> dict[str, float]:
    """Loss and accuracy of the learner's eval model over every sample exactly once, however many processes share
    them (each sums its own shards; one reduction at the end). ``step`` is the global step (fault injection only)."""
    acc = learner.accelerator
    model = learner.eval_model
    model.eval()
    sums = torch.zeros(3, device=acc.device, dtype=torch.float64)  # loss, correct, count
    for images, labels in batches:
        if labels.numel():  # a process's share of a last batch smaller than the number of processes may be empty
            with acc.autocast():  # the EMA copy is not wrapped by prepare(): give it the same precision
                logits = model(to_float(images))
            sums[0] += loss_fn(logits, labels, learner.recipe, reduction="none").double().sum()
            sums[1] += (logits.argmax(dim=-1) == labels).sum()
            sums[2] += labels.numel()
        faults.kill_if_armed("eval", step)
    loss_sum, correct, count = acc.reduce(sums, reduction="sum").tolist()
    return {"loss": loss_sum / max(count, 1), "accuracy": 100.0 * correct / max(count, 1), "count": int(count)}


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------

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

    def requested(self, acc: Accelerator, step: int, every: int) -> bool:
        """Whether any process got SIGINT/SIGTERM. With several processes that is a collective (a sync), so it is
        asked only every ``every`` steps, on all of them alike."""
        if acc.num_processes == 1:
            return self.signal is not None
        if step % every:
            return False
        flag = torch.tensor([float(self.signal is not None)], device=acc.device)
        return bool(acc.reduce(flag, reduction="sum").item() > 0)


@dataclass
class Trainer:
    """Everything the loop works on, built once by ``train``."""

    run: Run                 # directory, recipe, options, clock (session.open_run)
    learner: Learner
    train_batches: DeviceBatches
    test_batches: DeviceBatches | None  # None for a selection run, which never reads the test set
    val_batches: DeviceBatches | None  # None without --val-size
    splits: Splits           # the datasets themselves (the prediction grid's digits)
    state: TrainerState      # the position, saved with every checkpoint
    stop: StopRequest
    on_epoch: EpochHook | None = None  # told each evaluated epoch's numbers; True stops the run there (pruning)
    last_in_process: bool = True       # False: more runs follow in this process (tune.py's trials)


# Told an evaluated epoch's numbers (``end_epoch``'s), after its checkpoint; returns True to end the run there as
# --max-steps would (evaluated, final weights saved). tune.py reports to Optuna and prunes through it.
EpochHook = Callable[[dict[str, Any]], bool]


@dataclass
class EpochResult:
    """What ``train_one_epoch`` did: why it stopped early (if it did), and its training time and samples."""

    stopped: str | None      # None: the epoch ended; "max_steps" or "signal"
    seconds: float
    samples: int


def seed_process(acc: Accelerator, seed: int) -> None:
    """Seed this process's global RNGs (Python, NumPy, torch): rank 0 with ``seed``, every other rank with a seed
    drawn from (seed, rank).

    Augmentation and token dropout draw from them: with one seed for all, rank r's i-th image of every batch would
    be distorted exactly like rank 0's, and N processes would see 1/N as many distinct draws. ``seed + rank`` would
    make rank 1 of seed 0 repeat rank 0 of seed 1. The ranks' initial weights differ too, until ``prepare``
    broadcasts rank 0's.
    """
    rank = acc.process_index
    set_seed(seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]))


def train(args: ParsedArgs, on_epoch: EpochHook | None = None, selection: bool = False,
          last_in_process: bool = True) -> int:
    """Run (or resume) one training run; returns the process exit code.

    ``selection``: a model-selection run (tune.py's trials), scored on the validation split only: the test set is
    neither loaded nor evaluated, so no choice made from the run can have seen it. ``on_epoch``: see ``EpochHook``.
    ``last_in_process=False``: another run follows in this process, so the process group outlives this one.
    """
    acc = make_accelerator(args.options.logdir)
    with open_run(acc, args) as run:
        recipe, opts = run.recipe, run.options
        if selection and not recipe.val_size:
            raise UserError("a model-selection run is scored on the validation split: give --val-size N (N > 0)")
        seed_process(acc, opts.seed)
        with acc.local_main_process_first():  # one download/extraction per machine; the others then read it
            splits = load_datasets(opts.data_dir, recipe.dataset, recipe.val_size, test=not selection)
        shard = dict(seed=opts.seed, device=acc.device, num_processes=acc.num_processes,
                     process_index=acc.process_index)
        train_batches = DeviceBatches(splits.train, recipe.batch_size, shuffle=True, **shard)
        test_batches = (DeviceBatches(splits.test, recipe.test_batch_size, shuffle=False, **shard)
                        if splits.test is not None else None)
        val_batches = (DeviceBatches(splits.val, recipe.test_batch_size, shuffle=False, **shard)
                       if splits.val is not None else None)
        steps_per_epoch = len(train_batches)
        learner = build_learner(acc, recipe, steps_per_epoch, compile=compile_options())
        parameters = count_parameters(learner.module)
        state = run.start(acc, parameters, steps_per_epoch)
        if state is None:
            return 0
        scored = f"{len(splits.test)} test" if splits.test is not None else f"{len(splits.val)} validation"
        acc.print(f"run {run.dir}: {parameters:,} parameters, {acc.num_processes} process(es) on {acc.device}, "
                  f"precision {acc.mixed_precision}, {len(splits.train)} train / {scored} images, "
                  f"{steps_per_epoch} steps per epoch")
        summary = train_epochs(Trainer(run=run, learner=learner, train_batches=train_batches,
                                       test_batches=test_batches, val_batches=val_batches, splits=splits,
                                       state=state, stop=StopRequest(), on_epoch=on_epoch,
                                       last_in_process=last_in_process))
        if summary is None:
            return EXIT_INTERRUPTED
    score = next((f" | {split} accuracy {summary[f'{split}_accuracy']:.2f}%" for split in ("test", "val")
                  if f"{split}_accuracy" in summary), "")
    acc.print(f"done: {os.path.join(run.dir, WEIGHTS_FILE)}{score}")
    return 0


def train_epochs(t: Trainer) -> dict[str, Any] | None:
    """For each epoch: train, evaluate, log and checkpoint; then save the final weights. Returns the last epoch's
    numbers, or None when a signal stopped the run (after saving a checkpoint). Ctrl-C and SIGTERM are caught from
    here on only: during start-up (a download, a compile, loading a checkpoint) they stop the process at once."""
    acc, state, opts = t.learner.accelerator, t.state, t.run.options
    start_logging(t)
    summary: dict[str, Any] = {}
    with t.stop:
        while state.epoch < t.run.recipe.epochs:
            epoch = train_one_epoch(t)
            interrupted = epoch.stopped == "signal"
            if not (interrupted and state.batch_in_epoch):  # a signal mid-epoch leaves at once, unevaluated
                summary = end_epoch(t, epoch)
            path = save_checkpoint(t)
            if interrupted:
                acc.print(f"interrupted at step {state.step}: saved {path}. Resume with: {opts.resume_command()}")
                end_run(t)
                return None
            if epoch.stopped == "max_steps":
                acc.print(f"stopped at --max-steps {opts.max_steps}")
                break
            if t.on_epoch is not None and summary and t.on_epoch(summary):
                break
    save_weights(t)
    end_run(t)
    return summary


def end_run(t: Trainer) -> None:
    """accelerate's ``end_training`` (close the trackers, destroy the process group), except that the process group
    is kept when another run follows in this process: its next collective would find none."""
    acc = t.learner.accelerator
    if t.last_in_process:
        acc.end_training()
    else:
        for tracker in acc.trackers:
            tracker.finish()


def train_one_epoch(t: Trainer) -> EpochResult:
    """Train until the epoch ends, --max-steps is reached or a signal asks to stop; log the loss every
    --log-every steps and checkpoint every --checkpoint-every steps. An epoch that ends advances the position."""
    learner, state, opts = t.learner, t.state, t.run.options
    acc, steps_per_epoch = learner.accelerator, len(t.train_batches)
    start_time, start_batch = time.perf_counter(), state.batch_in_epoch
    learner.model.train()
    t.train_batches.set_epoch(state.epoch)
    # Resumed mid-epoch: the order is a function of (seed, epoch), so skipping its first batches is exact.
    batches = t.train_batches.batches(skip=state.batch_in_epoch)
    # The steps' losses are tallied on the device (learner.tally, no sync per step) and read, non-finite ones
    # included, only where the loop logs or stops.
    # disable=None: a bar in a terminal only, not in log files (the per-epoch summary line is printed anyway).
    bar = tqdm(batches, total=steps_per_epoch, initial=state.batch_in_epoch, dynamic_ncols=True, leave=False,
               desc=f"epoch {state.epoch + 1}/{t.run.recipe.epochs}",
               disable=None if acc.is_local_main_process else True)
    stopped = None
    for images, labels in bar:
        loss = train_step(learner, images, labels, state.step + 1)
        state.step += 1
        state.batch_in_epoch += 1
        epoch_done = state.batch_in_epoch == steps_per_epoch
        faults.kill_if_armed("interrupt", state.step)
        if state.step % opts.log_every == 0 or epoch_done:
            _raise_if_not_finite(t)
            mean_loss = acc.reduce(loss, reduction="mean").item()
            acc.log({tracking.TRAIN_LOSS_STEP: mean_loss,
                     tracking.LEARNING_RATE: learner.scheduler.get_last_lr()[0]}, step=state.step)
            bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
        if opts.max_steps and state.step >= opts.max_steps:
            stopped = "max_steps"
        elif t.stop.requested(acc, state.step, opts.log_every):
            stopped = "signal"
        checkpoint_due = opts.checkpoint_every and state.step % opts.checkpoint_every == 0 and not epoch_done
        if stopped or checkpoint_due:
            _raise_if_not_finite(t)  # never checkpoint a poisoned model
            _fold_into_state(t)
        if stopped:
            break
        if checkpoint_due:
            save_checkpoint(t)
        faults.kill_if_armed("step", state.step)
    bar.close()
    if not stopped:
        _raise_if_not_finite(t)
        _fold_into_state(t)
    end_batch = state.batch_in_epoch
    if state.batch_in_epoch == steps_per_epoch:  # also when --max-steps or a signal fell on its last step
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    batch_size, n = t.run.recipe.batch_size, len(t.splits.train)
    return EpochResult(stopped, time.perf_counter() - start_time,
                       min(n, end_batch * batch_size) - start_batch * batch_size)


def _fold_into_state(t: Trainer) -> None:
    """Move the device-side sums (loss, fp16 skipped steps) into the state, which checkpoints save: so a mid-epoch
    resume still reports the true epoch mean. Reads the device: only where the loop stops anyway. The loss sum is
    averaged over processes here (all of them call this at the same steps): only rank 0's state is saved."""
    tally = t.learner.tally
    t.state.epoch_loss_sum += t.learner.accelerator.reduce(tally.loss_sum, reduction="mean").item()
    t.state.skipped_steps += int(tally.skipped.item())
    tally.reset()


def end_epoch(t: Trainer, epoch: EpochResult) -> dict[str, float]:
    """At an epoch's end (or where --max-steps stopped): evaluate, log and print."""
    acc, state = t.learner.accelerator, t.state
    steps_per_epoch = len(t.train_batches)
    batches = state.batch_in_epoch or steps_per_epoch
    train_loss = state.epoch_loss_sum / batches
    t0 = time.perf_counter()
    test = evaluate(t.learner, t.test_batches, state.step) if t.test_batches is not None else None
    val = evaluate(t.learner, t.val_batches, state.step) if t.val_batches is not None else None
    eval_seconds = time.perf_counter() - t0
    epoch_done = state.epoch + state.batch_in_epoch / steps_per_epoch if state.batch_in_epoch else state.epoch
    values = {
        tracking.TRAIN_LOSS: train_loss, tracking.LEARNING_RATE: t.learner.scheduler.get_last_lr()[0],
        tracking.SAMPLES_PER_S: epoch.samples / max(epoch.seconds, 1e-9), tracking.EPOCH: epoch_done,
        tracking.EPOCH_TIME: epoch.seconds, tracking.EVAL_TIME: eval_seconds, tracking.ELAPSED: t.run.elapsed(),
        tracking.SKIPPED_STEPS: state.skipped_steps, tracking.MEMORY: psutil.Process().memory_info().rss / 2**20,
    }
    summary: dict[str, Any] = {"epoch": epoch_done, "step": state.step}
    scores = []
    if test is not None:
        values.update({tracking.TEST_LOSS: test["loss"], tracking.TEST_ACCURACY: test["accuracy"],
                       tracking.TEST_SAMPLES: test["count"]})
        summary.update(test_loss=test["loss"], test_accuracy=test["accuracy"], test_count=test["count"])
        scores.append(f"test loss {test['loss']:.4f} | test acc {test['accuracy']:.2f}% ({test['count']} images)")
    if val is not None:
        values.update({tracking.VAL_LOSS: val["loss"], tracking.VAL_ACCURACY: val["accuracy"]})
        summary.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        scores.append(f"val acc {val['accuracy']:.2f}%" if test is not None else
                      f"val loss {val['loss']:.4f} | val acc {val['accuracy']:.2f}% ({val['count']} images)")
    acc.log(values, step=state.step)
    if acc.is_main_process:
        _log_predictions(t, f"epoch {epoch_done:.4g}, step {state.step}")
        _writer(acc).flush()
    skipped = f" | skipped {state.skipped_steps}" if state.skipped_steps else ""
    acc.print(f"epoch {epoch_done:.4g}/{t.run.recipe.epochs} | step {state.step} | train loss {train_loss:.4f} | "
              f"{' | '.join(scores)} | "
              f"lr {values[tracking.LEARNING_RATE]:.2e} | {values[tracking.SAMPLES_PER_S]:.0f} samples/s | "
              f"epoch {epoch.seconds:.1f}s + eval {eval_seconds:.1f}s | elapsed {values[tracking.ELAPSED]:.0f}s"
              f"{skipped}")
    if state.batch_in_epoch == 0:  # the next epoch's sum starts here (and the checkpoint saves it so)
        state.epoch_loss_sum = 0.0
    return summary


# ----------------------------------------------------------------------------------------------------------
# Saving, logging, the accelerator
# ----------------------------------------------------------------------------------------------------------

def save_checkpoint(t: Trainer) -> str:
    """The full training state at the current position (all processes); returns its path."""
    t.state.elapsed_s = t.run.elapsed()
    return checkpoints.save(t.learner.accelerator, t.run.dir, t.state, t.run.options.keep_checkpoints)


def save_weights(t: Trainer) -> None:
    """The final weights (the weight average, with --ema-decay) as ``model.safetensors``."""
    acc = t.learner.accelerator
    state_dict = acc.get_state_dict(t.learner.eval_model)  # collective under some backends: all processes
    if acc.is_main_process:
        path = os.path.join(t.run.dir, WEIGHTS_FILE)
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in state_dict.items()}, tmp)
    acc.wait_for_everyone()


def _raise_if_not_finite(t: Trainer) -> None:
    acc, tally = t.learner.accelerator, t.learner.tally
    # The tally counts from its last reset: its first bad step as a step of the run, the earliest over processes
    # (accelerate's reduce has no "min": the max of the negated steps).
    first_bad = torch.where(tally.first_bad == NO_BAD_STEP, NO_BAD_STEP, tally.first_bad - tally.steps + t.state.step)
    bad = -int(acc.reduce(-first_bad.double(), reduction="max").item())
    if bad < NO_BAD_STEP:
        saved = checkpoints.complete_checkpoints(t.run.dir)
        last = f"the last good checkpoint {saved[-1][0]} is intact" if saved else "no checkpoint was written"
        # The losses that led here are the diagnosis. TensorBoard's writer thread writes them on its own time,
        # and a multi-process CPU run ends with os._exit (errors.end_process): hand them over now.
        if acc.is_main_process:
            _writer(acc).flush()
        raise NonFiniteLoss(f"the training loss became NaN or infinite at step {bad}; {last}. Lower --lr, or use "
                            f"bf16 (accelerate_configs/bf16.yaml) instead of fp16")


def start_logging(t: Trainer) -> None:
    """Open the TensorBoard tracker at the run's position; a fresh run also declares its hparams."""
    acc, run = t.learner.accelerator, t.run
    # purge_step: TensorBoard drops events at or after it from earlier sessions' files, so the curves continue
    # from the checkpoint without duplicate or stale steps.
    acc.init_trackers(run.options.run,
                      init_kwargs={tracking.TRACKER: {} if run.fresh else {"purge_step": t.state.step + 1}})
    if run.fresh and acc.is_main_process:
        writer = _writer(acc)
        tracking.log_hparams(writer, {**recipe_to_dict(run.recipe), "seed": run.options.seed,
                                      "num_processes": acc.num_processes, "mixed_precision": acc.mixed_precision})
        writer.flush()


def _log_predictions(t: Trainer, epoch_label: str) -> None:
    """Main process only: the prediction grid of the first --grid-images test images (validation images in a
    selection run, which never reads the test set)."""
    shown = t.splits.test if t.splits.test is not None else t.splits.val
    n = min(t.run.options.grid_images, len(shown))
    if not n:
        return
    acc = t.learner.accelerator
    model = t.learner.eval_model  # not the DDP wrapper: no collectives on one rank
    images = to_float(shown.images[:n]).to(acc.device)
    with torch.no_grad(), acc.autocast():
        preds = model(images).argmax(dim=-1).cpu()
    png = tracking.prediction_grid(images.cpu(), preds, shown.labels[:n], epoch_label,
                                   DATASETS[t.run.recipe.dataset].classes)
    tag = tracking.PREDICTIONS if t.splits.test is not None else tracking.VAL_PREDICTIONS
    tracking.log_png(_writer(acc), tag, png, t.state.step)


def _writer(acc: Accelerator) -> Any:
    """The run's TensorBoard SummaryWriter (main process only: the others have no tracker)."""
    return acc.get_tracker(tracking.TRACKER, unwrap=True)


def make_accelerator(logdir: str | None = None) -> Accelerator:
    """The one Accelerator of a run. Precision, devices and compilation come from the accelerate config, never
    from here."""
    # split_batches: the recipe's batch sizes are global (DeviceBatches gives each process its slice), so N processes
    # take the same steps as one, and accelerate steps the schedule once per step, not once per process.
    # dynamo_backend "no": prepare() would compile the model alone; the config's compilation is the whole step's
    # (compile_options, build_learner).
    acc = Accelerator(cpu=cpu_process_group(), log_with=tracking.TRACKER if logdir else None, project_dir=logdir,
                      dataloader_config=DataLoaderConfiguration(split_batches=True), dynamo_backend="no")
    if acc.device.type == "cuda" and acc.mixed_precision == "no":
        # fp32 on a GPU: TF32 tensor cores for matmuls and convolutions (10-bit mantissa inputs, fp32 accumulate),
        # as PyTorch recommends for training; without it an fp32 run leaves most of an Ampere+ GPU idle. bf16/fp16
        # runs are unaffected (autocast picks their kernels).
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
    return acc
