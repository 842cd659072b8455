"""The trained model outside the suite: accuracy of predict.py on test digits redrawn as users' pictures (enlarged,
inverted, off-centre, RGB, JPEG, a phone photo) next to its accuracy on the same raw digits, and the ONNX export
against PyTorch on the whole test set.

Each picture goes through the same path as `python predict.py`: written to a file, read back with Pillow,
preprocessed, classified. The raw row feeds the 28x28 digits to the model directly; "raw as PNG" sends them through
predict.py's preprocessing unchanged in size.

    python bench/predict_check.py --run NAME [--logdir runs] [--data-dir ../shared/data] [--images 2000]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from perceiver_mnist.data import run_test_set, to_float  # noqa: E402
from perceiver_mnist.model import load_model  # noqa: E402
from perceiver_mnist.onnx_export import compare_onnx, export_onnx  # noqa: E402
from perceiver_mnist.pictures import TRANSFORMS, write_picture  # noqa: E402
from perceiver_mnist.predict import predict_paths  # noqa: E402
from perceiver_mnist.runs import find_run, read_config  # noqa: E402


def predict_accuracy(model, files: list[str], labels: torch.Tensor) -> dict:
    start = time.time()
    results = predict_paths(model, files)
    failed = [r for r in results if r.error is not None]
    right = sum(r.error is None and r.top[0][0] == int(y) for r, y in zip(results, labels))
    return {"accuracy": round(100.0 * right / len(files), 2), "failed": len(failed),
            "ms_per_picture": round(1000 * (time.time() - start) / len(files), 2),
            "failures": sorted({r.error for r in failed})[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--logdir", default=os.path.join(ROOT, "runs"))
    parser.add_argument("--data-dir", default=None, help="Where the test set is (default: the run's own).")
    parser.add_argument("--images", type=int, default=2000, help="Test digits redrawn per transform (the first N).")
    parser.add_argument("--no-onnx", action="store_true", help="Skip the ONNX comparison.")
    args = parser.parse_args()

    run_dir = find_run(args.logdir, args.run)
    config = read_config(run_dir)
    model = load_model(run_dir)
    test = run_test_set(config, args.data_dir)
    images, labels = test.images[:args.images], test.labels[:args.images]
    with torch.no_grad():
        raw = (model(to_float(images)).argmax(-1) == labels).float().mean().item()
    rows = {"raw 28x28, to the model directly": {"accuracy": round(100 * raw, 2)}}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, digit in enumerate(images.numpy()):
            files.append(os.path.join(tmp, f"raw{i}.png"))
            Image.fromarray(digit).save(files[-1])
        rows["raw as PNG, through predict.py"] = predict_accuracy(model, files, labels)
        for name in TRANSFORMS:
            files = [write_picture(digit, name, os.path.join(tmp, f"{name}{i}"), seed=i)
                     for i, digit in enumerate(images.numpy())]
            rows[name] = predict_accuracy(model, files, labels)
            print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
        onnx = None
        if not args.no_onnx:
            path = os.path.join(tmp, "model.onnx")
            export_onnx(model, path)
            check = compare_onnx(path, model, test.images, "test images")
            onnx = {"images": check.images, "max_logit_difference": check.max_logit_difference,
                    "agreement_percent": round(100 * check.agreement, 2)}
    result = {"run": args.run, "images_per_transform": len(images), "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "predict": rows, "onnx": onnx}
    print(json.dumps(result, indent=1))
    print("\n| pictures | accuracy | failed |\n|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['accuracy']:.2f}% | {row.get('failed', '')} |")


if __name__ == "__main__":
    main()
