"""Train several recipes side by side on the validation split and compare their validation curves.

One `accelerate launch ... train.py --val-size 5000` per recipe, all started at once, each with its own log, all
stopped (SIGINT: train.py saves a checkpoint) when the time box ends. Meant for a GPU, where the default preset's
step is bound by the host (BENCHMARKS.md section 7): one process leaves the GPU mostly idle, so several
processes, one per CPU core pair, train at nearly the speed of one. On the 2-core CPU, run one recipe at a time.

    python bench/parallel_sweep.py --out /tmp/sweep --config accelerate_configs/bf16.yaml --time-box 500 \\
        --runs 'c0=--epochs 30' 'inv=--epochs 30 --inverted-cross-attn'

The report (also with --report-only) lists, per run: validation accuracy every 5 epochs, at the end, the best,
the last training loss and the median samples/s. The test accuracy is not shown: model selection never uses it.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from perceiver_mnist import tracking  # noqa: E402
from perceiver_mnist.events import read_events  # noqa: E402

VAL_SIZE = 5000  # the fixed validation split of BENCHMARKS.md section 2


def launch(args: argparse.Namespace, name: str, flags: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.config, "train.py",
           "--data-dir", args.data_dir, "--logdir", os.path.join(args.out, "runs"), "--val-size", str(VAL_SIZE),
           "--grid-images", "0", "--run", name, *shlex.split(flags)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    log = open(os.path.join(args.out, f"{name}.log"), "w")
    print(f"{name}: {shlex.join(cmd)}", flush=True)
    # Own process group, so that the time box's SIGINT reaches train.py and not only the launcher.
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def report(out: str, names: list[str]) -> None:
    for name in names:
        run_dir = os.path.join(out, "runs", name)
        try:
            ev = read_events(run_dir)
            val = ev.scalars[tracking.VAL_ACCURACY].values
        except Exception as err:  # a run that failed before its first epoch: its log says why
            print(f"{name}: no validation results ({type(err).__name__}); see {out}/{name}.log")
            continue
        every5 = " / ".join(f"{v:.2f}" for v in val[4::5])
        best = max(val)
        loss = ev.scalars[tracking.TRAIN_LOSS].values[-1]
        speed = statistics.median(ev.scalars[tracking.SAMPLES_PER_S].values)
        print(f"{name}: epochs {len(val)} | val every 5: {every5} | end {val[-1]:.2f} | best {best:.2f} "
              f"(epoch {val.index(best) + 1}) | train loss {loss:.4f} | {speed:,.0f} samples/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="Output directory (logs, runs/).")
    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=FLAGS",
                        help="One run per argument: its name, '=', and its train.py recipe flags.")
    parser.add_argument("--config", default="accelerate_configs/bf16.yaml", help="accelerate config file.")
    parser.add_argument("--data-dir", default="data", help="train.py --data-dir.")
    parser.add_argument("--time-box", type=float, default=500, help="Seconds before every run is stopped.")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each run.")
    parser.add_argument("--report-only", action="store_true", help="Only print the report of existing runs.")
    args = parser.parse_args()
    specs = [spec.partition("=") for spec in args.runs]
    names = [name for name, _, _ in specs]
    if not args.report_only:
        os.makedirs(args.out, exist_ok=True)
        start = time.time()
        procs = {name: launch(args, name, flags) for name, _, flags in specs}
        while any(p.poll() is None for p in procs.values()) and time.time() - start < args.time_box:
            time.sleep(5)
        for name, p in procs.items():
            if p.poll() is None:
                print(f"{name}: stopped by the time box after {time.time() - start:.0f} s", flush=True)
                os.killpg(p.pid, signal.SIGINT)
        for name, p in procs.items():
            try:
                print(f"{name}: exit {p.wait(timeout=60)}")
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                print(f"{name}: killed (did not stop within 60 s of SIGINT)")
        print(f"all runs ended after {time.time() - start:.0f} s")
    report(args.out, names)


if __name__ == "__main__":
    main()
