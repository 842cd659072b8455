"""Where the first seconds of a run go, from `accelerate launch` to its first trained step.

Three costs are measured as commands, each the median of --repeats runs: the bare interpreter, importing what
train.py imports (torch, accelerate, the package), and `accelerate launch`'s own process (the launcher starting
train.py --help, against python train.py --help). The rest is measured in one process, as engine.train does it:
reading the IDX files, building and preparing the learner, the first training step (and a later one, for
comparison), and evaluating all 10,000 test images.

    python bench/startup.py --data-dir ../shared/data [--preset fast] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def command_seconds(argv: list[str], repeats: int) -> float:
    """Median wall time of running ``argv`` to its end."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    py, config = sys.executable, os.path.join(ROOT, "accelerate_configs", "cpu.yaml")
    rows: list[tuple[str, float]] = []
    bare = command_seconds([py, "-c", "pass"], args.repeats)
    rows.append(("Python interpreter, bare", bare))
    imports = command_seconds([py, "-c", "import perceiver_mnist.engine"], args.repeats)
    rows.append(("imports (torch, accelerate, tensorboard, the package), beyond the bare interpreter", imports - bare))
    plain = command_seconds([py, "train.py", "--help"], args.repeats)
    launched = command_seconds([py, "-m", "accelerate.commands.launch", "--config_file", config, "train.py",
                                "--help"], args.repeats)
    rows.append(("`accelerate launch`'s own process (launch of train.py --help, less python train.py --help)",
                 launched - plain))

    import torch

    from perceiver_mnist.config import preset
    from perceiver_mnist.data import DeviceBatches, load_datasets
    from perceiver_mnist.engine import build_learner, evaluate, make_accelerator, train_step

    recipe = preset(args.preset)
    start = time.perf_counter()
    splits = load_datasets(args.data_dir, recipe.dataset)
    rows.append(("reading the IDX files (60,000 + 10,000 images)", time.perf_counter() - start))
    acc = make_accelerator()
    torch.manual_seed(0)
    start = time.perf_counter()
    train = DeviceBatches(splits.train, recipe.batch_size, shuffle=True, seed=0, device=acc.device)
    learner = build_learner(acc, recipe, len(train))
    rows.append((f"building and preparing the `{args.preset}` learner", time.perf_counter() - start))
    batches = train.batches()
    steps = []
    for i, (images, labels) in enumerate(batches):
        start = time.perf_counter()
        train_step(learner, images, labels, i + 1).item()
        steps.append(time.perf_counter() - start)
        if i == 20:
            break
    rows.append(("the first training step", steps[0]))
    rows.append(("a later training step (median of steps 2-21), for comparison", statistics.median(steps[1:])))
    test = DeviceBatches(splits.test, recipe.test_batch_size, shuffle=False, seed=0, device=acc.device)
    start = time.perf_counter()
    evaluate(learner, test)
    rows.append(("evaluating the 10,000 test images", time.perf_counter() - start))
    print(f"| `{args.preset}` on {os.cpu_count()} cores, torch {torch.__version__} | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
