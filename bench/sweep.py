"""Recipe comparisons for model selection, on the validation split (the 5,000 training images that
``--val-size``'s fixed split holds out), never on the test set.

Each variant is the ``default`` preset with some recipe fields overridden, trained with train.py's own learner and
``train_step`` (its schedule, warm-up, augmentation and weight average included) for ``--epochs`` epochs, or the
variant's own ``epochs``, without train.py's per-epoch evaluation, checkpoints and logs; then it is scored on the
validation images. Prints samples/s and validation accuracy of the raw weights (and of the weight average, for a
variant with one). A field this script cannot honour (``val_size``: the split is fixed) is refused, not ignored.

    python bench/sweep.py '{"name": {"field": value, ...}, ...}' --epochs N [--data-dir ../shared/data]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perceiver_mnist.config import Recipe, mistyped_field, preset  # noqa: E402
from perceiver_mnist.data import SELECTION_VAL_SIZE, DeviceBatches, load_datasets  # noqa: E402
from perceiver_mnist.engine import build_learner, evaluate, make_accelerator, train_step  # noqa: E402
from perceiver_mnist.errors import UserError  # noqa: E402
from perceiver_mnist.model import count_parameters  # noqa: E402

REFUSED = {"val_size": f"the validation split is fixed at {SELECTION_VAL_SIZE} images"}


def variant_recipe(name: str, overrides: dict, epochs: int) -> Recipe:
    """The default preset with ``overrides`` (checked like flags), trained for ``epochs`` unless it sets its own."""
    known = {f.name for f in dataclasses.fields(Recipe)}
    for field in overrides:
        if field not in known:
            sys.exit(f"sweep.py: variant {name!r}: {field!r} is not a recipe field")
        if field in REFUSED:
            sys.exit(f"sweep.py: variant {name!r}: {field} cannot be varied here ({REFUSED[field]})")
    problem = mistyped_field(overrides)
    if problem:
        sys.exit(f"sweep.py: variant {name!r}: {problem}")
    try:
        return dataclasses.replace(preset("default"), **{"epochs": epochs, **overrides},
                                   val_size=SELECTION_VAL_SIZE).validate()
    except UserError as err:
        sys.exit(f"sweep.py: variant {name!r}: {err}")


def run_variant(name: str, recipe: Recipe, data_dir: str) -> None:
    splits = load_datasets(data_dir, recipe.dataset, recipe.val_size)
    acc = make_accelerator()
    torch.manual_seed(0)
    train_batches = DeviceBatches(splits.train, recipe.batch_size, shuffle=True, seed=0, device=acc.device)
    val_batches = DeviceBatches(splits.val, recipe.test_batch_size, shuffle=False, seed=0, device=acc.device)
    learner = build_learner(acc, recipe, len(train_batches))
    step, t0 = 0, time.perf_counter()
    for epoch in range(recipe.epochs):
        learner.model.train()
        train_batches.set_epoch(epoch)
        for images, labels in train_batches:
            step += 1
            train_step(learner, images, labels, step)
    seconds = time.perf_counter() - t0
    result = {"variant": name, "recipe": {k: v for k, v in dataclasses.asdict(recipe).items()
                                          if v != getattr(preset("default"), k)},
              "parameters": count_parameters(learner.module), "steps": step,
              "seconds": round(seconds, 1), "samples_per_s": round(len(splits.train) * recipe.epochs / seconds),
              "val_accuracy": round(evaluate(dataclasses.replace(learner, ema=None), val_batches)["accuracy"], 2)}
    if learner.ema is not None:  # the weight average, which is what train.py evaluates and saves
        result["val_accuracy_ema"] = round(evaluate(learner, val_batches)["accuracy"], 2)
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", type=json.loads, help='JSON: {"name": {"recipe_field": value, ...}, ...}')
    parser.add_argument("--epochs", type=int, required=True, help="Epochs of each variant that sets none.")
    parser.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    args = parser.parse_args()
    recipes = {name: variant_recipe(name, overrides, args.epochs) for name, overrides in args.variants.items()}
    for name, recipe in recipes.items():
        run_variant(name, recipe, args.data_dir)


if __name__ == "__main__":
    main()
