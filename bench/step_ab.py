"""A/B of train.py's step time between two git revisions, eager, on this machine: is the loop as fast as it was?

Each round runs, for each revision in turn, a long and a short `python train.py --max-steps N` of the same preset
on the same data, and takes the difference: start-up, data loading and the final evaluation cancel, what is left is
(long - short) training steps. Rounds alternate the order of the revisions, so a drift of the machine's speed
during the bench falls on both alike. Each revision runs from a git worktree of its own (in a temporary folder).

    python bench/step_ab.py --base 84ac1f0 [--head HEAD] [--rounds 5] [--steps 220 20] [--preset default]
                            [--data-dir ../shared/data]
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


def run_seconds(tree: str, steps: int, preset: str, data_dir: str, logdir: str, name: str) -> float:
    """Wall time of one `python train.py` of ``steps`` steps in the worktree ``tree`` (its own package)."""
    cmd = [sys.executable, os.path.join(tree, "train.py"), "--preset", preset, "--data-dir", data_dir,
           "--logdir", logdir, "--run", name, "--max-steps", str(steps), "--grid-images", "0"]
    # PYTHONPATH: the worktree's package, whichever one `pip install -e` points at.
    env = {**os.environ, "PYTHONPATH": tree, "PYTHONUNBUFFERED": "1"}
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, nargs=2, default=[220, 20], metavar=("LONG", "SHORT"))
    parser.add_argument("--preset", default="default")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"))
    args = parser.parse_args()
    long, short = args.steps
    if not 0 < short < long:
        parser.error(f"--steps LONG SHORT needs 0 < SHORT < LONG, got {long} {short}")
    data_dir = os.path.abspath(args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        trees: dict[str, str] = {}
        try:
            for label, rev in (("base", args.base), ("head", args.head)):
                tree = os.path.join(tmp, label)
                if subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", tree, rev]).returncode:
                    sys.exit(f"step_ab: cannot check out {rev!r} (see git's message above)")
                trees[label] = tree
            per_step: dict[str, list[float]] = {"base": [], "head": []}
            for r in range(args.rounds):
                for label in (("base", "head") if r % 2 == 0 else ("head", "base")):
                    logdir = os.path.join(tmp, "runs", f"{label}{r}")
                    t_long = run_seconds(trees[label], long, args.preset, data_dir, logdir, "long")
                    t_short = run_seconds(trees[label], short, args.preset, data_dir, logdir, "short")
                    per_step[label].append((t_long - t_short) / (long - short))
                print(json.dumps({"round": r + 1, **{k: round(v[-1], 4) for k, v in per_step.items()},
                                  "head_over_base": round(per_step["head"][-1] / per_step["base"][-1], 3)}),
                      flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=False)
    medians = {k: statistics.median(v) for k, v in per_step.items()}
    ratios = [h / b for h, b in zip(per_step["head"], per_step["base"])]
    # The verdict is the median of the rounds' own ratios: each round compares the two within a few minutes.
    print(json.dumps({"base": args.base, "head": args.head, "preset": args.preset, "steps": [long, short],
                      "median_s_per_step": {k: round(v, 4) for k, v in medians.items()},
                      "head_over_base_per_round": [round(r, 3) for r in ratios],
                      "head_over_base_median": round(statistics.median(ratios), 3)}, indent=1))


if __name__ == "__main__":
    main()
