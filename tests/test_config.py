"""Recipes, presets and the command line generated from them."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from perceiver_mnist.config import (PRESETS, Recipe, RunOptions, build_parser, diff_model_fields, parse_args,
                                    preset, preset_name, recipe_from_dict, recipe_to_dict, resolve_recipe)
from perceiver_mnist.datasets import DATASETS
from perceiver_mnist.errors import UserError

from .conftest import ROOT, run_python


def test_every_field_is_a_flag_with_help_and_its_default():
    help_text = build_parser().format_help()
    flat = "".join(help_text.split())  # argparse wraps lines at spaces and after hyphens, as wide as the terminal
    for f in dataclasses.fields(Recipe) + dataclasses.fields(RunOptions):
        flag = "--" + f.name.replace("_", "-")
        assert flag in help_text, flag
        described = "".join(f.metadata["help"].split()) + "("  # the whole help text, then the default(s)
        assert described in flat, flag
        assert flat.split(described, 1)[1].startswith(("default:", "presets:")), flag
    lrs = "presets: default=0.002, gpu=0.008, fast=0.002, sprint=0.0075, fashion=0.002, seed=0.0001, tiny=0.002"
    assert lrs in " ".join(help_text.split())


def test_seed_preset_is_the_seed_recipe():
    r = preset("seed")
    assert (r.adapter, r.num_latents, r.latent_dim, r.depth, r.queries_dim, r.query) == \
        ("image", 256, 512, 6, 32, "zeros")
    assert (r.loss, r.optimizer, r.lr, r.scheduler, r.gamma, r.batch_size, r.test_batch_size, r.epochs) == \
        ("mse", "adam", 1e-4, "exponential", 0.9, 64, 1000, 50)
    assert (r.translate, r.rotate, r.scale, r.warmup_epochs, r.grad_clip) == (0, 0.0, 0.0, 0.0, 0.0)
    assert (r.token_dim, r.token_depth, r.token_dropout, r.ema_decay) == (0, 0, 0.0, 0.0)  # the raw 784-dim token


def test_flags_override_the_preset_and_only_given_flags_count():
    args = parse_args(["--preset", "seed", "--lr", "3e-4", "--no-decoder-ff", "--run", "x"])
    assert args.recipe_overrides == {"lr": 3e-4, "decoder_ff": False}
    recipe = resolve_recipe(args)
    assert recipe.lr == 3e-4 and recipe.depth == 6 and args.options.run == "x"


def test_resume_starts_from_the_saved_recipe_not_the_default_preset():
    saved = preset("tiny")
    recipe = resolve_recipe(parse_args(["--resume", "--run", "x", "--epochs", "5"]), saved)
    assert recipe.epochs == 5 and recipe.num_latents == saved.num_latents
    changed = resolve_recipe(parse_args(["--resume", "--run", "x", "--depth", "3"]), saved)
    assert diff_model_fields(saved, changed) == ["depth: 1 -> 3"]
    changed = resolve_recipe(parse_args(["--resume", "--run", "x", "--token-depth", "2"]), saved)
    assert diff_model_fields(saved, changed) == ["token_depth: 1 -> 2"]  # an architecture change: refused on resume


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be positive"),
    (["--batch-size", "-4"], "--batch-size must be positive"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--patch-size", "5"], "--patch-size must divide 28"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--rotate", "1e308"], "--rotate is in degrees and must be at most 180"),
    (["--seed", "-1"], "--seed must be in [0, 2**32)"),
    (["--seed", str(2**32)], "--seed must be in [0, 2**32)"),
    (["--grid-images", "-5"], "--grid-images must be zero or positive"),
    (["--lr-floor", "1"], "--lr-floor must be below 1"),
    (["--lr-floor", "-0.1"], "--lr-floor must be zero or positive"),
    (["--token-dropout", "1"], "--token-dropout must be below 1"),
    (["--token-depth", "-1"], "--token-depth must be zero or positive"),
    (["--token-depth", "1", "--token-dim", "0"], "--token-depth needs a positive --token-dim divisible by"),
    (["--token-depth", "1", "--cross-heads", "3"], "--token-depth needs a positive --token-dim divisible by"),
    (["--token-depth", "1", "--adapter", "image"], "--token-depth needs several tokens to mix"),
    (["--preset", "seed", "--lr-floor", "0.1"], "--lr-floor applies to --scheduler cosine only"),
    (["--hflip", "0.5"], "--hflip mirrors images, but a mirrored MNIST image is no longer of its class"),
    (["--preset", "fashion", "--dataset", "mnist"], "a mirrored MNIST image is no longer of its class"),
    (["--hflip", "1.5"], "--hflip must be at most 1"),
    (["--adapter", "conv", "--patch-size", "7"], "--adapter conv needs an even --patch-size"),
    (["--adapter", "conv", "--patch-size", "6"], "--patch-size must divide 28"),
    (["--stem-depth", "1"], "--stem-depth adds convolutions to the conv adapter's stem, but --adapter is patches"),
    (["--preset", "fast", "--stem-depth", "-1"], "--stem-depth must be zero or positive"),
    (["--mix-prob", "0.5"], "--mix-prob 0.5 sets how often --mixup or --cutmix mixes an image, but both are 0"),
    (["--cutmix", "1", "--mix-prob", "0"], "--mix-prob must be in (0, 1], got 0.0"),
])
def test_impossible_values_are_refused(flags, message):
    with pytest.raises(UserError, match=re.escape(message)):
        resolve_recipe(parse_args(flags))


@pytest.mark.parametrize("change, message", [
    ({"epochs": "5"}, "recipe field 'epochs' is '5', expected int"),
    ({"lr": True}, "recipe field 'lr' is True, expected float"),
    ({"adapter": "bogus"}, "--adapter must be one of ['image', 'pixels', 'patches', 'conv']"),
    ({"epochs": 0}, "--epochs must be positive"),
    ({"depth_typo": 4}, "unknown recipe fields ['depth_typo']"),
])
def test_a_hand_edited_saved_recipe_is_checked_like_flags(change, message):
    values = {**recipe_to_dict(Recipe()), **change}
    assert recipe_from_dict(recipe_to_dict(Recipe()), "config.json") == Recipe()
    with pytest.raises(UserError, match=re.escape(message)):
        recipe_from_dict(values, "config.json")
    with pytest.raises(UserError, match=re.escape("holds no recipe")):
        recipe_from_dict([1, 2], "config.json")  # type: ignore[arg-type]


def test_unknown_preset_is_refused():
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        preset("huge")
    assert set(PRESETS) == {"seed", "default", "gpu", "fast", "sprint", "fashion", "tiny"}


def test_the_gpu_preset_is_the_default_model_at_a_large_batch_with_its_schedule_scaled():
    default, gpu = preset("default"), preset("gpu")
    assert gpu.model_fields() == default.model_fields() and gpu.epochs >= default.epochs
    ratio = gpu.batch_size / default.batch_size
    # the learning rate between the square-root and the linear scaling rules
    assert gpu.batch_size >= 1024 and default.lr * ratio ** 0.5 <= gpu.lr <= default.lr * ratio
    # the weights decay as much per epoch, and the average spans as many epochs
    assert gpu.lr * gpu.weight_decay / gpu.batch_size == pytest.approx(
        default.lr * default.weight_decay / default.batch_size, rel=0.03)
    assert gpu.ema_decay == pytest.approx(default.ema_decay ** ratio, abs=1e-5)


@pytest.mark.parametrize("flags, message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--epochs", "ten"], "invalid int value: 'ten'"),
    (["--keep-checkpoints", "0"], "--keep-checkpoints must be at least 1"),
    (["--run", "a/b"], "--run must be a plain directory name"),
])
def test_bad_flags_get_one_line_and_exit_2(flags, message):
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *flags], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_help_exits_zero_and_lists_presets():
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0 and "{default,gpu,fast,sprint,fashion,seed,tiny}" in result.stdout


def test_a_recipe_saved_before_a_field_was_added_loads_with_the_behaviour_it_was_trained_with():
    saved = recipe_to_dict(preset("default"))
    del saved["lr_floor"]  # written before --lr-floor existed: its cosine decayed to zero
    del saved["elastic"]  # and before --elastic: no elastic distortion
    del saved["token_dropout"]  # and before --token-dropout: every token seen
    del saved["inverted_cross_attn"]  # and before --inverted-cross-attn: the usual softmax over the tokens
    del saved["token_depth"]  # and before --token-depth: no blocks over the input tokens
    for name in ("crop", "hflip", "erase", "stem_channels", "stem_depth", "mixup", "cutmix", "mix_prob", "downscale"):
        del saved[name]  # none of them, no conv stem
    old = recipe_from_dict(saved, "old run")
    assert (old.lr_floor, old.elastic, old.token_dropout, old.inverted_cross_attn, old.token_depth) == (
        0.0, 0.0, 0.0, False, 0)
    assert (old.crop, old.hflip, old.erase, old.adapter, old.stem_depth) == (0, 0.0, 0.0, "patches", 0)
    assert (old.mixup, old.cutmix, old.mix_prob, old.downscale) == (0.0, 0.0, 1.0, 0.0)
    del saved["ema_decay"]  # a field whose default changed is not guessed
    with pytest.raises(UserError, match=re.escape("missing recipe fields ['ema_decay']")):
        recipe_from_dict(saved, "old run")


def test_a_dataset_without_a_preset_trains_its_own_recipe_and_flags_still_override():
    """A user should not need our preset names to get the recipe made for their data."""
    for name, info in DATASETS.items():
        args = parse_args(["--dataset", name])
        assert preset_name(args) == info.preset and resolve_recipe(args) == dataclasses.replace(
            preset(info.preset), dataset=name)
    fashion = resolve_recipe(parse_args(["--dataset", "fashion-mnist", "--hflip", "0", "--epochs", "5"]))
    assert (fashion.hflip, fashion.epochs, fashion.erase) == (0.0, 5, preset("fashion").erase)
    # A preset named is the one trained, whatever the dataset: MNIST's recipe on clothes is a valid experiment.
    chosen = resolve_recipe(parse_args(["--preset", "default", "--dataset", "fashion-mnist"]))
    assert chosen == dataclasses.replace(preset("default"), dataset="fashion-mnist")
    assert preset_name(parse_args([])) == "default" and resolve_recipe(parse_args([])) == Recipe()
    # The distortions that fit each dataset: mirrors for clothes only, rotations and zooms for digits only.
    assert preset("fashion").hflip > 0 and not preset("default").hflip
    assert preset("default").rotate > 0 and not preset("fashion").rotate
    assert resolve_recipe(parse_args(["--preset", "fashion"])).dataset == "fashion-mnist"


def test_bad_values_are_refused_while_parsing():
    """train.py parses before it imports torch: a bad value must fail there, not after seconds of imports."""
    with pytest.raises(UserError, match="--epochs must be positive, got 0"):
        parse_args(["--epochs", "0"])
    with pytest.raises(UserError, match="--lr-floor applies to --scheduler cosine only"):
        parse_args(["--scheduler", "exponential", "--lr-floor", "0.1"])  # a fresh run: the whole recipe
    # A resumed run's recipe is the one it saved: the combination is checked against that, later.
    assert parse_args(["--run", "r", "--resume", "--lr-floor", "0.1"]).recipe_overrides == {"lr_floor": 0.1}
    with pytest.raises(UserError, match="--lr must be a positive number"):
        parse_args(["--run", "r", "--resume", "--lr", "0"])  # a value out of its limits: at once, even so
