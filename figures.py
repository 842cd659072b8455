#!/usr/bin/env python
"""Export a run's figures as PNG (or SVG/PDF) from its TensorBoard event files.

    python figures.py --run NAME [--logdir runs] [--out DIR] [--format png|svg|pdf] [--dpi N] [--compare RUN ...]
"""
import sys

from perceiver_mnist.errors import run_cli


def main() -> int:
    from perceiver_mnist.config import OneLineParser, add_logdir_argument
    parser = OneLineParser(prog="figures.py", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="Name of the run (a directory under --logdir).")
    add_logdir_argument(parser)
    parser.add_argument("--out", default=None, help="Output directory (default: LOGDIR/RUN/figures).")
    parser.add_argument("--format", default="png", choices=["png", "svg", "pdf"],
                        help="File format of the drawn figures; prediction grids stay PNG (default: png).")
    parser.add_argument("--dpi", type=int, default=150, help="Resolution of raster output (default: 150).")
    parser.add_argument("--compare", nargs="+", default=[], metavar="RUN",
                        help="Other runs to overlay with this one in compare.png (test accuracy and loss).")
    parser.add_argument("--data-dir", default=None,
                        help="Where the test set is, for the model figures (default: the run's own --data-dir).")
    parser.add_argument("--no-model", action="store_true",
                        help="Only the event-file figures: skip confusion matrix, mistakes and attention maps.")
    args = parser.parse_args()
    if not 0 < args.dpi <= 1200:
        parser.error(f"--dpi must be in 1..1200, got {args.dpi}")

    from perceiver_mnist.figures import make_figures
    report = make_figures(args.logdir, args.run, args.out, args.format, args.dpi, args.compare, args.data_dir,
                          model_figures=not args.no_model)
    for notice in report.notices:
        print(f"notice: {notice}", file=sys.stderr)
    print(f"wrote {len(report.written)} files to {report.written[0].rsplit('/', 1)[0]}")
    return 0


if __name__ == "__main__":
    run_cli(main, "figures.py")
