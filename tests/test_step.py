"""The one training step: it never waits for the device between the steps that log."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from perceiver_mnist import faults
from perceiver_mnist.config import preset
from perceiver_mnist.data import DeviceBatches, InMemoryDataset, augment, mix_pairs, to_float
from perceiver_mnist.engine import NO_BAD_STEP, build_learner, make_accelerator, train_step

from .conftest import probe_steps
from .test_compile import compiled

HOST_READ = "aten._local_scalar_dense.default"  # what .item(), bool(t), int(t) and float(t) of a tensor dispatch


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] = self.counts.get(str(func), 0) + 1
        return func(*args, **(kwargs or {}))


def test_a_training_step_reads_no_value_on_the_host():
    """On a GPU a host read is a sync that stalls the launch queue. The whole step (the batch's gather from the
    device-resident data, augmentation, mixing, token dropout, forward, loss, backward, clipping, fused AdamW,
    schedule and the weight average) must have none."""
    # tiny: augmentation, token dropout, clipping; and both kinds of mixing
    recipe = dataclasses.replace(preset("tiny"), ema_decay=0.99, mixup=0.4, cutmix=1.0, mix_prob=0.5)
    acc = make_accelerator()
    torch.manual_seed(0)
    data = InMemoryDataset(torch.randint(0, 256, (100, 28, 28), dtype=torch.uint8), torch.arange(100) % 10)
    batches = DeviceBatches(data, 16, shuffle=True, seed=0, device=acc.device)
    learner = build_learner(acc, recipe, steps_per_epoch=len(batches))
    assert learner.ema.n_averaged.device == batches.images.device == acc.device  # the counter, the data: on it
    stream = batches.batches()  # the epoch's order is drawn (and copied to the device) here, once per epoch
    first = train_step(learner, *next(stream), step=1)  # the first step builds the optimizer state
    with OpCounter() as ops:
        losses = [train_step(learner, images, labels, step) for step, (images, labels) in enumerate(stream, 2)]
    assert len(losses) == 6  # 100 images in batches of 16: the 6 after the first, the last one smaller
    assert ops.counts.get(HOST_READ, 0) == 0, sorted(ops.counts.items(), key=lambda kv: -kv[1])[:5]
    # the weight average: one fused lerp a step, its weight a number from the host's count
    assert ops.counts["aten._foreach_lerp_.Scalar"] == 6 and "aten._foreach_lerp_.List" not in ops.counts
    assert all(loss.device == acc.device for loss in losses)
    assert int(learner.ema.n_averaged) == learner.ema.updates == 7
    # the tally holds all 7 steps' losses, and no bad step
    assert int(learner.tally.steps) == 7 and int(learner.tally.first_bad) == NO_BAD_STEP
    assert float(learner.tally.loss_sum) == pytest.approx(float(first + sum(losses)))


def test_a_step_the_fp16_loss_scaler_skips_is_counted_on_the_device(monkeypatch):
    """fp16 on a GPU: the loss scaler skips a step whose gradients overflowed. The fused optimizer skips inside its
    kernel, which accelerate's optimizer_step_was_skipped does not see; the step counts it on the device instead.
    Here a CPU GradScaler stands in for the GPU's, and a NaN loss at step 2 makes the overflow."""
    monkeypatch.setattr(faults, "_point", "nan")  # what PERCEIVER_MNIST_FAULT=nan:2 arms in a launched run
    monkeypatch.setattr(faults, "_step", "2")
    acc = make_accelerator()
    acc.scaler = torch.amp.GradScaler("cpu")  # before prepare(), which hands it to the optimizer wrapper
    torch.manual_seed(0)
    learner = build_learner(acc, preset("tiny"), steps_per_epoch=10)
    images, labels = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8), torch.arange(8) % 10
    train_step(learner, images, labels, step=1)
    weights = [p.clone() for p in learner.module.parameters()]
    with OpCounter() as ops:
        train_step(learner, images, labels, step=2)
    assert ops.counts.get(HOST_READ, 0) == 0
    assert all(torch.equal(a, b) for a, b in zip(weights, learner.module.parameters()))  # the step was skipped
    assert int(learner.tally.skipped) == 1
    train_step(learner, images, labels, step=3)
    assert int(learner.tally.skipped) == 1  # a good step is not counted


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_a_mixed_step_trains_on_the_mixed_labels(loss):
    """With mixup and cutmix the step's loss is the loss against each image's mixed label, lam of its own label and
    1 - lam of its partner's (with the shares mix_pairs drew): for cross-entropy exactly, label smoothing included;
    for MSE up to lam (1 - lam) |one-hot difference|^2 / classes, a term the logits do not change."""
    recipe = dataclasses.replace(preset("tiny"), token_dropout=0.0, loss=loss, label_smoothing=0.1, mixup=0.4,
                                 cutmix=1.0)
    acc = make_accelerator()
    torch.manual_seed(0)
    learner = build_learner(acc, recipe, steps_per_epoch=10)
    images, labels = torch.randint(0, 256, (32, 28, 28), dtype=torch.uint8), torch.arange(32) % 10
    before = copy.deepcopy(learner.module)
    torch.manual_seed(1)
    step_loss = train_step(learner, images, labels, step=1)
    torch.manual_seed(1)  # the same draws again, outside the step
    x, partner_labels, lam = mix_pairs(augment(to_float(images), recipe), labels, recipe)
    own, partner = F.one_hot(labels, 10).float(), F.one_hot(partner_labels, 10).float()
    target = lam[:, None] * own + (1 - lam[:, None]) * partner
    with torch.no_grad():
        logits = before(x)
    if loss == "ce":
        expected = F.cross_entropy(logits, target, label_smoothing=0.1)
    else:
        constant = lam * (1 - lam) * (own - partner).square().sum(1) / 10
        expected = F.mse_loss(logits, target) + constant.mean()
    assert float(step_loss) == pytest.approx(float(expected), rel=1e-5)
    assert ((lam > 0.01) & (lam < 0.99)).any()  # it did mix


