"""Short recipe comparisons for model selection, on the validation split (5,000 training images held out by
``--val-size``'s fixed split), never on the test set.

Each variant is the ``default`` preset with some fields overridden, trained for STEPS steps with linear warm-up
(10%) and cosine decay to zero, then scored on the validation images. Prints samples/s and validation accuracy
(also of the weight average, for a variant with ``ema_decay``). A variant may set its own ``"steps"``, e.g. to
compare at equal wall time.

    python bench/sweep.py STEPS '{"name": {"field": value, ...}, ...}' [--data-dir ../shared/data]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perceiver_mnist.config import preset  # noqa: E402
from perceiver_mnist.data import SELECTION_VAL_SIZE, augment, load_datasets, to_float  # noqa: E402
from perceiver_mnist.engine import build_ema, build_optimizer, loss_fn  # noqa: E402
from perceiver_mnist.model import build_model, count_parameters  # noqa: E402


def run_variant(name: str, overrides: dict, steps: int, splits) -> None:
    overrides = dict(overrides)
    steps = overrides.pop("steps", steps)  # a per-variant count, e.g. to compare variants at equal wall time
    recipe = dataclasses.replace(preset("default"), **overrides)
    torch.manual_seed(0)
    model = build_model(recipe)
    ema = build_ema(model, recipe)
    optimizer = build_optimizer(model, recipe)
    warm = max(1, steps // 10)

    def schedule(s: int) -> float:
        return (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (steps - warm)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    images, labels, bs = splits.train.images, splits.train.labels, recipe.batch_size
    per_epoch = len(labels) // bs
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(len(labels), generator=g)
        idx = perm[(step % per_epoch) * bs:(step % per_epoch + 1) * bs]
        x = augment(to_float(images[idx]), recipe)
        loss = loss_fn(model(x), labels[idx], recipe)
        optimizer.zero_grad()
        loss.backward()
        if recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
    seconds = time.time() - t0
    val_x, val_y = to_float(splits.val.images), splits.val.labels

    @torch.no_grad()
    def val_accuracy(net: torch.nn.Module) -> float:
        net.eval()
        preds = torch.cat([net(val_x[i:i + 1000]).argmax(-1) for i in range(0, len(val_y), 1000)])
        return round(100 * preds.eq(val_y).float().mean().item(), 2)

    result = {"variant": name, "overrides": overrides, "parameters": count_parameters(model), "steps": steps,
              "seconds": round(seconds, 1), "samples_per_s": round(bs * steps / seconds),
              "val_accuracy": val_accuracy(model)}
    if ema is not None:
        result["val_accuracy_ema"] = val_accuracy(ema.module)
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", type=int)
    parser.add_argument("variants", type=json.loads)
    parser.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    args = parser.parse_args()
    splits = load_datasets(args.data_dir, "mnist", val_size=SELECTION_VAL_SIZE)
    for name, overrides in args.variants.items():
        run_variant(name, overrides, args.steps, splits)


if __name__ == "__main__":
    main()
