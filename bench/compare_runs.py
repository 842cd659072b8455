"""Two trained runs on the same images: each one's accuracy, and McNemar's exact test of the images only one of them
gets right (both answer the same images, so only those count): is the difference more than the split's noise?

Selection uses --split val, the fixed validation split the runs were trained without (train both with
--val-size 5000); --split test only to report.

    python bench/compare_runs.py RUN_A RUN_B [--split val] [--data-dir ../shared/data]
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from mirror_average import changed, mcnemar_p  # noqa: E402
from perceiver_mnist.data import SELECTION_VAL_SIZE, load_datasets, to_float  # noqa: E402
from perceiver_mnist.errors import UserError, run_cli  # noqa: E402
from perceiver_mnist.model import load_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs=2, metavar="RUN", help="Two run directories (or exported folders).")
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"))
    args = parser.parse_args()
    models = [load_model(run).eval() for run in args.runs]
    if args.split == "val":
        for run, model in zip(args.runs, models):
            if model.recipe.val_size != SELECTION_VAL_SIZE:
                raise UserError(f"{run} was trained with --val-size {model.recipe.val_size}, so the validation images "
                                f"may be ones it trained on; compare runs trained with --val-size {SELECTION_VAL_SIZE}")
    datasets = {m.recipe.dataset for m in models}
    if len(datasets) > 1:
        raise UserError(f"{args.runs[0]} and {args.runs[1]} are models of different datasets; compare models of one")
    splits = load_datasets(args.data_dir, datasets.pop(), SELECTION_VAL_SIZE if args.split == "val" else 0,
                           test=args.split == "test")
    data = splits.val if args.split == "val" else splits.test
    right = []
    for run, model in zip(args.runs, models):
        with torch.no_grad():
            preds = torch.cat([model(to_float(data.images[i:i + 1000])).argmax(1) for i in range(0, len(data), 1000)])
        right.append(preds == data.labels)
        print(f"{run}: {100 * right[-1].float().mean():.2f}% of {len(data)} {args.split} images")
    only_b, only_a = changed(right[1], right[0])
    print(f"right only in {args.runs[1]}: {only_b}; only in {args.runs[0]}: {only_a}; "
          f"McNemar's exact p = {mcnemar_p(only_b, only_a):.3g}")
    return 0


if __name__ == "__main__":
    run_cli(main, "compare_runs.py")
