"""Configuration: the training recipe, the run options, the named presets and the CLI built from them.

Two dataclasses hold every setting:

* ``Recipe``: what is trained and how (model, data, optimisation). Saved to ``runs/NAME/config.json``;
  ``--resume`` reloads it, so a resumed run trains the same recipe unless a flag says otherwise.
* ``RunOptions``: where and how this invocation runs (run name, paths, seed, step limits). Not a property of
  the model; given again on every invocation.

Every field is a ``--flag`` (underscores become dashes) whose help text is the field's ``help`` metadata.
Hardware and precision are deliberately absent: they come from the accelerate config file.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Sequence

from .datasets import DATASETS
from .errors import UserError

IMAGE_SIZE = 28  # MNIST and Fashion-MNIST are 28x28 grey images.
NUM_CLASSES = 10


def _f(default: Any, help: str, choices: Sequence[Any] | None = None, model: bool = False,
       limits: str | None = None, unit: str = "") -> Any:
    """A dataclass field with its one-line CLI help and its checks beside it.

    ``model=True`` marks fields that define the network's architecture; ``limits`` is the interval of allowed
    values in the usual notation, e.g. ``"[0, 1)"``; ``unit`` names the unit in the error message.
    """
    if limits is not None:
        _parse_interval(limits)  # a typo in an interval fails at import, not when a user hits it
    return field(default=default, metadata={"help": help, "choices": choices, "model": model, "limits": limits,
                                            "unit": unit})


def _parse_interval(text: str) -> tuple[float, float, bool, bool]:
    """``"(0, 1]"`` -> (low, high, low_open, high_open); a bound may be ``inf`` or ``B**E``."""
    match = re.fullmatch(r"([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])", text)
    if not match:
        raise ValueError(f"not an interval: {text!r}")

    def number(s: str) -> float:
        base, _, exponent = s.partition("**")
        return float(base) ** float(exponent) if exponent else float(s)
    return number(match[2]), number(match[3]), match[1] == "(", match[4] == ")"


def _limit_error(name: str, value: float, limits: str, unit: str) -> str | None:
    """The message for a value outside ``limits`` (None when it is inside): the usual words where they fit."""
    low, high, low_open, high_open = _parse_interval(limits)
    above_low = value > low if low_open else value >= low
    below_high = value < high if high_open else value <= high
    if math.isfinite(value) and above_low and below_high:
        return None
    if high == math.inf and (low, low_open) == (0, True):
        what = "a positive number" if isinstance(value, float) else "positive"
    elif high == math.inf and (low, low_open) == (0, False):
        what = "zero or positive"
    elif high == math.inf:
        what = f"{'above' if low_open else 'at least'} {low:g}"
    elif (low, low_open) == (0, False) and "**" not in limits:  # name the side that failed; 2**32 reads better
        what = "zero or positive" if not above_low else f"{'below' if high_open else 'at most'} {high:g}"
    else:
        what = f"in {limits}"
    units = f" is in {unit} and" if unit else ""
    return f"--{_flag(name)}{units} must be {what}, got {value}"


def _check_limits(obj: Any, values: dict[str, Any] | None = None) -> None:
    """Raise a ``UserError`` for the first field of the dataclass ``obj`` outside its ``limits``: its own values, or
    those of ``values`` (given field names only)."""
    for f in fields(obj):
        if f.metadata["limits"] is not None and (values is None or f.name in values):
            value = getattr(obj, f.name) if values is None else values[f.name]
            error = _limit_error(f.name, value, f.metadata["limits"], f.metadata["unit"])
            if error:
                raise UserError(error)


@dataclass
class Recipe:
    """Everything that defines a training run's result. Defaults are the ``default`` preset."""

    # --- data ---
    dataset: str = _f("mnist", "Dataset (MNIST ships with the repo; Fashion-MNIST is downloaded). Without --preset, "
                      "it also picks the recipe: " + ", ".join(f"'{info.preset}' for {name}"
                                                                for name, info in DATASETS.items()) + ".",
                      list(DATASETS), model=True)
    val_size: int = _f(0, "Training images held out as a validation split for model selection (0: none).",
                       limits="[0, inf)")
    translate: int = _f(2, "Augmentation: random shift of up to this many pixels (0: off).", limits="[0, inf)")
    rotate: float = _f(10.0, "Augmentation: random rotation of up to this many degrees (0: off).",
                       limits="[0, 180]", unit="degrees")
    scale: float = _f(0.1, "Augmentation: random zoom by a factor in [1-scale, 1+scale] (0: off).", limits="[0, 1)")
    elastic: float = _f(0.0, "Augmentation: elastic distortion, in pixels of displacement (0: off).",
                        limits="[0, inf)")
    downscale: float = _f(0.0, "Augmentation: probability of a low-resolution scan: the image averaged down to 7-14 "
                          "pixels a side and scaled back up (0: off).", limits="[0, 1]")
    crop: int = _f(0, "Augmentation: random crop of the image zero-padded by this many pixels per side, i.e. a shift "
                   "by whole pixels, without resampling (0: off).", limits="[0, inf)")
    hflip: float = _f(0.0, "Augmentation: probability of mirroring an image left-right (0: off; only for datasets "
                      "whose classes survive a mirror: " + ", ".join(n for n, i in DATASETS.items()
                                                                     if i.mirror_invariant) + ").", limits="[0, 1]")
    erase: float = _f(0.0, "Augmentation: probability of random erasing, one rectangle of 2-40% of the image (aspect "
                      "0.3-3.3) filled with noise (Zhong et al. 2020) (0: off).", limits="[0, 1]")
    mixup: float = _f(0.0, "Augmentation: blend each image with another of its batch, pixel by pixel, and their labels "
                      "in the same proportion, drawn from Beta(mixup, mixup) (Zhang et al. 2018) (0: off).",
                      limits="[0, inf)")
    cutmix: float = _f(0.0, "Augmentation: paste a rectangle of another image of its batch into each image, and mix "
                       "their labels by its area, drawn from Beta(cutmix, cutmix) (Yun et al. 2019) (0: off; with "
                       "--mixup too, each image gets one of the two, at even odds).", limits="[0, inf)")
    mix_prob: float = _f(1.0, "Augmentation: probability that an image is mixed at all, by --mixup or --cutmix.",
                         limits="(0, 1]")

    # --- model: input adapter (image -> tokens) ---
    adapter: str = _f("patches", "Image to tokens: one 784-dim token, one per pixel, one per patch, or one per "
                      "patch of a small convolutional stem's feature map.", ["image", "pixels", "patches", "conv"],
                      model=True)
    patch_size: int = _f(4, "Patch side in pixels for --adapter patches or conv (must divide 28; even for conv).",
                         model=True, limits="(0, inf)")
    stem_channels: int = _f(16, "--adapter conv: channels of the stem's first 3x3 convolution (of stride 2; its "
                            "second has twice as many).", model=True, limits="(0, inf)")
    stem_depth: int = _f(0, "--adapter conv: residual 3x3 convolutions after the stem's second convolution, at its "
                         "width and resolution (0: none).", model=True, limits="[0, inf)")
    num_freq_bands: int = _f(6, "Fourier position features: frequency bands per axis.", model=True, limits="(0, inf)")
    max_freq: float = _f(7.0, "Fourier position features: highest frequency, in cycles per image.", model=True,
                         limits="(0, inf)")
    token_dim: int = _f(64, "Project each token to this width (0: raw token features; needs --token-depth 0).",
                        model=True, limits="[0, inf)")
    token_depth: int = _f(1, "Transformer blocks over the tokens before the encoder reads them (0: none).",
                          model=True, limits="[0, inf)")

    # --- model: Perceiver IO (lucidrains' perceiver-pytorch) ---
    num_latents: int = _f(8, "Number of latent vectors.", model=True, limits="(0, inf)")
    latent_dim: int = _f(128, "Width of each latent vector.", model=True, limits="(0, inf)")
    depth: int = _f(4, "Number of latent self-attention blocks.", model=True, limits="(0, inf)")
    cross_heads: int = _f(4, "Heads of the cross-attentions and the token blocks.", model=True, limits="(0, inf)")
    cross_dim_head: int = _f(32, "Width of each cross-attention head.", model=True, limits="(0, inf)")
    latent_heads: int = _f(4, "Heads of the latent self-attention.", model=True, limits="(0, inf)")
    latent_dim_head: int = _f(32, "Width of each latent self-attention head.", model=True, limits="(0, inf)")
    queries_dim: int = _f(32, "Width of the output query.", model=True, limits="(0, inf)")
    query: str = _f("learned", "Output query: the seed's fixed all-zero one, or learned.", ["zeros", "learned"],
                    model=True)
    decoder_ff: bool = _f(False, "Feed-forward block after the decoder cross-attention.", model=True)
    inverted_cross_attn: bool = _f(False, "Encoder softmax over the latents, so they compete for tokens (slots).",
                                   model=True)
    token_dropout: float = _f(0.1, "In training, hide this fraction of each image's tokens from the model.",
                              limits="[0, 1)")

    # --- optimisation ---
    epochs: int = _f(60, "Number of passes over the training set.", limits="(0, inf)")
    batch_size: int = _f(128, "Global batch size (split across processes; must divide by their number).",
                         limits="(0, inf)")
    test_batch_size: int = _f(1000, "Global batch size for evaluation.", limits="(0, inf)")
    loss: str = _f("ce", "Cross-entropy on logits, or the seed's MSE between logits and one-hot labels.",
                   ["ce", "mse"])
    label_smoothing: float = _f(0.1, "Label smoothing for --loss ce.", limits="[0, 1)")
    optimizer: str = _f("adamw", "Optimizer.", ["adam", "adamw"])
    lr: float = _f(2e-3, "Peak learning rate.", limits="(0, inf)")
    weight_decay: float = _f(0.05, "Decoupled weight decay (adamw only; not on biases and norms).",
                             limits="[0, inf)")
    scheduler: str = _f("cosine", "Learning-rate decay: lr * gamma**epoch (the seed), cosine to the floor, or none.",
                        ["exponential", "cosine", "constant"])
    gamma: float = _f(0.9, "Per-epoch decay factor for --scheduler exponential.", limits="(0, 1]")
    lr_floor: float = _f(0.0, "Fraction of --lr that --scheduler cosine ends at.", limits="[0, 1)")
    warmup_epochs: float = _f(1.0, "Linear learning-rate warm-up, in epochs (fractions allowed; 0: none).",
                              limits="[0, inf)")
    grad_clip: float = _f(1.0, "Clip the gradient norm to this value (0: off).", limits="[0, inf)")
    ema_decay: float = _f(0.9998, "Evaluate and save a weight average with this decay cap per step (0: raw weights).",
                          limits="[0, 1)")

    def model_fields(self) -> dict[str, Any]:
        """The fields that determine the network's architecture (compared on --resume)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["model"]}

    def validate(self) -> "Recipe":
        """Raise a ``UserError`` naming the first field with an impossible value or combination."""
        for f in fields(self):  # flags are checked by argparse; this catches a hand-edited config.json
            if f.metadata["choices"] and getattr(self, f.name) not in f.metadata["choices"]:
                raise UserError(f"--{_flag(f.name)} must be one of {list(f.metadata['choices'])}, "
                                f"got {getattr(self, f.name)!r}")
        _check_limits(self)
        if self.lr_floor and self.scheduler != "cosine":
            raise UserError(f"--lr-floor applies to --scheduler cosine only (got --scheduler {self.scheduler})")
        if self.mix_prob < 1 and not (self.mixup or self.cutmix):
            raise UserError(f"--mix-prob {self.mix_prob} sets how often --mixup or --cutmix mixes an image, but both "
                            f"are 0; give one of them an alpha, or leave --mix-prob at 1")
        if self.token_depth and (self.token_dim <= 0 or self.token_dim % self.cross_heads):
            raise UserError(f"--token-depth needs a positive --token-dim divisible by --cross-heads, got --token-dim "
                            f"{self.token_dim} and --cross-heads {self.cross_heads} (or --token-depth 0)")
        if self.token_depth and self.adapter == "image":
            raise UserError("--token-depth needs several tokens to mix, but --adapter image makes one per image; "
                            "use --adapter patches, pixels or conv, or --token-depth 0")
        if self.hflip and not DATASETS[self.dataset].mirror_invariant:
            raise UserError(f"--hflip mirrors images, but a mirrored {DATASETS[self.dataset].title} image is no longer "
                            f"of its class; use --hflip 0 for --dataset {self.dataset}")
        if self.adapter in ("patches", "conv") and IMAGE_SIZE % self.patch_size:
            raise UserError(f"--patch-size must divide {IMAGE_SIZE}, got {self.patch_size}")
        if self.stem_depth and self.adapter != "conv":
            raise UserError(f"--stem-depth adds convolutions to the conv adapter's stem, but --adapter is "
                            f"{self.adapter}; use --adapter conv, or --stem-depth 0")
        if self.adapter == "conv" and self.patch_size % 2:
            raise UserError(f"--adapter conv needs an even --patch-size (its stem halves the image), got "
                            f"{self.patch_size}")
        return self


@dataclass
class RunOptions:
    """How and where this invocation runs; not part of the recipe."""

    run: str = _f("", "Run name: everything is written to LOGDIR/RUN; empty: PRESET-YYYYmmdd-HHMMSS.")
    logdir: str = _f("runs", "Root directory of all runs (point TensorBoard here).")
    data_dir: str = _f("data", "Directory holding MNIST/raw and FashionMNIST/raw.")
    seed: int = _f(0, "Random seed (model init, shuffling, augmentation).", limits="[0, 2**32)")
    resume: bool = _f(False, "Continue the run named by --run from its latest complete checkpoint.")
    max_steps: int = _f(0, "Stop after this many optimizer steps in total, evaluate and save (0: no limit).",
                        limits="[0, inf)")
    checkpoint_every: int = _f(0, "Also checkpoint every N optimizer steps within an epoch (0: epoch ends only).",
                               limits="[0, inf)")
    keep_checkpoints: int = _f(3, "How many of the newest checkpoints to keep.", limits="[1, inf)")
    log_every: int = _f(10, "Log the train loss every N optimizer steps.", limits="[1, inf)")
    grid_images: int = _f(32, "Test images shown in the per-epoch prediction grid (0: none).", limits="[0, inf)")

    def validate(self) -> "RunOptions":
        _check_limits(self)
        if self.run and (self.run in (".", "..") or "/" in self.run or "\\" in self.run):
            raise UserError(f"--run must be a plain directory name, got {self.run!r}")
        return self

    def resume_command(self) -> str:
        """The command that continues this run as it was started: every option that differs from its default.

        The recipe is not repeated (``--resume`` reloads it), but the options are not saved, so a run that read
        its data from ``--data-dir X`` must be told X again.
        """
        args = ["accelerate", "launch", "train.py", "--run", self.run, "--logdir", self.logdir]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("run", "logdir", "resume") and value != f.default:
                args += [f"--{_flag(f.name)}", str(value)]
        return shlex.join([*args, "--resume"])


# Named recipes: overrides on top of the ``Recipe`` defaults (which are the ``default`` preset).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Why each preset is what it is, and the rounds that chose it: docs/presets.md and docs/model-selection.md.
    # The default's model and recipe at a global batch of 1,024, for GPUs, which run a step of 1,024 about as fast as
    # one of 128; every batch-dependent setting is scaled for 8x the batch (lr, weight decay per epoch, the weight
    # average's span, warm-up, epochs).
    "gpu": dict(epochs=80, batch_size=1024, lr=8e-3, weight_decay=0.1, warmup_epochs=3.0, ema_decay=0.9984),
    # A good model on a laptop CPU in minutes: a short schedule with a weight average that short a run can follow,
    # a convolutional stem (local features from the first step) instead of the token block, and 2 latent blocks,
    # since they set the step's cost on a CPU.
    "fast": dict(adapter="conv", token_depth=0, depth=2, epochs=10, warmup_epochs=0.5, ema_decay=0.999),
    # A finished 99% model in under a minute and a half on a laptop CPU: `fast`'s stem read by 4 latents of 64 through
    # one latent block (the latents set a CPU step's cost: a third less than 8 x 128 at equal batches), and a short,
    # hot schedule: 4 epochs of batches of 128 at lr 7.5e-3, no label smoothing, a weight average short enough for 4
    # epochs; 30% of the training images made low-resolution scans, so that it reads people's scanned digits. Found
    # by tune.py on the validation split (docs/model-selection.md, round 21).
    "sprint": dict(adapter="conv", token_depth=0, depth=1, num_latents=4, latent_dim=64, epochs=4, batch_size=128,
                   lr=7.5e-3, warmup_epochs=0.27, label_smoothing=0.0, ema_decay=0.995, downscale=0.3),
    # Fashion-MNIST's recipe (train.py --dataset fashion-mnist without --preset): the distortions that fit clothes
    # (mirrors, crops; no rotation or zoom), more of the model in a wider convolutional stem than in the latents
    # (clothes differ by local texture and shape), and CutMix on half the images, which keeps the model learning once
    # it fits its training set. No erasing or token dropout: they did not help.
    "fashion": dict(dataset="fashion-mnist", adapter="conv", stem_channels=32, token_dim=128, token_depth=0, depth=3,
                    token_dropout=0.0, translate=0, rotate=0.0, scale=0.0, crop=2, hflip=0.5, cutmix=1.0,
                    mix_prob=0.5),
    "seed": dict(
        adapter="image", token_dim=0, num_latents=256, latent_dim=512, depth=6, cross_heads=1,
        cross_dim_head=64, latent_heads=8, latent_dim_head=64, queries_dim=32, query="zeros", decoder_ff=False,
        epochs=50, batch_size=64, test_batch_size=1000, loss="mse", label_smoothing=0.0, optimizer="adam",
        lr=1e-4, weight_decay=0.0, scheduler="exponential", gamma=0.9, warmup_epochs=0.0, grad_clip=0.0,
        translate=0, rotate=0.0, scale=0.0, ema_decay=0.0, token_depth=0, token_dropout=0.0,
    ),
    # About 12 k parameters for tests and smoke runs, with the default's token block and token dropout.
    "tiny": dict(
        adapter="patches", patch_size=7, num_freq_bands=2, token_dim=16, num_latents=4, latent_dim=16, depth=1,
        cross_heads=1, cross_dim_head=8, latent_heads=2, latent_dim_head=8, queries_dim=8, epochs=2,
        batch_size=16, test_batch_size=32, warmup_epochs=0.0, ema_decay=0.0,
    ),
}


def preset(name: str) -> Recipe:
    """The named recipe, one of ``PRESETS``."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return Recipe(**PRESETS[name])


