"""A/B of train.py's step time between two git revisions, eager or compiled, on this machine: is the loop as fast
as it was?

Each round runs, for each variant (a revision, eager or compiled by a torch.compile backend as an accelerate config's
dynamo block asks) in turn, a long and a short `python train.py --max-steps N` of the same preset on the same data,
and takes the difference: start-up, data loading, compilation (inductor's cache is warmed by one untimed run per
variant first) and the final evaluation cancel, what is left is (long - short) training steps. Each round rotates
the order of the variants, so a drift of the machine's speed during the bench falls on all alike. Each revision runs
from a git worktree of its own (in a temporary folder).

    python bench/step_ab.py --base 84ac1f0 [--head HEAD] [--compile eager [inductor]] [--rounds 5]
                            [--steps 220 20] [--preset default] [--data-dir ../shared/data]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_seconds(tree: str, steps: int, preset: str, data_dir: str, logdir: str, name: str,
                backend: str = "eager") -> float:
    """Wall time of one `python train.py` of ``steps`` steps in the worktree ``tree`` (its own package), eager or
    compiled by ``backend`` (as `accelerate launch --dynamo_backend BACKEND` asks)."""
    cmd = [sys.executable, os.path.join(tree, "train.py"), "--preset", preset, "--data-dir", data_dir,
           "--logdir", logdir, "--run", name, "--max-steps", str(steps), "--grid-images", "0"]
    # PYTHONPATH: the worktree's package, whichever one `pip install -e` points at.
    env = {**os.environ, "PYTHONPATH": tree, "PYTHONUNBUFFERED": "1",
           "ACCELERATE_DYNAMO_BACKEND": "NO" if backend == "eager" else backend.upper()}
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if result.returncode:
        sys.exit(f"step_ab: {' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="The revision to compare against (e.g. 84ac1f0).")
    parser.add_argument("--head", default="HEAD", help="The revision under test (default: HEAD).")
    parser.add_argument("--compile", nargs="+", default=["eager"],
                        help="eager and/or torch.compile backends (inductor): each revision runs in each.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, nargs=2, default=[220, 20], metavar=("LONG", "SHORT"))
    parser.add_argument("--preset", default="default")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"))
    args = parser.parse_args()
    long, short = args.steps
    if not 0 < short < long:
        parser.error(f"--steps LONG SHORT needs 0 < SHORT < LONG, got {long} {short}")
    data_dir = os.path.abspath(args.data_dir)
    variants = [(rev, backend) for rev in ("base", "head") for backend in args.compile]
    label = lambda v: f"{v[0]}-{v[1]}"  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        trees: dict[str, str] = {}
        try:
            for rev_label, rev in (("base", args.base), ("head", args.head)):
                tree = os.path.join(tmp, rev_label)
                if subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", tree, rev]).returncode:
                    sys.exit(f"step_ab: cannot check out {rev!r} (see git's message above)")
                trees[rev_label] = tree
            for v in variants:  # untimed: fills inductor's cache, so each timed run compiles alike
                if v[1] != "eager":
                    run_seconds(trees[v[0]], short, args.preset, data_dir, os.path.join(tmp, "warm"), label(v), v[1])
            per_step: dict[str, list[float]] = {label(v): [] for v in variants}
            for r in range(args.rounds):
                for v in variants[r % len(variants):] + variants[:r % len(variants)]:
                    logdir = os.path.join(tmp, "runs", f"{label(v)}{r}")
                    t_long = run_seconds(trees[v[0]], long, args.preset, data_dir, logdir, "long", v[1])
                    t_short = run_seconds(trees[v[0]], short, args.preset, data_dir, logdir, "short", v[1])
                    per_step[label(v)].append((t_long - t_short) / (long - short))
                print(json.dumps({"round": r + 1, **{k: round(x[-1], 4) for k, x in per_step.items()}}), flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=False)
    medians = {k: statistics.median(x) for k, x in per_step.items()}
    # Each ratio is the median of the rounds' own ratios: each round compares the variants within a few minutes.
    reference = label(variants[0])
    ratios = {k: round(statistics.median(a / b for a, b in zip(x, per_step[reference])), 3)
              for k, x in per_step.items()}
    print(json.dumps({"base": args.base, "head": args.head, "preset": args.preset, "steps": [long, short],
                      "median_s_per_step": {k: round(v, 4) for k, v in medians.items()},
                      f"over_{reference}_median": ratios}, indent=1))


if __name__ == "__main__":
    main()
