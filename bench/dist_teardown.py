"""How often a 2-process CPU run (multi_cpu.yaml, gloo) dies at exit after finishing its work, with and without
`errors.end_process`.

Each trial launches `accelerate launch --config_file accelerate_configs/multi_cpu.yaml` on this file in worker mode.
Both processes do some collective work, destroy the process group, report which gloo threads are still alive, print
"done" and then exit either the plain way (`sys.exit`) or through `end_process`. The two exits alternate (and swap
order every trial), so both see the same machine load. A trial fails when the launch exits non-zero although both
processes printed "done". Kinds of worker:

- `bare`: torch alone (init_process_group, DistributedDataParallel on a Linear layer, destroy_process_group):
  the smallest program that shows the abort;
- `allreduce`: torch alone, one all_reduce and no DDP: the control, whose gloo threads do stop;
- `train`: the training code's accelerator, `tiny` learner, loader and `train_step` (as tests/dist_check.py),
  ending with `end_training()`.

The abort is a race between the interpreter's teardown and gloo's threads; it shows far more often on a loaded
machine (as a shared CI runner can be), so `--busy N` keeps N spinning processes running during the trials.

    python bench/dist_teardown.py --kind bare --trials 40 --busy 2
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODES = ("sys_exit", "end_process")
KINDS = ("bare", "allreduce", "train")


def gloo_threads() -> int:
    """Threads of this process whose name says gloo (pt_gloo_runloop, gloo_tcp_loop)."""
    names = [open(f"/proc/self/task/{task}/comm").read() for task in os.listdir("/proc/self/task")]
    return sum("gloo" in name for name in names)


def torch_worker(ddp: bool) -> int:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(10, 10))
        for _ in range(5):
            model(torch.randn(4, 10)).sum().backward()
    else:
        dist.all_reduce(torch.ones(3))
    rank = dist.get_rank()
    dist.destroy_process_group()
    return rank


def train_worker(logdir: str) -> int:
    import torch

    from perceiver_mnist.config import preset
    from perceiver_mnist.data import DeviceBatches, InMemoryDataset
    from perceiver_mnist.engine import build_learner, make_accelerator, train_step

    acc = make_accelerator(logdir)
    images = torch.randint(0, 256, (32, 28, 28), dtype=torch.uint8)
    loader = DeviceBatches(InMemoryDataset(images, torch.arange(32) % 10), 8, shuffle=True, seed=0, device=acc.device,
                           num_processes=acc.num_processes, process_index=acc.process_index)
    learner = build_learner(acc, preset("tiny"), len(loader))
    for step, (x, y) in enumerate(loader, start=1):
        train_step(learner, x, y, step)
    acc.end_training()  # destroys the process group
    return acc.process_index


def worker(kind: str, mode: str, logdir: str) -> None:
    from perceiver_mnist.errors import end_process

    rank = train_worker(logdir) if kind == "train" else torch_worker(ddp=kind == "bare")
    print(f"done rank {rank} | gloo threads after destroy: {gloo_threads()}", flush=True)
    if mode == "end_process":
        end_process(0)
    sys.exit(0)


def run_trials(args: argparse.Namespace) -> dict[str, int]:
    config = os.path.join(ROOT, "accelerate_configs", "multi_cpu.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    failures = {mode: 0 for mode in MODES}
    for trial in range(1, args.trials + 1):
        for mode in MODES if trial % 2 else MODES[::-1]:
            result = subprocess.run(["accelerate", "launch", "--config_file", config, os.path.abspath(__file__),
                                     "--kind", args.kind, "--worker", mode], env=env, capture_output=True, text=True)
            done = re.findall(r"done rank \d+ \| gloo threads after destroy: \d+", result.stdout)  # lines may mix
            if len(done) != 2:
                sys.exit(f"trial {trial} ({mode}) did not finish its work:\n{result.stderr[-2000:]}")
            if trial == 1 and mode == MODES[0]:
                print("; ".join(done), flush=True)
            if result.returncode != 0:
                failures[mode] += 1
                aborted = "terminate called" in result.stderr
                print(f"trial {trial} {mode}: exit {result.returncode} after its work"
                      f"{' (terminate called ...)' if aborted else ''}", flush=True)
        print(f"{trial}/{args.trials} | " + " | ".join(f"{m} failed {failures[m]}" for m in MODES), flush=True)
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description="Count 2-process CPU runs that abort at exit after their work, "
                                                 "with a plain exit and with errors.end_process.")
    parser.add_argument("--kind", choices=KINDS, default="bare",
                        help="bare: torch + DDP; allreduce: torch without DDP; train: the training code's "
                             "accelerator and model")
    parser.add_argument("--trials", type=int, default=40, help="trials per exit mode (the modes alternate)")
    parser.add_argument("--busy", type=int, default=0, help="spinning processes that load the CPU meanwhile")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--logdir", default="/tmp/dist_teardown", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.kind, args.worker, args.logdir)
        return
    # A spinner stops by itself once this script is gone, however it ends.
    spin = f"import os\nwhile os.getppid() == {os.getpid()}: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(args.busy)]
    started = time.time()
    try:
        failures = run_trials(args)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    print(f"{args.kind}, {args.busy} busy: {args.trials} trials per mode in {(time.time() - started) / 60:.1f} min: "
          + ", ".join(f"{m} {failures[m]}/{args.trials} failed" for m in MODES))


if __name__ == "__main__":
    main()
