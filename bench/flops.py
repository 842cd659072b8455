"""Compute efficiency: achieved training FLOP/s of a preset divided by this machine's fp32 matmul FLOP/s.

FLOPs of one training step (forward + backward, optimizer excluded) are counted with torch.utils.flop_counter;
the step timed is train.py's own, ``engine.train_step`` (augmentation, loss, backward, clipping, AdamW, schedule,
weight average). The matmul peak is a large square fp32 matmul measured in the same process, with the same threads
(or on the same GPU with --device cuda, where the step runs in fp32 as single_gpu.yaml does; TF32 stays off,
PyTorch's default). `aten_ops_per_step` counts the leaf ATen operations of one step: on a GPU each is at least one
kernel launch, so a step cannot take less than that many times the per-launch cost of the host, however little
arithmetic it does.

With --compile MODE..., the same step also runs compiled by torch.compile in each mode (as train.py compiles it
under accelerate's --dynamo_backend inductor --dynamo_mode MODE: engine.build_learner's regions), and the report
adds its compile time (the first step) and, for reduce-overhead, how many graphs inductor declined to capture as
CUDA graphs (0 on a GPU means the whole compiled step replays as CUDA graphs; on a CPU there is nothing to capture).

    python bench/flops.py [--preset default] [--batch-sizes 128 256] [--steps 20] [--device cuda]
                          [--precision bf16] [--compile [default reduce-overhead]] [--sync-debug] [--no-peak]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import TorchDynamoPlugin
from torch._dynamo.utils import counters
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perceiver_mnist.config import PRESETS, preset  # noqa: E402
from perceiver_mnist.data import to_float  # noqa: E402
from perceiver_mnist.engine import build_learner, compile_options, loss_fn, train_step  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()  # kernels run asynchronously: the clock must wait for them


def matmul_flops_per_s(device: str, repeat: int = 10, dtype: torch.dtype = torch.float32) -> float:
    n = 8192 if device == "cuda" else 2048  # a GPU needs a bigger product to reach its peak
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    sync(device)
    return 2 * n ** 3 * repeat / (time.perf_counter() - t0)


def leaf_ops(fn: Callable[[], None]) -> int:
    """Leaf ATen operations that ``fn`` dispatches (those that call no other ATen operation)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    aten = [e for e in prof.events() if e.name.startswith("aten::")]
    return sum(not any(c.name.startswith("aten::") for c in e.cpu_children) for e in aten)


class SyncCount:
    """Host-device synchronisations in a block on a GPU, counted by torch's sync debug mode: in "warn" mode each one
    is a warning naming the synchronising op. "error" would raise at the first one instead, and lose every later
    row of the bench; the condition is the same."""

    def __init__(self, on: bool):
        self.on = on and torch.cuda.is_available()
        self.count: int | None = None  # None: not checked (CPU, or --sync-debug off)
        self.first: str | None = None  # the first warning's message, which names the op

    @contextmanager
    def counting(self) -> Iterator[None]:
        if not self.on:
            yield
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        self.count = len(syncs)
        self.first = str(syncs[0].message).splitlines()[0][:200] if syncs else None


