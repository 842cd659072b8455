"""How well saved models read digits that are not drawn like MNIST's: test digits blurred, shrunk to 14x14 or 8x8 and
scaled back up (low-resolution scans), with thinner or thicker strokes. Each degraded digit goes through
predict.py's preprocessing (``predict.preprocess``: ink found, cropped, scaled, centred) as a user's picture would,
and the "clean" row sends the undegraded digits the same way.

    python bench/robustness.py --data-dir ../shared/data --logdir runs RUN [RUN ...] [--images 10000] [--split val]

Prints one markdown table: a row per condition, a column per run (test accuracy in percent; a digit that
preprocessing refuses as blank counts as wrong, as predict.py gives it no class).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from perceiver_mnist.data import SELECTION_VAL_SIZE, load_datasets, load_test_set, to_float  # noqa: E402
from perceiver_mnist.model import load_model  # noqa: E402
from perceiver_mnist.pictures import DEGRADATIONS  # noqa: E402
from perceiver_mnist.predict import NotAPicture, preprocess  # noqa: E402
from perceiver_mnist.runs import find_run  # noqa: E402

CONDITIONS = {"clean": Image.fromarray, **DEGRADATIONS}


def degraded_inputs(images: np.ndarray, dataset: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each condition's 28x28 uint8 inputs as predict.py makes them, one per test digit, and which digits it
    refused ("holds no ink": too faint after the degradation). predict.py answers those with no class, so they
    count as wrong."""
    inputs = {}
    for name, redraw in CONDITIONS.items():
        pixels, refused = [], []
        for digit in images:
            try:
                pixels.append(preprocess(redraw(digit), dataset))
                refused.append(False)
            except NotAPicture:
                pixels.append(np.zeros(digit.shape, dtype=np.uint8))
                refused.append(True)
        inputs[name] = torch.from_numpy(np.stack(pixels)), torch.tensor(refused)
    return inputs


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, refused: torch.Tensor,
             batch: int = 1000) -> float:
    predicted = torch.cat([model(to_float(images[i:i + batch])).argmax(-1) for i in range(0, len(images), batch)])
    return 100.0 * ((predicted == labels) & ~refused).sum().item() / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="Runs to compare (directories under --logdir).")
    parser.add_argument("--logdir", default=os.path.join(ROOT, "runs"))
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--images", type=int, default=10000, help="The first N digits (default: all).")
    parser.add_argument("--split", choices=["test", "val"], default="test",
                        help="The test set, or the validation split that --val-size 5000 holds out (to choose a "
                             "recipe by: runs trained with it never saw those images).")
    args = parser.parse_args()
    models = {name: load_model(find_run(args.logdir, name)) for name in args.runs}
    datasets = {m.recipe.dataset for m in models.values()}
    if len(datasets) != 1:
        sys.exit(f"robustness.py: the runs were trained on different datasets ({sorted(datasets)})")
    dataset = datasets.pop()
    split = (load_test_set(args.data_dir, dataset) if args.split == "test" else
             load_datasets(args.data_dir, dataset, SELECTION_VAL_SIZE, test=False).val)
    images, labels = split.images[:args.images], split.labels[:args.images]
    start = time.perf_counter()
    inputs = degraded_inputs(images.numpy(), dataset)
    print(f"{len(images)} {args.split} digits x {len(CONDITIONS)} conditions prepared in "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    print("| condition | refused as blank | " + " | ".join(args.runs) + " |\n|---|---|" + "---|" * len(args.runs))
    for name, (batch, refused) in inputs.items():
        print(f"| {name} | {int(refused.sum())} | "
              + " | ".join(f"{accuracy(m.eval(), batch, labels, refused):.2f}" for m in models.values()) + " |")


if __name__ == "__main__":
    main()
