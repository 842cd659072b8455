"""Launch count of a training step: the ATen operations train.py dispatches per step outside compiled regions, and
its host reads.

On a GPU each such operation launches at least one kernel, so a small model's step cannot take less than that many
times the host's cost per launch (a few microseconds), however little arithmetic it does; a compiled region is one
call into generated code (one CUDA graph under reduce-overhead). The count is taken on the host, where the
operations are dispatched, so it is the same on a CPU as on a GPU and can be measured here.

Method: train.py itself runs in a fresh process, with torch.profiler recording from the start of step WARMUP + 1 to
the start of step WARMUP + STEPS + 1: STEPS whole steps of the loop (the batch's gather, the step, the loop's
bookkeeping), after start-up, data loading and compilation, which would otherwise dominate. `--log-every` is larger
than the run, so no logging step falls in the window: its host reads are the ones of ordinary steps (a logging step
adds 2: the loss, the non-finite check).

An operation counts when it is top-level (no ATen operation and no compiled region above it: a compiled region
shows as "Torch-Compiled Region", its backward as "CompiledFunctionBackward") and something under it launches work:
views and metadata (reshape to a view, permute, transpose, detach, squeeze, select, a `to` that copies nothing,
an allocation...) launch no kernel and are left out. A host read is an `aten::_local_scalar_dense` (what
`.item()`, `bool(t)`, `float(t)` dispatch): on a GPU, a sync.

    python bench/launches.py [--preset default fast gpu] [--compile eager inductor] [--mode default]
                             [--steps 20] [--warmup 10] [--device cpu] [--precision no] [--tree PATH]

One JSON line per (preset, compile): ops_per_step, host_reads_per_step, the most frequent operations per step and,
on a GPU, kernel launches per step (cudaLaunchKernel and cudaGraphLaunch calls) seen by the CUDA profiler.
`--tree` measures another checkout (e.g. a git worktree of an older revision) with the same method.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Operations that launch no kernel: views, metadata, allocation. A top-level operation whose whole subtree is made
# of these is not counted (a reshape that copies has a clone under it and is).
NO_LAUNCH = frozenset(f"aten::{name}" for name in (
    "view", "_unsafe_view", "reshape", "_reshape_alias", "view_as", "permute", "transpose", "t", "expand",
    "expand_as", "detach", "detach_", "squeeze", "unsqueeze", "chunk", "split", "split_with_sizes", "tensor_split",
    "select", "slice", "narrow", "as_strided", "alias", "unbind", "flatten", "unflatten", "movedim", "numpy_T",
    "to", "contiguous", "type_as", "empty", "empty_like", "empty_strided", "resize_", "lift_fresh",
    "resolve_conj", "resolve_neg", "set_", "result_type", "promote_types", "is_nonzero", "size", "stride", "dim",
    "_has_compatible_shallow_copy_type", "is_pinned",
))
HOST_READ = "aten::_local_scalar_dense"
COMPILED = ("Torch-Compiled Region", "CompiledFunction", "CompiledFxGraph")
LAUNCHES = ("cudaLaunchKernel", "cudaGraphLaunch", "cuLaunchKernel", "cudaLaunchKernelExC")


def _launches_work(event) -> bool:
    if event.name not in NO_LAUNCH:
        return True
    return any(child.name.startswith("aten::") and _launches_work(child) for child in event.cpu_children)


# What Python's .item(), bool(t)... dispatch on the way to the read itself.
READ_CHAIN = frozenset({HOST_READ, "aten::item", "aten::is_nonzero"})


def _read_from_python(event) -> bool:
    """A host read the code asked for, not one inside a kernel (the CPU's fused AdamW reads its step counters, which
    live on the host there; on a GPU they are device tensors and it reads nothing)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::") and parent.name not in READ_CHAIN:
            return False
        parent = parent.cpu_parent
    return True


def count(events) -> dict:
    """The profile's top-level launching operations outside compiled regions (by name), host reads and CUDA
    launch calls."""
    ops: collections.Counter = collections.Counter()
    reads = launches = 0
    for e in events:
        if e.name == HOST_READ and _read_from_python(e):
            reads += 1
        if any(e.name.startswith(name) for name in LAUNCHES):
            launches += 1
        if not e.name.startswith("aten::"):
            continue
        parent, top = e.cpu_parent, True
        while parent is not None:
            if parent.name.startswith("aten::") or any(mark in parent.name for mark in COMPILED):
                top = False
                break
            parent = parent.cpu_parent
        if top and _launches_work(e):
            ops[e.name] += 1
    return {"ops": dict(ops), "host_reads": reads, "launches": launches}


