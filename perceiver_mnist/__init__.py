"""perceiver-mnist: a Perceiver IO image classifier that trains the same way on a CPU, GPUs and machines."""
from .config import Recipe, preset

__all__ = ["Recipe", "preset", "build_model", "load_model", "PerceiverMNIST"]


def __getattr__(name: str):
    # The model (torch, perceiver-pytorch) loads on first use, so `--help` and figures.py stay light.
    if name in ("build_model", "load_model"):
        from . import model
        return getattr(model, name)
    if name == "PerceiverMNIST":  # the model with the Hugging Face Hub's from_pretrained / save_pretrained
        from . import hub
        return hub.PerceiverMNIST
    raise AttributeError(name)
