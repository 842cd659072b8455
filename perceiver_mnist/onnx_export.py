"""Serving without PyTorch: the model as one ONNX file, and a check of onnxruntime against PyTorch.

The ONNX model takes ``images`` float ``(B, 1, 28, 28)`` in [0, 1] and returns ``logits`` ``(B, 10)``, with a dynamic
batch axis; normalisation and tokenisation are inside, as in PyTorch. It is made by torch's own exporter
(``torch.onnx.export(dynamo=True)``, the torch.export-based one), which needs onnx and onnxscript; the check needs
onnxruntime. All three are the ``export`` extra.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from .data import to_float
from .errors import UserError
from .runs import atomic_path

INSTALL = 'pip install -e ".[export]"'
INPUT, OUTPUT = "images", "logits"
MIN_TORCH = "2.6"  # the first torch whose exporter takes dynamo=True with dynamic_shapes and external_data


def require_export_extra() -> None:
    """Raise a one-line ``UserError`` naming the install command when a package of the export extra is missing."""
    for package in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(package)
        except ImportError:
            raise UserError(f"ONNX export needs the export extra ({package} is not installed): {INSTALL}") from None
    if torch.__version__ < MIN_TORCH:
        raise UserError(f"ONNX export needs torch >= {MIN_TORCH} (this is {torch.__version__}); upgrade torch")


def export_onnx(model: torch.nn.Module, path: str) -> None:
    """Write ``model`` (eval mode: token dropout is for training only) to ``path`` as a single ONNX file."""
    require_export_extra()
    if os.path.isdir(path):
        raise UserError(f"--out {path} is a folder; give a file name for --format onnx, such as model.onnx")
    model.eval()
    example = torch.rand(2, 1, 28, 28)  # 2, not 1: torch.export would take a batch of 1 for a constant
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_path(path) as tmp:  # a failed export leaves no half-written file, and an earlier one intact
            torch.onnx.export(model, (example,), tmp, dynamo=True, external_data=False, verbose=False,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_shapes={INPUT: {0: torch.export.Dim("batch")}})
    except OSError as err:
        raise UserError(f"cannot write {path} ({err.strerror or err}); choose a writable --out") from None


@dataclass
class OnnxCheck:
    """onnxruntime against PyTorch on the same images."""

    images: int
    max_logit_difference: float  # the largest |ONNX - PyTorch| over every logit of every image
    agreement: float  # the fraction of images whose predicted class is the same
    what: str = "images"

    def __str__(self) -> str:
        return (f"onnxruntime vs PyTorch on {self.images:,} {self.what}: largest logit difference "
                f"{self.max_logit_difference:.2e}, the same prediction for {100 * self.agreement:.2f}%")


def compare_onnx(path: str, model: torch.nn.Module, images: torch.Tensor, what: str = "images",
                 batch_size: int = 1000) -> OnnxCheck:
    """Run the ONNX file with onnxruntime (CPU) and ``model`` with PyTorch on uint8 images ``(N, 28, 28)``."""
    require_export_extra()
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    model.eval()
    worst, same = 0.0, 0
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size])
        with torch.no_grad():
            expected = model(x)
        got = torch.from_numpy(session.run([OUTPUT], {INPUT: x.numpy()})[0])
        worst = max(worst, (got - expected).abs().max().item())
        same += (got.argmax(-1) == expected.argmax(-1)).sum().item()
    return OnnxCheck(len(images), worst, same / len(images), what)


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    """uint8 noise ``(n, 28, 28)``: a check when no test set is at hand."""
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def check_images(config: dict[str, Any], data_dir: str | None = None) -> tuple[torch.Tensor, str]:
    """The images to compare on: the test set of the run (see ``data.run_test_set``), or 1,000 random images when
    it cannot be loaded; and what they are, in words."""
    from .data import run_test_set

    try:
        return run_test_set(config, data_dir).images, "test images"
    except UserError as err:
        return random_images(1000), f"random images (no test set: {err})"