def training_step_flops(name: str, batch: int, steps: int, device: str = "cpu", compile_mode: str | None = None,
                        syncs: SyncCount | None = None, precision: str = "no",
                        backend: str = "inductor") -> tuple[int | None, float, int | None, float]:
    """FLOPs of one step, the time in seconds of ``engine.train_step`` (what train.py runs), its leaf ATen
    operations, and the time of the first step (with ``compile_mode``: tracing and code generation included; the
    FLOPs and operations, the eager step's, are then not counted again: None). ``syncs`` counts the host-device
    synchronisations of up to 20 more steps after the timed ones."""
    recipe = preset(name)
    acc = Accelerator(cpu=device == "cpu", mixed_precision=precision)
    torch.manual_seed(0)
    # What `accelerate launch --dynamo_backend BACKEND --dynamo_mode MODE` asks for, with accelerate's own arguments.
    # Not through the accelerate config: accelerate's state is one per process and keeps the first Accelerator's
    # dynamo settings, and this script times several modes in one process.
    dynamo = TorchDynamoPlugin(backend=backend.upper(), mode=compile_mode, dynamic=False) if compile_mode else None
    learner = build_learner(acc, recipe, steps_per_epoch=steps, compile=dynamo and compile_options(dynamo))
    images = torch.randint(0, 256, (batch, 28, 28), dtype=torch.uint8, device=acc.device)
    labels = torch.randint(0, 10, (batch,), device=acc.device)

    def step() -> None:
        train_step(learner, images, labels, step=0)

    flops = ops = None
    if not compile_mode:
        with FlopCounterMode(display=False) as counter:
            loss_fn(learner.module(to_float(images)), labels, recipe).backward()
        flops = counter.get_total_flops()
        learner.optimizer.zero_grad(set_to_none=True)
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(10):  # warm-up: the first steps of a shape pay for allocations and kernel selection
        step()
    if not compile_mode:
        ops = leaf_ops(step)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - t0) / steps
    if syncs is not None and syncs.on:  # counted apart from the timed steps: the debug mode's warnings cost time
        with syncs.counting():
            for _ in range(min(steps, 20)):
                step()
        sync(device)
    return flops, seconds, ops, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=list(PRESETS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="Batch sizes to time (default: the preset's).")
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per batch size and mode.")
    parser.add_argument("--compile", nargs="*", choices=["default", "reduce-overhead", "max-autotune"],
                        metavar="MODE", help="Also time the step compiled by torch.compile in each MODE (none given: "
                                             "default), and report the compile time (its first step).")
    parser.add_argument("--backend", default="inductor",
                        help="torch.compile backend for --compile (eager: dynamo's tracing only, for quick checks).")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="no", choices=["no", "fp16", "bf16"],
                        help="Mixed precision, as an accelerate config's mixed_precision sets it.")
    parser.add_argument("--sync-debug", action="store_true",
                        help="With --device cuda: count the host-device synchronisations of 20 steps after the timed "
                             "ones (torch's sync debug mode; host_syncs 0 proves the step never waits for the GPU) and "
                             "name the first one's op.")
    parser.add_argument("--no-peak", action="store_true",
                        help="Skip the matmul peaks (their fields are null): quick checks such as bench/gpu_check.sh "
                             "--cpu-rehearsal, where they cost seconds of a 2-core CPU.")
    args = parser.parse_args()
    peak = None if args.no_peak else matmul_flops_per_s(args.device)
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else f"{torch.get_num_threads()} threads"
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    # Under autocast the step's matmuls run in the half type: its matmul rate is the ceiling they aim at.
    half_peak = matmul_flops_per_s(args.device, dtype=half) \
        if half is not None and args.device == "cuda" and not args.no_peak else None
    peaks = {"fp32_matmul_gflops": peak and round(peak / 1e9, 1)}
    if half_peak:
        peaks[f"{args.precision}_matmul_gflops"] = round(half_peak / 1e9, 1)
    print(json.dumps({"device": where, **peaks}), flush=True)
    modes = [] if args.compile is None else args.compile or ["default"]
    for batch in args.batch_sizes or [preset(args.preset).batch_size]:
        common = dict(device=args.device, precision=args.precision)
        syncs = SyncCount(args.sync_debug)
        flops, seconds, ops, _ = training_step_flops(args.preset, batch, args.steps, syncs=syncs, **common)
        achieved = flops / seconds
        print(json.dumps({"preset": args.preset, "batch_size": batch, "precision": args.precision,
                          "gflop_per_step": float(f"{flops / 1e9:.4g}"),
                          "step_s": round(seconds, 4), "samples_per_s": round(batch / seconds, 1),
                          "achieved_gflops": round(achieved / 1e9, 1),
                          # the reference is an fp32 matmul: with --precision bf16 or fp16 the ratio overstates
                          "efficiency" if args.precision == "no" else "achieved_over_fp32_matmul":
                              peak and round(achieved / peak, 3),
                          "achieved_over_half_matmul": half_peak and round(achieved / half_peak, 4),
                          "aten_ops_per_step": ops, "host_syncs": syncs.count, "first_sync": syncs.first}),
              flush=True)
        for mode in modes:
            # dynamo starts afresh for each mode; inductor's on-disk cache does not, so after the first compile of a
            # graph (the batch axis is dynamic: one graph for every batch size) compile_s may be a warm-cache time.
            torch._dynamo.reset()
            skips_before = counters["inductor"]["cudagraph_skips"]
            graphs_before = counters["stats"]["unique_graphs"]
            syncs = SyncCount(args.sync_debug)
            _, compiled, _, first = training_step_flops(args.preset, batch, args.steps, compile_mode=mode,
                                                        backend=args.backend, syncs=syncs, **common)
            print(json.dumps({"preset": args.preset, "batch_size": batch, "mode": mode, "backend": args.backend,
                              "compiled_step_s": round(compiled, 4),
                              "compiled_samples_per_s": round(batch / compiled, 1),
                              "speedup": round(seconds / compiled, 2), "compile_s": round(first, 1),
                              "cudagraph_skips": counters["inductor"]["cudagraph_skips"] - skips_before,
                              # graphs dynamo captured (0: the "compiled" step ran eager, and timed nothing compiled)
                              "graphs": counters["stats"]["unique_graphs"] - graphs_before,
                              "host_syncs": syncs.count, "first_sync": syncs.first}), flush=True)
    after = None if args.no_peak else round(matmul_flops_per_s(args.device) / 1e9, 1)
    print(json.dumps({"fp32_matmul_gflops_after": after}), flush=True)


if __name__ == "__main__":
    main()
