"""Time one update of the demo page: preprocess a drawing, classify it, draw the attention maps and the images.

100 real MNIST test digits are drawn as the sketchpad hands them over (black ink on a white 336x336 page, enlarged
10x, each somewhere else on the page) and given to ``Demo.update``, the whole of what the page computes per stroke;
then the same drawings go through the running app's /draw endpoint over HTTP (gradio_client), which adds Gradio's
own work and the PNG transfers. Reports the median, 90th percentile and maximum in ms, and how many drawings came
back with their true label.

    python bench/demo_speed.py --run NAME [--logdir runs] [--data-dir ../shared/data] [--drawings 100] [--no-http]
    python bench/demo_speed.py --preset default     # untrained weights: the same time, no meaningful labels
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perceiver_mnist.config import PRESETS, RunOptions, preset, recipe_to_dict  # noqa: E402
from perceiver_mnist.data import load_test_set  # noqa: E402
from perceiver_mnist.demo import CANVAS, Demo  # noqa: E402
from perceiver_mnist.runs import find_run  # noqa: E402


def drawing(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A digit as the sketchpad gives it: dark strokes on a white page, 10x larger, off-centre."""
    page = Image.new("L", (CANVAS, CANVAS), 255)
    ink = Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BICUBIC)
    page.paste(ink, (int(rng.integers(0, CANVAS - 280)), int(rng.integers(0, CANVAS - 280))))
    return page


def untrained_run(name: str, folder: str) -> str:
    import torch
    from safetensors.torch import save_file

    from perceiver_mnist.model import build_model
    path = os.path.join(folder, name)
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"recipe": recipe_to_dict(preset(name)), "preset": name}, f)
    torch.manual_seed(0)
    save_file(build_model(preset(name)).state_dict(), os.path.join(path, "model.safetensors"))
    return path


def summary(ms: list[float], correct: int) -> dict:
    return {"median_ms": round(float(np.median(ms)), 1), "p90_ms": round(float(np.percentile(ms, 90)), 1),
            "max_ms": round(max(ms), 1), "correct": f"{correct}/{len(ms)}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="A trained run under --logdir.")
    source.add_argument("--preset", choices=list(PRESETS), help="The preset's model with untrained weights.")
    parser.add_argument("--logdir", default=RunOptions().logdir)
    parser.add_argument("--data-dir", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                           "data"), help="Where MNIST is (default: the shipped copy).")
    parser.add_argument("--drawings", type=int, default=100)
    parser.add_argument("--no-http", action="store_true", help="Only the in-process update, not the running app.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = find_run(args.logdir, args.run) if args.run else untrained_run(args.preset, tmp)
        demo = Demo(path, run_name=args.run)
        test = load_test_set(args.data_dir, demo.model.recipe.dataset)
        rng = np.random.default_rng(0)
        pictures = [drawing(test.images[i].numpy(), rng) for i in range(args.drawings)]
        labels = [demo.classes[int(test.labels[i])] for i in range(args.drawings)]
        demo.update(pictures[0])  # the first call pays for lazy initialisation (allocator, kernels)
        ms, correct = [], 0
        for picture, label in zip(pictures, labels):
            t0 = time.perf_counter()
            update = demo.update(picture)
            ms.append(1000 * (time.perf_counter() - t0))
            correct += max(update.probabilities, key=update.probabilities.get) == label
        result = {"model": demo.about, "update": summary(ms, correct)}
        if not args.no_http:
            result["http_draw"] = time_http(demo, pictures, labels, tmp)
    print(json.dumps(result, indent=1))


def time_http(demo: Demo, pictures: list[Image.Image], labels: list[str], tmp: str) -> dict:
    """The same drawings through the app's /draw endpoint: what a browser's stroke costs, page to answer."""
    import socket

    from gradio_client import Client, handle_file

    from perceiver_mnist.demo import build_app, serve
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(demo)
    client = Client(serve(app, "127.0.0.1", port), verbose=False)
    files = []
    for i, picture in enumerate(pictures):
        files.append(os.path.join(tmp, f"{i}.png"))
        picture.save(files[-1])
    draw = lambda f: client.predict({"background": None, "layers": [], "composite": handle_file(f)},  # noqa: E731
                                    api_name="/draw")
    try:
        draw(files[0])
        ms, correct = [], 0
        for f, label in zip(files, labels):
            t0 = time.perf_counter()
            _, answer, _, _ = draw(f)
            ms.append(1000 * (time.perf_counter() - t0))
            correct += answer["label"] == label
    finally:
        app.close()
    return summary(ms, correct)


if __name__ == "__main__":
    main()
