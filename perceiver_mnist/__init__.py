"""perceiver-mnist: a Perceiver IO image classifier that trains the same way on a CPU, GPUs and machines."""
from .config import Recipe, preset

__all__ = ["Recipe", "preset", "build_model", "load_model"]


def __getattr__(name: str):
    # The model (torch, perceiver-pytorch) loads on first use, so `--help` and figures.py stay light.
    if name in ("build_model", "load_model"):
        from . import model
        return getattr(model, name)
    raise AttributeError(name)
