"""Sharing a trained model in the Hugging Face Hub convention: ``save_pretrained`` / ``from_pretrained`` through
huggingface_hub's ``PyTorchModelHubMixin`` (``config.json`` + ``model.safetensors``), a generated model card, and
the upload.

The exported ``config.json`` is ``{"recipe": {...}}``: the mixin's config (the init argument of ``PerceiverMNIST``)
and, like a run's config.json, what ``load_model`` reads. So ``load_model`` takes a run or an exported folder.
"""
from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from typing import Any

from huggingface_hub import ModelCard, PyTorchModelHubMixin

from . import tracking
from .config import Recipe, preset, preset_of, recipe_from_dict, recipe_to_dict
from .datasets import DATASETS
from .errors import UserError
from .events import read_events
from .figures import best_epoch
from .model import PerceiverClassifier, count_parameters, load_model, load_weights
from .runs import CONFIG_FILE, FIGURES_DIR, WEIGHTS_FILE, read_config

CARD_FILE = "README.md"
SUMMARY_FIGURE = "summary.png"
EXPORTED_FILES = {CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, SUMMARY_FIGURE}  # an earlier export may be overwritten


class PerceiverMNIST(PerceiverClassifier, PyTorchModelHubMixin, library_name="perceiver-mnist", license="mit",
                     pipeline_tag="image-classification", tags=["perceiver-io", "image-classification"]):
    """The classifier with the Hub's ``save_pretrained``, ``from_pretrained`` and ``push_to_hub``.

    ``recipe`` is the recipe as a dict (what ``config.json`` holds); loading checks the weights against it."""

    def __init__(self, recipe: dict[str, Any]):
        super().__init__(recipe_from_dict(recipe, CONFIG_FILE))

    @classmethod
    def _load_as_safetensor(cls, model: Any, model_file: str, map_location: str, strict: bool) -> Any:
        # The mixin loads non-strictly by default: a file for another recipe would load half its weights, silently.
        load_weights(model, model_file)
        return model.to(map_location).eval()


def hub_model(path: str) -> PerceiverMNIST:
    """The trained model of a run (or of an exported folder) as a ``PerceiverMNIST``, in eval mode."""
    return load_model(path, build=lambda recipe: PerceiverMNIST(recipe_to_dict(recipe)))


# ----------------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------------

def training_summary(run_dir: str) -> dict[str, Any] | None:
    """Final and best test accuracy, the number of test images, epochs and optimizer steps, training time and end
    date, from the run's event files (None without them)."""
    try:
        events = read_events(run_dir)
    except UserError:
        return None
    if not (events.has(tracking.TEST_ACCURACY) and events.has(tracking.EPOCH)):
        return None
    accuracy = events.scalars[tracking.TEST_ACCURACY]
    epoch, best = best_epoch(events)
    elapsed = events.scalars[tracking.ELAPSED].values[-1] if events.has(tracking.ELAPSED) else None
    ended = datetime.fromtimestamp(accuracy.wall_times[-1], tz=timezone.utc).strftime("%Y-%m-%d")
    images = events.scalars[tracking.TEST_SAMPLES].values[-1] if events.has(tracking.TEST_SAMPLES) else None
    return {"final": accuracy.values[-1], "best": best, "best_epoch": epoch, "test_images": images,
            "epochs": events.scalars[tracking.EPOCH].values[-1], "steps": events.scalars[tracking.EPOCH].steps[-1],
            "elapsed_s": elapsed, "ended": ended}


def _hardware(config: dict[str, Any]) -> str:
    """Processes, device and precision of a run, in words, from what its config.json recorded."""
    processes, precision = config.get("num_processes"), config.get("mixed_precision")
    hardware = config.get("hardware") if isinstance(config.get("hardware"), dict) else {}
    device = hardware.get("device")
    kind = {"cpu": "CPU", "cuda": "GPU"}.get(device, device)
    parts = [f"{processes} process{'es' if processes != 1 else ''}" if isinstance(processes, int) else None,
             f"{kind} ({hardware.get('device_name')})" if device else None,
             f"{hardware['cpu_cores']} CPU cores" if device == "cpu" and hardware.get("cpu_cores") else None,
             "fp32" if precision == "no" else f"{precision} mixed precision" if precision else None]
    return ", ".join(p for p in parts if p) or "not recorded"


