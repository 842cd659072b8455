"""Averaging over the mirror at test time: each saved model's accuracy on an image alone, on its mirror, and on the
mean of the two logits, with McNemar's exact test of the average against the image alone (the same model on the
same images, so only the images whose verdict changes count). With --against BASELINE, also each model alone
against the baseline model alone, by the same test on the same images: whether a change of recipe is ahead by more
than the split's noise.

For datasets whose classes survive a mirror (Fashion-MNIST); a model of another dataset is refused. Selection
uses --split val: the fixed validation split the runs were trained without (they must have been trained with
--val-size 5000, which the bench checks).

    python bench/mirror_average.py --data-dir ../shared/data --split val RUN_DIR [RUN_DIR ...] [--against RUN_DIR]
"""
from __future__ import annotations

import argparse
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from perceiver_mnist.data import SELECTION_VAL_SIZE, InMemoryDataset, load_datasets, to_float  # noqa: E402
from perceiver_mnist.datasets import DATASETS  # noqa: E402
from perceiver_mnist.errors import UserError, run_cli  # noqa: E402
from perceiver_mnist.model import load_model  # noqa: E402


def mcnemar_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: how likely a split at least this uneven is if either way were a coin flip."""
    n, k = gained + lost, min(gained, lost)
    if not n:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


@torch.no_grad()
def right_answers(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image (bool): right on the image alone, on its mirror alone, and on the mean of the two logits."""
    plain, mirror = [], []
    for i in range(0, len(labels), batch):
        x = to_float(images[i:i + batch])
        plain.append(model(x))
        mirror.append(model(x.flip(-1)))
    a, b = torch.cat(plain), torch.cat(mirror)
    return a.argmax(1) == labels, b.argmax(1) == labels, (a + b).argmax(1) == labels


def changed(new: torch.Tensor, old: torch.Tensor) -> tuple[int, int]:
    """Images ``new`` gets right and ``old`` did not (gained), and the reverse (lost): what McNemar's test counts."""
    return int((new & ~old).sum()), int((old & ~new).sum())


def mirror_counts(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  batch: int = 1000) -> dict[str, int]:
    """Right answers of the image alone, its mirror alone and the mean of their logits; images the mean gets right
    and the image alone did not (gained), and the reverse (lost)."""
    return tally(*right_answers(model, images, labels, batch))


def tally(right_a: torch.Tensor, right_b: torch.Tensor, right_mean: torch.Tensor) -> dict[str, int]:
    """``mirror_counts`` from ``right_answers``' three verdicts per image."""
    gained, lost = changed(right_mean, right_a)
    return {"images": len(right_a), "plain": int(right_a.sum()), "mirror": int(right_b.sum()),
            "mean": int(right_mean.sum()), "gained": gained, "lost": lost}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="Run directories (or exported folders) holding a trained model.")
    parser.add_argument("--data-dir", default="data", help="Directory holding FashionMNIST/raw.")
    parser.add_argument("--split", choices=["val", "test"], default="val",
                        help=f"The fixed {SELECTION_VAL_SIZE}-image validation split (for choosing), or the test set.")
    parser.add_argument("--against", metavar="RUN_DIR",
                        help="A baseline model: also compare each model alone with it alone, on the same images.")
    args = parser.parse_args()
    total = {"gained": 0, "lost": 0}
    splits = {}  # by dataset: its files are read once, however many of its models are scored

    def split_of(path: str) -> tuple[torch.nn.Module, InMemoryDataset]:
        """The model saved at ``path`` and the split it is scored on, refused if it cannot be scored fairly there."""
        model = load_model(path)
        recipe = model.recipe
        if not DATASETS[recipe.dataset].mirror_invariant:
            raise UserError(f"{path} is a model of {DATASETS[recipe.dataset].title}, whose classes do not survive a "
                            f"mirror; this bench is for datasets whose classes do")
        if args.split == "val" and recipe.val_size < SELECTION_VAL_SIZE:
            # A larger --val-size holds out the same images and more (the split's last val_size of one permutation).
            raise UserError(f"{path} was trained with --val-size {recipe.val_size}, which does not hold out the "
                            f"{SELECTION_VAL_SIZE}-image validation split; train with --val-size "
                            f"{SELECTION_VAL_SIZE}, or use --split test")
        if recipe.dataset not in splits:
            splits[recipe.dataset] = load_datasets(args.data_dir, recipe.dataset,
                                                   SELECTION_VAL_SIZE if args.split == "val" else 0)
        return model, splits[recipe.dataset].val if args.split == "val" else splits[recipe.dataset].test

    baseline = None  # the baseline's dataset, and which images it gets right alone
    if args.against:
        base_model, base_data = split_of(args.against)
        baseline = (base_model.recipe.dataset, right_answers(base_model, base_data.images, base_data.labels)[0])
    print("| run | images | alone | mirror | mean of both | gained / lost | p |"
          + (f" alone against {args.against} (gained / lost, p) |" if baseline else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if baseline else ""))
    for path in args.runs:
        model, data = split_of(path)
        if baseline and baseline[0] != model.recipe.dataset:
            raise UserError(f"{path} and {args.against} are models of different datasets; compare models of one")
        right = right_answers(model, data.images, data.labels)
        c = tally(*right)
        total["gained"] += c["gained"]
        total["lost"] += c["lost"]
        pct = {k: 100.0 * c[k] / c["images"] for k in ("plain", "mirror", "mean")}
        row = (f"| {path} | {c['images']} | {pct['plain']:.2f} | {pct['mirror']:.2f} | {pct['mean']:.2f} | "
               f"{c['gained']} / {c['lost']} | {mcnemar_p(c['gained'], c['lost']):.3g} |")
        if baseline:
            gained, lost = changed(right[0], baseline[1])
            row += f" {gained} / {lost}, p {mcnemar_p(gained, lost):.3g} |"
        print(row, flush=True)
    if len(args.runs) > 1:
        # No p-value: the models answer the same images, so their changes are not independent pairs.
        print(f"| all, added up | | | | | {total['gained']} / {total['lost']} | |")
    return 0


if __name__ == "__main__":
    run_cli(main, "mirror_average.py")