def child(argv: list[str], out: str, first: int, steps: int) -> None:
    """train.py's main in this process, profiled over its steps ``first`` to ``first + steps - 1``; the counts go to
    ``out`` as JSON. The window is opened and closed by a wrapper of ``engine.train_step``, which the loop calls by
    its module's name (in any revision)."""
    import runpy

    import torch
    from torch.profiler import ProfilerActivity, profile

    from perceiver_mnist import engine

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    prof = profile(activities=activities)
    step_fn = engine.train_step

    def window(learner, images, labels, step):
        if step == first:
            prof.start()
        elif step == first + steps:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            prof.stop()
        return step_fn(learner, images, labels, step)

    engine.train_step = window
    train = runpy.run_path(os.path.join(os.getcwd(), "train.py"), run_name="bench")
    sys.argv = ["train.py", *argv]
    code = train["main"]()
    if code:
        sys.exit(f"launches: train.py {' '.join(argv)} exited with {code}")
    with open(out, "w") as f:
        json.dump(count(prof.events()), f)


def measure(tree: str, preset: str, compile: str, mode: str, warmup: int, steps: int, data_dir: str, logdir: str,
            device: str, precision: str) -> dict:
    """Operations and host reads per step of ``preset``'s training loop in ``tree``."""
    out = os.path.join(logdir, f"{preset}-{compile}.json")
    argv = ["--preset", preset, "--data-dir", data_dir, "--logdir", logdir, "--run", f"{preset}-{compile}",
            "--max-steps", str(warmup + steps + 1), "--log-every", "100000", "--grid-images", "0", "--epochs", "1"]
    env = {**os.environ, "PYTHONPATH": tree, "PYTHONUNBUFFERED": "1",
           "ACCELERATE_USE_CPU": "true" if device == "cpu" else "false", "ACCELERATE_MIXED_PRECISION": precision,
           "ACCELERATE_DYNAMO_BACKEND": "NO" if compile == "eager" else compile.upper(),
           "ACCELERATE_DYNAMO_MODE": mode, "ACCELERATE_DYNAMO_USE_DYNAMIC": "False"}
    result = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", out, str(warmup + 1), str(steps),
                             "--", *argv], cwd=tree, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"launches: {preset} {compile} failed:\n{result.stderr[-3000:]}")
    with open(out) as f:
        counted = json.load(f)
    top = dict(sorted(((k, round(v / steps, 2)) for k, v in counted["ops"].items()), key=lambda kv: -kv[1])[:12])
    return {"preset": preset, "compile": compile, "mode": mode, "device": device, "precision": precision,
            "steps": steps, "ops_per_step": round(sum(counted["ops"].values()) / steps, 2),
            "host_reads_per_step": round(counted["host_reads"] / steps, 2),
            "cuda_launches_per_step": round(counted["launches"] / steps, 2) if device == "cuda" else None,
            "top_ops": top}


def write_data(root: str, n_train: int, n_test: int = 100) -> None:
    """Random MNIST-format IDX files (the step's cost does not depend on what the images show)."""
    import torch

    from perceiver_mnist.data import write_idx

    generator = torch.Generator().manual_seed(0)
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), torch.randint(256, (n, 28, 28),
                                                                                  generator=generator))
        write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), torch.randint(10, (n,), generator=generator))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[6:], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", default=["default", "fast", "gpu"])
    parser.add_argument("--compile", nargs="+", default=["eager", "inductor"],
                        help="eager (no compilation), or a torch.compile backend: inductor, or aot_eager (traces "
                             "and splits the step as inductor does, without generating code).")
    parser.add_argument("--mode", default="default", help="torch.compile mode (default, reduce-overhead...).")
    parser.add_argument("--steps", type=int, default=20, help="Steps counted.")
    parser.add_argument("--warmup", type=int, default=10, help="Steps before the count (compilation included).")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--tree", default=ROOT, help="The checkout whose train.py is measured.")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)  # the parent only: a child imports the package of the tree it measures
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1")
    from perceiver_mnist.config import preset

    with tempfile.TemporaryDirectory() as tmp:
        batch = max(preset(name).batch_size for name in args.preset)
        write_data(tmp, n_train=batch * (args.warmup + args.steps + 2))  # one epoch holds every step
        for name in args.preset:
            for compile in args.compile:
                print(json.dumps(measure(os.path.abspath(args.tree), name, compile, args.mode, args.warmup,
                                         args.steps, tmp, os.path.join(tmp, "runs"), args.device, args.precision)),
                      flush=True)


if __name__ == "__main__":
    main()