def _as_flag(name: str, value: Any) -> str:
    """A recipe field as the train.py flag that sets it."""
    flag = name.replace("_", "-")
    return (f"--{flag}" if value else f"--no-{flag}") if isinstance(value, bool) else f"--{flag} {value}"


# What each --adapter and --query is, in the model card's words.
_ADAPTERS = {"image": "the whole image as one token of 784 features",
             "pixels": "one token per pixel, with Fourier position features",
             "patches": "{p}x{p} image patches as tokens, with Fourier position features",
             "conv": "a {layers}-layer convolutional stem whose features over each {p}x{p}-pixel square are a token, "
                     "with Fourier position features"}
_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}  # a stem's layers in words; more as digits
_QUERIES = {"learned": "a learned output query", "zeros": "a fixed all-zero output query"}


def model_card(model: PerceiverMNIST, config: dict[str, Any], run_name: str, summary: dict[str, Any] | None,
               repo_id: str | None, has_figure: bool) -> ModelCard:
    """The README.md of an exported model: what it is and its recipe, its test accuracy, the hardware and time of
    its training, the summary figure (when drawn) and how to use it."""
    recipe = model.recipe
    info = DATASETS[recipe.dataset]
    dataset, classes = info.title, info.classes
    data = model.generate_model_card().data  # the mixin's metadata: library, license, tags, pipeline
    data.datasets = [info.hub_id]
    data.metrics = ["accuracy"]
    preset_name = preset_of(config)
    layers = 2 + recipe.stem_depth
    adapter = _ADAPTERS[recipe.adapter].format(p=recipe.patch_size, layers=_NUMBERS.get(layers, layers))
    lines = [
        f"# {run_name}: a Perceiver IO classifier of {dataset}",
        "",
        f"A [Perceiver IO](https://arxiv.org/abs/2107.14795) image classifier ({count_parameters(model):,} "
        f"parameters) trained on {dataset} with perceiver-mnist, which wraps lucidrains' "
        f"[perceiver-pytorch](https://github.com/lucidrains/perceiver-pytorch) `PerceiverIO` in an input adapter "
        f"({adapter}) and {_QUERIES[recipe.query]}: 28x28 grey images in, one of {len(classes)} classes out "
        f"({', '.join(classes)}). It was trained with the `{preset_name}` preset and the recipe below.",
        "",
        *_results_lines(summary, config, dataset, has_figure),
        *_usage_lines(repo_id or "USER/REPO"),
        *_recipe_lines(recipe, preset_name, config),
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def _results_lines(summary: dict[str, Any] | None, config: dict[str, Any], dataset: str,
                   has_figure: bool) -> list[str]:
    lines = ["## Results", ""]
    if summary:
        minutes = f"{summary['elapsed_s'] / 60:.1f} min" if summary["elapsed_s"] is not None else "not recorded"
        lines += [
            "| test accuracy, final | best (epoch) | epochs | training time | hardware | ended |",
            "|---|---|---|---|---|---|",
            f"| **{summary['final']:.2f}%** | {summary['best']:.2f}% ({summary['best_epoch']:.3g}) | "
            f"{summary['epochs']:.3g} | {minutes} | {_hardware(config)} | {summary['ended']} |",
            "",
            f"Accuracy on all {summary['test_images']:,.0f} {dataset} test images after each epoch; the training "
            "time includes every evaluation. The weights here are the final ones." if summary["test_images"] else
            "Accuracy on the test images after each epoch. The weights here are the final ones.",
        ]
    else:
        lines += ["The run's TensorBoard event files were not available: no accuracy is reported."]
    if has_figure:
        lines += ["", f"![training loss, test loss and test accuracy per epoch]({SUMMARY_FIGURE})"]
    return lines


def _usage_lines(model_id: str) -> list[str]:
    folder = model_id.split("/")[-1]
    return [
        "",
        "## Usage",
        "",
        "The code is the `perceiver-mnist` package (install it from its repository). Images are float tensors "
        "`(B, 1, 28, 28)` in [0, 1], white ink on black as in MNIST; normalisation and tokenisation are inside the "
        "model.",
        "",
        "```python",
        "from perceiver_mnist import PerceiverMNIST",
        f'model = PerceiverMNIST.from_pretrained("{model_id}")   # or the path of this folder; eval mode, CPU',
        "logits = model(images)                                   # (B, 10)",
        "```",
        "",
        "Your own pictures (any format, dark ink on paper or light on dark), from a checkout of perceiver-mnist and "
        "a downloaded copy of this folder:",
        "",
        "```bash",
        f"hf download {model_id} --local-dir {folder}",
        f"python predict.py --model {folder} my_digit.jpg",
        "```",
    ]


def _recipe_lines(recipe: Recipe, preset_name: str, config: dict[str, Any]) -> list[str]:
    base = recipe_to_dict(preset(preset_name))
    changed = {k: v for k, v in recipe_to_dict(recipe).items() if v != base[k]}
    return [
        "",
        "## Recipe",
        "",
        f"The `{preset_name}` preset" + (", with " + " ".join(f"`{_as_flag(k, v)}`" for k, v in changed.items())
                                         if changed else "") + ".",
        "",
        "<details><summary>Every field</summary>",
        "",
        "| field | value |",
        "|---|---|",
        *[f"| `{name}` | `{value}` |" for name, value in recipe_to_dict(recipe).items()],
        "",
        "</details>",
        "",
        "Versions: " + ", ".join(f"{pkg} {v}" for pkg, v in sorted((config.get("versions") or {}).items())) + ".",
    ]


# ----------------------------------------------------------------------------------------------------------
# Export and upload
# ----------------------------------------------------------------------------------------------------------

def _check_out_dir(out_dir: str) -> None:
    """Refuse to write into a file, or into a folder that holds anything but an earlier export (a run, say)."""
    if os.path.isfile(out_dir):
        raise UserError(f"--out {out_dir} is a file; give a folder for --format hf")
    if os.path.isdir(out_dir):
        others = sorted(set(os.listdir(out_dir)) - EXPORTED_FILES)
        if others:
            raise UserError(f"--out {out_dir} already holds other files ({', '.join(others[:3])}); choose an empty "
                            f"or new folder")


def export_hf(run_dir: str, out_dir: str, repo_id: str | None = None) -> list[str]:
    """Write a run's model to ``out_dir`` in the Hub convention, with a model card and the run's summary figure
    (when ``figures.py`` drew it); returns the files written."""
    _check_out_dir(out_dir)
    config = read_config(run_dir)
    model = hub_model(run_dir)
    figure = os.path.join(run_dir, FIGURES_DIR, SUMMARY_FIGURE)
    has_figure = os.path.isfile(figure)
    card = model_card(model, config, os.path.basename(os.path.normpath(run_dir)), training_summary(run_dir),
                      repo_id, has_figure)
    try:
        model.save_pretrained(out_dir)
        card.save(os.path.join(out_dir, CARD_FILE))  # replaces the mixin's generic card
        if has_figure:
            shutil.copyfile(figure, os.path.join(out_dir, SUMMARY_FIGURE))
        elif os.path.exists(os.path.join(out_dir, SUMMARY_FIGURE)):
            os.remove(os.path.join(out_dir, SUMMARY_FIGURE))  # an earlier export's, of another run
    except OSError as err:
        raise UserError(f"cannot write {out_dir} ({err.strerror or err}); choose a writable --out") from None
    return sorted(os.path.join(out_dir, name) for name in os.listdir(out_dir))


def push_to_hub(folder: str, repo_id: str) -> str:
    """Upload an exported folder to the Hub model repository ``repo_id`` (created if needed); returns its URL."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HFValidationError, HTTPError, OfflineModeIsEnabled

    try:
        if get_token() is None:  # checked first: without one the Hub answers 401 in a many-line error
            raise UserError("no Hugging Face token (log in with `hf auth login` or set HF_TOKEN)")
        api = HfApi()
        url = api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(repo_id=url.repo_id, folder_path=folder, repo_type="model",
                          commit_message="Upload a perceiver-mnist model (export.py --format hf)")
        return str(url)
    except OfflineModeIsEnabled:
        reason = "offline mode is on (HF_HUB_OFFLINE=1)"
    except (UserError, HFValidationError, HTTPError) as err:  # HTTPError: no network, a refused token, ...
        reason = " ".join(str(err).split()) or type(err).__name__
    raise UserError(f"cannot push to the Hub: {reason}; {folder} holds the export, push it again when that is "
                    f"fixed") from None
