"""What to compile, timed side by side in one process: the training step eager, with the model alone compiled (as
accelerate's prepare() compiles it), and whole (engine.build_learner's two regions: augmentation to loss with its
backward, then clipping and the tally).

Each variant is built once and warmed up; then rounds alternate them, ``--steps`` steps each, their order rotated
each round, on one fixed batch: the same data, process and threads, so the machine's drift from minute to minute
falls on all alike. Prints each round, the medians and the median per-round ratio to the model-only compile.

    python bench/compile_scope.py [--preset fast] [--rounds 6] [--steps 25] [--backend inductor]
                                  [--variants eager model-only whole augment-eager]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import torch
from accelerate.utils import TorchDynamoPlugin

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perceiver_mnist import engine  # noqa: E402
from perceiver_mnist.config import preset  # noqa: E402
from perceiver_mnist.data import augment, mix_pairs, to_float  # noqa: E402
from perceiver_mnist.engine import build_learner, compile_options, make_accelerator, train_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--variants", nargs="+", default=["eager", "model-only", "whole"],
                        choices=["eager", "model-only", "whole", "augment-eager"])
    args = parser.parse_args()
    acc = make_accelerator()
    recipe = preset(args.preset)
    options = compile_options(TorchDynamoPlugin(backend=args.backend.upper(), mode="default"))

    def build(kind: str) -> engine.Learner:
        torch.manual_seed(0)
        if kind == "whole":
            return build_learner(acc, recipe, 100, compile=options)
        if kind == "augment-eager":  # the whole step compiled but augmentation and mixing, which run eagerly before it
            learner = build_learner(acc, recipe, 100, compile=options)

            def model_loss(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                return engine.loss_fn(learner.model(x), labels, recipe)
            compiled = torch.compile(model_loss, **options)

            def forward_loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                x, partners, lam = mix_pairs(augment(to_float(images), recipe), labels, recipe)
                assert lam is None, "augment-eager: a recipe without mixup/CutMix"
                torch._dynamo.maybe_mark_dynamic(x, 0)
                return compiled(x, labels)
            learner.forward_loss = forward_loss
            return learner
        learner = build_learner(acc, recipe, 100)
        if kind == "model-only":  # the model compiled alone, the rest of the step eager
            learner = dataclasses.replace(learner, model=torch.compile(learner.model, **options))
            learner.forward_loss = lambda images, labels: engine._forward_loss(learner, images, labels)
        return learner

    kinds = args.variants
    learners = {kind: build(kind) for kind in kinds}
    images = torch.randint(0, 256, (recipe.batch_size, 28, 28), dtype=torch.uint8, device=acc.device)
    labels = torch.randint(0, 10, (recipe.batch_size,), device=acc.device)
    sync = torch.cuda.synchronize if acc.device.type == "cuda" else (lambda: None)
    for kind in kinds:  # compile, and the optimizer's state
        for step in range(1, 7):
            train_step(learners[kind], images, labels, step)
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    for r in range(args.rounds):
        for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            sync()
            t0 = time.perf_counter()
            for step in range(args.steps):
                train_step(learners[kind], images, labels, step + 7)
            sync()
            seconds[kind].append((time.perf_counter() - t0) / args.steps)
        print(json.dumps({"round": r + 1, **{k: round(v[-1], 4) for k, v in seconds.items()}}), flush=True)
    reference = "model-only" if "model-only" in seconds else kinds[0]
    ratios = {k: round(statistics.median(a / b for a, b in zip(v, seconds[reference])), 3) for k, v in seconds.items()}
    print(json.dumps({"preset": args.preset, "backend": args.backend, "device": str(acc.device),
                      "median_s_per_step": {k: round(statistics.median(v), 4) for k, v in seconds.items()},
                      f"over_{reference}_median": ratios}, indent=1))


if __name__ == "__main__":
    main()