def preset_of(config: dict[str, Any]) -> str:
    """The preset a run started from, by its config.json: the one named, else ``default`` (train.py's without
    --preset; an exported folder names none)."""
    named = config.get("preset")
    return named if named in PRESETS else "default"


# Fields added after runs were saved without them, with the value that reproduces how those runs trained. Not the
# dataclass default: that may have changed since (ema_decay, token_depth and token_dropout did), and a guess would
# silently change the recipe.
ADDED_FIELDS: dict[str, Any] = {"lr_floor": 0.0, "elastic": 0.0, "token_dropout": 0.0, "inverted_cross_attn": False,
                                "token_depth": 0, "stem_channels": 16, "crop": 0, "hflip": 0.0,
                                "erase": 0.0, "stem_depth": 0, "mixup": 0.0, "cutmix": 0.0,
                                "mix_prob": 1.0, "downscale": 0.0}


# The JSON types each recipe field accepts (an int where a float belongs is fine).
_FIELD_TYPES = {f.name: {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}[str(f.type)]
                for f in fields(Recipe)}


def mistyped_field(values: dict[str, Any]) -> str | None:
    """The first of ``values``' recipe fields whose value has the wrong type, described; None if all are right."""
    for name, value in values.items():
        allowed = _FIELD_TYPES.get(name)
        # bool is an int in Python: a JSON true where a number belongs is still a mistake.
        if allowed and (not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)):
            return f"recipe field {name!r} is {value!r}, expected {allowed[-1].__name__}"
    return None