# The `default` preset's first three losses on a fixed batch: they pin MNIST's training step, so that a distortion
# added for another dataset that draws random numbers even when off, or any other change to the step, moves them by
# far more than the 1e-6 allowed. The tolerance only spares a CPU whose kernels sum in another order.
DEFAULT_FIRST_LOSSES = [2.305628538131714, 2.4290452003479004, 2.638913869857788]


def test_the_default_recipes_first_steps_give_its_pinned_losses():
    acc = make_accelerator()
    torch.manual_seed(0)
    data = InMemoryDataset(torch.randint(0, 256, (48, 28, 28), dtype=torch.uint8), torch.arange(48) % 10)
    batches = DeviceBatches(data, 16, shuffle=True, seed=0, device=acc.device)
    learner = build_learner(acc, preset("default"), steps_per_epoch=len(batches))
    losses = [float(train_step(learner, images, labels, step)) for step, (images, labels) in enumerate(batches, 1)]
    assert losses == pytest.approx(DEFAULT_FIRST_LOSSES, rel=1e-6, abs=0)


def test_the_compiled_step_leaves_only_the_optimizer_the_average_and_the_gather_outside_its_regions():
    """With the step compiled (here dynamo's aot_eager backend, which traces and splits the step exactly as inductor
    does without generating code), what still dispatches an operation of its own each step is: the batch's gather
    (2), the backward's seed (1), fused AdamW and its step counters (one each per parameter group: 4), the weight
    average's fused lerp and its counter (2). Everything else (augmentation, forward, loss, backward, clipping,
    the loss tally) runs inside compiled regions; no host read."""
    report = probe_steps("tiny", 3, compiled("aot_eager"), "ema_decay=0.9")  # tiny: augmentation, clipping
    assert report["compiled"] and report["host_reads_per_step"] == 0
    assert report["ops_per_step"] == 9, report["ops"]
    assert set(report["ops"]) == {"aten::index", "aten::ones_like", "aten::_fused_adamw_", "aten::_foreach_add_",
                                  "aten::_foreach_lerp_", "aten::add_"}, report["ops"]
