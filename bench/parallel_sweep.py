"""Train several recipes side by side on the validation split and compare their validation curves.

One `accelerate launch ... train.py --val-size 5000` per recipe, all started at once, each with its own log; when
the time box ends, every run still going gets Ctrl-C (train.py then saves a checkpoint and exits). Meant for a
GPU, where one run of the (previous) default preset is bound by the host (BENCHMARKS.md, "GPU") and leaves the
GPU mostly idle: seven runs side by side on an NVIDIA H100 trained at about 4,000 samples/s each
(docs/model-selection.md, round 9). On the 2-core CPU, run one recipe at a time.

    python bench/parallel_sweep.py --out /tmp/sweep --config accelerate_configs/bf16.yaml --time-box 500 \\
        --runs 'c0=--epochs 30' 'inv=--epochs 30 --inverted-cross-attn'

The report (also with --report-only) lists, per run: validation accuracy every 5 epochs, at the end, the best,
the last training loss and the median samples/s. The test accuracy is not shown: model selection never uses it.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time

from launching import ROOT, STOP_GRACE_S, alive, start, train_command
from launching import stop as stop_runs

sys.path.insert(0, ROOT)

from perceiver_mnist import tracking  # noqa: E402
from perceiver_mnist.data import SELECTION_VAL_SIZE  # noqa: E402
from perceiver_mnist.errors import UserError  # noqa: E402
from perceiver_mnist.events import read_events  # noqa: E402

def launch(args: argparse.Namespace, name: str, flags: str) -> subprocess.Popen:
    cmd = train_command(args.config, "--data-dir", args.data_dir, "--logdir", os.path.join(args.out, "runs"),
                        "--val-size", str(SELECTION_VAL_SIZE), "--grid-images", "0", "--run", name,
                        *shlex.split(flags))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    print(f"{name}: {shlex.join(cmd)}", flush=True)
    with open(os.path.join(args.out, f"{name}.log"), "w") as log:
        return start(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def stop(procs: dict[str, subprocess.Popen], why: str) -> None:
    """Ctrl-C to every run still going, all at once, then wait for each to checkpoint and exit."""
    for name, p in procs.items():
        if alive(p):
            print(f"{name}: stopped ({why})", flush=True)
    for name, killed in zip(procs, stop_runs(*procs.values())):
        if killed:
            print(f"{name}: killed ({STOP_GRACE_S} s after Ctrl-C)", flush=True)


def run_all(args: argparse.Namespace, specs: list[tuple[str, str]]) -> None:
    began = time.monotonic()
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, flags in specs:
            procs[name] = launch(args, name, flags)
        while any(p.poll() is None for p in procs.values()) and time.monotonic() - began < args.time_box:
            time.sleep(5)
        stop(procs, f"time box, {time.monotonic() - began:.0f} s")
    except BaseException:  # Ctrl-C or an error here: leave no training behind on the machine
        stop(procs, "the sweep was interrupted")
        raise
    for name, p in procs.items():
        print(f"{name}: launcher exit {p.wait()}")
    print(f"all runs ended after {time.monotonic() - began:.0f} s")


def report(out: str, names: list[str]) -> None:
    for name in names:
        try:
            ev = read_events(os.path.join(out, "runs", name))
            val = ev.scalars[tracking.VAL_ACCURACY].values
        except (UserError, KeyError):
            val = []
        if not val:
            print(f"{name}: no validation results; see {out}/{name}.log")
            continue
        every5 = " / ".join(f"{v:.2f}" for v in val[4::5])
        best = max(val)
        loss = ev.scalars[tracking.TRAIN_LOSS].values[-1]
        speed = statistics.median(ev.scalars[tracking.SAMPLES_PER_S].values)
        print(f"{name}: epochs {len(val)} | val every 5: {every5} | end {val[-1]:.2f} | best {best:.2f} "
              f"(epoch {val.index(best) + 1}) | train loss {loss:.4f} | {speed:,.0f} samples/s")


def parse_specs(parser: argparse.ArgumentParser, runs: list[str]) -> list[tuple[str, str]]:
    specs = []
    for spec in runs:
        name, sep, flags = spec.partition("=")
        if not sep or not name or "/" in name:
            parser.error(f"--runs {spec!r}: expected NAME=FLAGS, with a plain NAME")
        specs.append((name, flags))
    names = [name for name, _ in specs]
    if len(set(names)) < len(names):
        parser.error(f"--runs: run names must differ, got {names}")
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="Output directory (one log per run, runs/).")
    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=FLAGS",
                        help="One run per argument: its name, '=', and its train.py recipe flags.")
    parser.add_argument("--config", default="accelerate_configs/bf16.yaml", help="accelerate config file.")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"), help="train.py --data-dir.")
    parser.add_argument("--time-box", type=float, default=500, help="Seconds before every run is stopped.")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each run.")
    parser.add_argument("--report-only", action="store_true", help="Only print the report of existing runs.")
    args = parser.parse_args()
    # train.py runs from the repository root: make the caller's relative paths mean what the caller meant.
    args.out, args.config, args.data_dir = map(os.path.abspath, (args.out, args.config, args.data_dir))
    specs = parse_specs(parser, args.runs)
    if not args.report_only:
        taken = [name for name, _ in specs if os.path.exists(os.path.join(args.out, "runs", name))]
        if taken:
            parser.error(f"{args.out}/runs already holds {taken}: choose another --out or other names")
        os.makedirs(args.out, exist_ok=True)
        run_all(args, specs)
    report(args.out, [name for name, _ in specs])


if __name__ == "__main__":
    main()
