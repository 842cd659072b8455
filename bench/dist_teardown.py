"""How often a 2-process CPU run (multi_cpu.yaml, gloo) dies at exit after finishing its work, with and without
`errors.end_process`.

Each trial launches `accelerate launch --config_file accelerate_configs/multi_cpu.yaml` on this file in worker mode.
Both processes take a few DDP steps, destroy the process group, print "done" and then exit either the plain way
(`sys.exit`) or through `end_process`. The two exits alternate, so both see the same machine load. A trial fails
when the launch exits non-zero although both processes printed "done". Two kinds of worker:

- `bare`: torch alone (init_process_group, DistributedDataParallel on a Linear layer, destroy_process_group):
  the smallest program that shows the abort;
- `train`: the training code's accelerator, `tiny` model and optimizer, ending with `end_training()`.

The abort is a race between the interpreter's teardown and gloo's threads; it shows far more often on a loaded
machine (as a shared CI runner can be), so `--busy N` keeps N spinning processes running during the trials.

    python bench/dist_teardown.py --kind bare --trials 40 --busy 2
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODES = ("sys_exit", "end_process")


def bare_worker() -> str:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(10, 10))
    for _ in range(5):
        model(torch.randn(4, 10)).sum().backward()
    rank = dist.get_rank()
    dist.destroy_process_group()
    return f"done rank {rank}"


def train_worker(logdir: str) -> str:
    import torch

    from perceiver_mnist.config import preset
    from perceiver_mnist.engine import build_optimizer, loss_fn, make_accelerator
    from perceiver_mnist.model import build_model

    acc = make_accelerator(logdir)
    recipe = preset("tiny")
    model = build_model(recipe)
    optimizer = build_optimizer(model, recipe)
    model, optimizer = acc.prepare(model, optimizer)
    for _ in range(3):
        x = torch.rand(4, 28, 28, device=acc.device)
        acc.backward(loss_fn(model(x), torch.arange(4, device=acc.device), recipe))
        optimizer.step()
        optimizer.zero_grad()
    acc.end_training()  # destroys the process group
    return f"done rank {acc.process_index}"


def worker(kind: str, mode: str, logdir: str) -> None:
    from perceiver_mnist.errors import end_process

    print(bare_worker() if kind == "bare" else train_worker(logdir), flush=True)
    if mode == "end_process":
        end_process(0)
    sys.exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("bare", "train"), default="bare",
                        help="bare: torch alone; train: the training code's accelerator and model")
    parser.add_argument("--trials", type=int, default=40, help="trials per exit mode (the modes alternate)")
    parser.add_argument("--busy", type=int, default=0, help="spinning processes that load the CPU meanwhile")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--logdir", default="/tmp/dist_teardown", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.kind, args.worker, args.logdir)
    config = os.path.join(ROOT, "accelerate_configs", "multi_cpu.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    failures = {mode: 0 for mode in MODES}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    started = time.time()
    try:
        run_trials(args, config, env, failures)
    finally:
        for spinner in spinners:
            spinner.kill()
    print(f"{args.kind}, {args.busy} busy: {args.trials} trials per mode in {(time.time() - started) / 60:.1f} min: "
          + ", ".join(f"{m} {failures[m]}/{args.trials} failed" for m in MODES))


def run_trials(args: argparse.Namespace, config: str, env: dict, failures: dict) -> None:
    for trial in range(1, args.trials + 1):
        for mode in MODES:
            result = subprocess.run(["accelerate", "launch", "--config_file", config, os.path.abspath(__file__),
                                     "--kind", args.kind, "--worker", mode], env=env, capture_output=True, text=True)
            if result.stdout.count("done rank") != 2:
                sys.exit(f"trial {trial} ({mode}) did not finish its work:\n{result.stderr[-2000:]}")
            if result.returncode != 0:
                failures[mode] += 1
                aborted = "terminate called" in result.stderr
                print(f"trial {trial} {mode}: exit {result.returncode} after its work"
                      f"{' (terminate called ...)' if aborted else ''}", flush=True)
        print(f"{trial}/{args.trials} | " + " | ".join(f"{m} failed {failures[m]}" for m in MODES), flush=True)


if __name__ == "__main__":
    main()
