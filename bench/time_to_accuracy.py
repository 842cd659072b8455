"""Train a preset on real MNIST and report wall clock from launch to the first epoch reaching 97/98/99% (and
99.4/99.5%) test accuracy, the final accuracy, eval time, memory (peak RSS, RSS per epoch) and samples/s.

Times are measured from this script's launch of `accelerate launch ... train.py`, so they include Python start-up,
data loading and every evaluation: what a user waits for. The accuracy is on all 10,000 test images.

With --time-box S the run gets S seconds from launch, then Ctrl-C (it checkpoints and exits), and the report
covers the epochs it finished. With --stop-at A it gets Ctrl-C as soon as an epoch's test accuracy reaches A%: the
launch-to-A% of a long schedule without the rest of it.

    python bench/time_to_accuracy.py --data-dir ../shared/data --run bench-default [--config cpu.yaml]
                                     [--time-box S] [--stop-at A] [-- extra train.py flags]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

from launching import ROOT, STOP_GRACE_S, start, stop, train_command

sys.path.insert(0, ROOT)

from perceiver_mnist import tracking  # noqa: E402
from perceiver_mnist.errors import UserError  # noqa: E402
from perceiver_mnist.events import read_events  # noqa: E402
from perceiver_mnist.runs import CONFIG_FILE  # noqa: E402

THRESHOLDS = [97.0, 98.0, 99.0, 99.4, 99.5]
POLL_S = 5.0  # how often --stop-at re-reads the run's event file (the whole file: keep it rare)


def reached(run_dir: str, accuracy: float) -> bool:
    """Whether an epoch of the run has logged a test accuracy of at least ``accuracy`` (0: never)."""
    if not accuracy or not os.path.isdir(run_dir):
        return False
    try:
        logged = read_events(run_dir).scalars.get(tracking.TEST_ACCURACY)
    except UserError:  # no event file yet
        return False
    return bool(logged) and max(logged.values) >= accuracy


def report(run_dir: str, launched_at: float) -> dict:
    ev = read_events(run_dir)
    if tracking.TEST_ACCURACY not in ev.scalars:  # stopped (e.g. by --time-box) before its first evaluation
        return {"epochs": 0, "time_to": None}
    acc = ev.scalars[tracking.TEST_ACCURACY]
    epochs = dict(zip(ev.scalars[tracking.EPOCH].steps, ev.scalars[tracking.EPOCH].values))
    crossing = {}
    for threshold in THRESHOLDS:
        hit = next((i for i, a in enumerate(acc.values) if a >= threshold), None)
        crossing[f"{threshold:g}%"] = None if hit is None else {
            "minutes_from_launch": round((acc.wall_times[hit] - launched_at) / 60, 2),
            "epoch": epochs.get(acc.steps[hit])}
    return {
        "final_accuracy": acc.values[-1], "best_accuracy": max(acc.values),
        "epochs": len(acc.values), "time_to": crossing,
        "train_samples_per_s_median": sorted(ev.scalars[tracking.SAMPLES_PER_S].values)[len(acc.values) // 2],
        "epoch_train_s_median": sorted(ev.scalars[tracking.EPOCH_TIME].values)[len(acc.values) // 2],
        "eval_s_median": sorted(ev.scalars[tracking.EVAL_TIME].values)[len(acc.values) // 2],
        "rss_mb_per_epoch": [round(v) for v in ev.scalars[tracking.MEMORY].values],
        "test_images_counted": ev.scalars[tracking.TEST_SAMPLES].values[-1],
        # every evaluation: its epoch, test accuracy and seconds from launch (bench/gpu_check.sh reads these)
        "per_epoch": {"epoch": [epochs.get(s) for s in acc.steps], "accuracy": [round(a, 4) for a in acc.values],
                      "s_from_launch": [round(t - launched_at, 2) for t in acc.wall_times]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--logdir", default=os.path.join(ROOT, "runs"))
    parser.add_argument("--run", default="bench-default")
    parser.add_argument("--config", default="cpu.yaml", help="accelerate config in accelerate_configs/")
    parser.add_argument("--report-only", action="store_true",
                        help="Only report on an existing run, with times counted from when its config.json was last "
                             "written (a few seconds after launch).")
    parser.add_argument("--time-box", type=float, default=0,
                        help="Stop the run with Ctrl-C this many seconds after launch (0: let it finish).")
    parser.add_argument("--stop-at", type=float, default=0,
                        help="Stop the run with Ctrl-C once an epoch's test accuracy reaches this many percent (0: "
                             "never); its event file is read every few seconds.")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    run_dir = os.path.join(args.logdir, args.run)
    if args.report_only:
        print(json.dumps(report(run_dir, os.path.getmtime(os.path.join(run_dir, CONFIG_FILE))), indent=1))
        return
    cmd = train_command(os.path.join(ROOT, "accelerate_configs", args.config), "--data-dir", args.data_dir,
                        "--logdir", args.logdir, "--run", args.run, *extra)
    launched_at = time.time()
    process, boxed = start(cmd), False
    deadline = launched_at + args.time_box if args.time_box else math.inf
    try:
        while process.poll() is None:
            try:
                process.wait(timeout=max(0.0, min(POLL_S, deadline - time.time())))
            except subprocess.TimeoutExpired:
                pass
            if process.poll() is None and (time.time() > deadline or reached(run_dir, args.stop_at)):
                boxed = True  # Ctrl-C, and report the epochs it finished
                if any(stop(process)):
                    sys.exit(f"time_to_accuracy: the run did not stop within {STOP_GRACE_S} s of Ctrl-C and was "
                             f"killed")
    except BaseException:  # Ctrl-C or SIGTERM of this bench: the run is in a session of its own, so pass it on
        stop(process)
        raise
    if process.returncode and not boxed:
        sys.exit(f"time_to_accuracy: the run failed with exit status {process.returncode}")
    wall = time.time() - launched_at
    result = {"command": " ".join(cmd), "time_box_s": args.time_box or None, "stop_at": args.stop_at or None,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d"), "wall_minutes": round(wall / 60, 2),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
              **report(run_dir, launched_at)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
