"""Training throughput of train.py vs a plain-PyTorch loop written the seed notebook's way, side by side.

The seed-style loop: torchvision MNIST with ToTensor + Normalize applied per sample (PIL), a shuffling DataLoader,
the same model, the same batch size, Adam. train.py: the real script (`--max-steps`) with augmentation, gradient
clipping and the weight average switched off (the seed loop has none of them), whose logged `train/samples_per_s`
covers its training steps only (not start-up or evaluation), like the timer of the seed loop.
A data-only pass over each pipeline shows what the in-memory path gains by itself.

    python bench/throughput.py --data-dir ../shared/data [--presets default seed tiny] [--steps N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from perceiver_mnist import tracking  # noqa: E402
from perceiver_mnist.config import preset  # noqa: E402
from perceiver_mnist.data import DeviceBatches, load_datasets  # noqa: E402
from perceiver_mnist.events import read_events  # noqa: E402
from perceiver_mnist.model import build_model  # noqa: E402

STEPS = {"default": 200, "seed": 6, "tiny": 800}  # enough steps for a stable rate at each preset's speed
# Like for like: the seed loop has no augmentation, gradient clipping or weight average: train.py runs without them.
SAME_WORK = ["--translate", "0", "--rotate", "0", "--scale", "0", "--grad-clip", "0", "--ema-decay", "0"]


def seed_style_loader(data_dir: str, batch_size: int) -> torch.utils.data.DataLoader:
    from torchvision import datasets, transforms
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    ds = datasets.MNIST(data_dir, train=True, download=False, transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True)


def seed_style_train(data_dir: str, name: str, steps: int) -> float:
    """Samples/s of the seed notebook's loop over steps + 1 steps, timed like train.py's logged rate: from the
    start of the pass, the first (warm-up) step and the loader start included."""
    recipe = preset(name)
    torch.manual_seed(0)
    model = build_model(recipe).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    criterion = torch.nn.MSELoss() if recipe.loss == "mse" else torch.nn.CrossEntropyLoss()
    loader = seed_style_loader(data_dir, recipe.batch_size)
    seen, start = 0, time.perf_counter()
    for i, (x, y) in enumerate(loader):
        out = model(x)  # x is already normalised; the model normalises again (one elementwise op, same cost)
        target = torch.nn.functional.one_hot(y, 10).float() if recipe.loss == "mse" else y
        loss = criterion(out, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(y)
        if i == steps:
            break
    return seen / (time.perf_counter() - start)


def small_test_copy(data_dir: str, out: str, n: int = 100) -> str:
    """MNIST with the real training files (linked) and only the first n test images: train.py evaluates after
    --max-steps, which is not what is timed here and takes long for the seed preset on a CPU."""
    src, raw = os.path.join(data_dir, "MNIST", "raw"), os.path.join(out, "MNIST", "raw")
    os.makedirs(raw)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        os.symlink(os.path.abspath(os.path.join(src, name)), os.path.join(raw, name))
    for name, header, item in (("t10k-images-idx3-ubyte", 16, 784), ("t10k-labels-idx1-ubyte", 8, 1)):
        with open(os.path.join(src, name), "rb") as f:
            data = bytearray(f.read(header + n * item))
        data[4:8] = n.to_bytes(4, "big")  # the item count in the IDX header
        with open(os.path.join(raw, name), "wb") as f:
            f.write(data)
    return out


def train_py(data_dir: str, name: str, steps: int) -> float:
    """Samples/s that train.py logs for its training steps."""
    with tempfile.TemporaryDirectory() as tmp:
        data = small_test_copy(data_dir, os.path.join(tmp, "data"))
        cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--preset", name, "--data-dir", data,
               "--logdir", tmp, "--run", "bench", "--max-steps", str(steps + 1), "--grid-images", "0",
               "--test-batch-size", "100", *SAME_WORK]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        return read_events(os.path.join(tmp, "bench")).scalars[tracking.SAMPLES_PER_S].values[-1]


def data_only(data_dir: str, batch_size: int) -> tuple[float, float]:
    """Samples/s of one pass over 60,000 training images: seed-style PIL pipeline vs in-memory tensors."""
    t0 = time.perf_counter()
    n = sum(len(y) for _, y in seed_style_loader(data_dir, batch_size))
    seed_rate = n / (time.perf_counter() - t0)
    train = load_datasets(data_dir, "mnist").train
    t0 = time.perf_counter()
    n = sum(len(y) for x, y in DeviceBatches(train, batch_size, shuffle=True, seed=0, device="cpu"))
    return seed_rate, n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--presets", nargs="+", default=["default", "tiny", "seed"])
    parser.add_argument("--steps", type=int, help=f"timed steps per preset (default: {STEPS}, else 50)")
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    results = {"torch_threads": torch.get_num_threads()}
    seed_rate, ours = data_only(args.data_dir, 64)
    results["data_only_samples_per_s"] = {"seed_style": round(seed_rate), "in_memory": round(ours),
                                          "ratio": round(ours / seed_rate, 1)}
    print(json.dumps(results), flush=True)
    for name in args.presets:
        steps = args.steps or STEPS.get(name, 50)
        seed = seed_style_train(args.data_dir, name, steps)
        ours = train_py(args.data_dir, name, steps)
        row = {"preset": name, "batch_size": preset(name).batch_size, "steps": steps,
               "seed_style_samples_per_s": round(seed, 1), "train_py_samples_per_s": round(ours, 1),
               "ratio": round(ours / seed, 2)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