def recipe_from_dict(values: dict[str, Any], source: str) -> Recipe:
    """Rebuild a recipe saved by ``recipe_to_dict``; unknown, missing or mistyped fields are an error."""
    if not isinstance(values, dict):
        raise UserError(f"{source} holds no recipe (found {type(values).__name__}); restore it or start a new run")
    values = {**ADDED_FIELDS, **values}
    unknown, missing = sorted(set(values) - _FIELD_TYPES.keys()), sorted(_FIELD_TYPES.keys() - set(values))
    if unknown or missing:
        what = "; ".join(f"{kind} recipe fields {names}" for kind, names in (("unknown", unknown),
                                                                              ("missing", missing)) if names)
        raise UserError(f"{source} has {what}: it was written by another version of perceiver-mnist")
    problem = mistyped_field(values)
    if problem:
        raise UserError(f"{source}: {problem}; restore it or start a new run")
    return Recipe(**values).validate()


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def diff_fields(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Fields whose values differ, formatted ``name: saved -> new``."""
    return [f"{k}: {saved[k]} -> {new[k]}" for k in saved if saved[k] != new[k]]


def diff_model_fields(saved: Recipe, new: Recipe) -> list[str]:
    """Model fields whose values differ, formatted ``name: saved -> new``."""
    return diff_fields(saved.model_fields(), new.model_fields())


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------

def _flag(name: str) -> str:
    return name.replace("_", "-")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (plus a pointer to --help) instead of the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def add_logdir_argument(parser: argparse.ArgumentParser) -> None:
    """train.py's ``--logdir``, with its default, for the scripts that read its runs (figures, predict, export)."""
    default = RunOptions().logdir
    parser.add_argument("--logdir", default=default, help=f"Root directory of all runs (default: {default}).")


def _preset_defaults(name: str) -> str:
    values = {p: PRESETS[p].get(name, getattr(Recipe, name)) for p in PRESETS}
    if len({repr(v) for v in values.values()}) == 1:
        return f"default: {values['default']}"
    return "presets: " + ", ".join(f"{p}={v}" for p, v in values.items())


def _add_fields(group: argparse._ArgumentGroup, cls: type, recipe_fields: bool) -> None:
    for f in fields(cls):
        kwargs: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS)
        default_text = _preset_defaults(f.name) if recipe_fields else f"default: {f.default!r}"
        kwargs["help"] = f"{f.metadata['help']} ({default_text})".replace("%", "%%")
        if f.type in ("bool", bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[str(f.type)]
            kwargs["metavar"] = f.name.upper()
            if f.metadata["choices"]:
                kwargs["choices"] = f.metadata["choices"]
                kwargs.pop("metavar")
        group.add_argument(f"--{_flag(f.name)}", **kwargs)


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Train a Perceiver IO classifier on MNIST or Fashion-MNIST. Hardware and precision come from the "
                    "accelerate config: `accelerate launch --config_file accelerate_configs/X.yaml train.py [flags]`.",
    )
    parser.add_argument("--preset", choices=list(PRESETS), default=argparse.SUPPRESS,
                        help="Named recipe to start from; every recipe flag below overrides one of its fields "
                             "(default: the --dataset's own, see there; or the run's saved recipe with --resume).")
    _add_fields(parser.add_argument_group("run options"), RunOptions, recipe_fields=False)
    _add_fields(parser.add_argument_group("recipe (each overrides the preset)"), Recipe, recipe_fields=True)
    return parser


