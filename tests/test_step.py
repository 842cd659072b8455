"""The one training step: it never waits for the device between the steps that log."""
from __future__ import annotations

import dataclasses

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from perceiver_mnist.config import preset
from perceiver_mnist.engine import build_learner, make_accelerator, train_step

HOST_READ = "aten._local_scalar_dense.default"  # what .item(), bool(t), int(t) and float(t) of a tensor dispatch


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] = self.counts.get(str(func), 0) + 1
        return func(*args, **(kwargs or {}))


def test_a_training_step_reads_no_value_on_the_host():
    """On a GPU a host read is a sync that stalls the launch queue. The whole step (augmentation, token dropout,
    forward, loss, backward, clipping, fused AdamW, schedule and the weight average) must have none."""
    recipe = dataclasses.replace(preset("tiny"), ema_decay=0.99)  # tiny: augmentation, token dropout, clipping
    acc = make_accelerator()
    torch.manual_seed(0)
    learner, _ = build_learner(acc, recipe, steps_per_epoch=10)
    assert learner.ema.n_averaged.device == acc.device  # the average's counter lives with the weights
    images = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8, device=acc.device)
    labels = torch.randint(0, 10, (16,), device=acc.device)
    train_step(learner, images, labels, step=1)  # the first step builds the optimizer state
    with OpCounter() as ops:
        losses = [train_step(learner, images, labels, step) for step in range(2, 7)]
    assert ops.counts.get(HOST_READ, 0) == 0, sorted(ops.counts.items(), key=lambda kv: -kv[1])[:5]
    assert ops.counts["aten._foreach_lerp_.List"] == 5  # the weight average was updated at every step
    assert all(loss.device == acc.device for loss in losses)
    assert int(learner.ema.n_averaged) == 6
