#!/usr/bin/env python
"""Classify your own pictures of digits (any format Pillow reads) with a trained model, on the CPU.

    python predict.py --run NAME [--logdir runs] [--json] [--save-preprocessed DIR] PATH ...
    python predict.py --model DIR PATH ...        # DIR: a run directory or a folder written by export.py
"""
import json
import sys

from perceiver_mnist.errors import EXIT_USER_ERROR, run_cli


def main() -> int:
    from perceiver_mnist.config import OneLineParser, add_logdir_argument
    parser = OneLineParser(prog="predict.py", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="An image file, or a folder of them.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="Name of the run (a directory under --logdir) whose model to use.")
    source.add_argument("--model", metavar="DIR",
                        help="Instead of --run: a run directory, or a folder written by export.py --format hf.")
    add_logdir_argument(parser)
    parser.add_argument("--json", action="store_true", help="One JSON object per line: path, label, class, "
                                                            "probability and top, or path and error.")
    parser.add_argument("--save-preprocessed", metavar="DIR", default=None,
                        help="Also write the 28x28 image the model read of each picture to DIR, as PNG.")
    args = parser.parse_args()

    from perceiver_mnist.datasets import DATASETS
    from perceiver_mnist.model import load_model
    from perceiver_mnist.predict import predict_paths, save_preprocessed
    from perceiver_mnist.runs import find_run
    model = load_model(args.model or find_run(args.logdir, args.run))
    classes = DATASETS[model.recipe.dataset].classes
    results = predict_paths(model, args.paths)
    if args.save_preprocessed:
        save_preprocessed(results, args.save_preprocessed)
    for result in results:
        if args.json:
            print(json.dumps(result.as_dict(classes)))
        else:
            print(result.as_line(classes), file=sys.stderr if result.error else sys.stdout)
    return EXIT_USER_ERROR if any(result.error for result in results) else 0


if __name__ == "__main__":
    run_cli(main, "predict.py")