@dataclass
class ParsedArgs:
    """What the user asked for: the preset name (if given) and the explicitly given overrides."""

    preset: str | None
    recipe_overrides: dict[str, Any]
    options: RunOptions


def parse_args(argv: Sequence[str] | None = None, prog: str = "train.py") -> ParsedArgs:
    """Parse the command line; only flags actually given are kept as overrides."""
    given = vars(build_parser(prog).parse_args(argv))
    recipe_names = {f.name for f in fields(Recipe)}
    options = RunOptions(**{k: v for k, v in given.items() if k in {f.name for f in fields(RunOptions)}})
    overrides = {k: v for k, v in given.items() if k in recipe_names}
    parsed = ParsedArgs(given.get("preset"), overrides, options.validate())
    # Checked here, before train.py's heavy imports, so that a bad value is told at once: a fresh run's whole recipe,
    # a resumed run's given values against their limits (its recipe is the one it saved, read later).
    if options.resume:
        _check_limits(Recipe, overrides)
    else:
        resolve_recipe(parsed)
    return parsed


def preset_name(args: ParsedArgs) -> str:
    """The preset a fresh run starts from: the one given, else its dataset's (``default`` for MNIST)."""
    return args.preset or DATASETS[args.recipe_overrides.get("dataset", Recipe.dataset)].preset


def resolve_recipe(args: ParsedArgs, saved: Recipe | None = None) -> Recipe:
    """The recipe to train: the saved one when resuming (else the preset), with the given flags on top."""
    base = saved if saved is not None and args.preset is None else preset(preset_name(args))
    return dataclasses.replace(base, **args.recipe_overrides).validate()


def default_run_name(name: str) -> str:
    return f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
