"""Recipes, presets and the command line generated from them."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from perceiver_mnist.config import (PRESETS, Recipe, RunOptions, build_parser, diff_model_fields, parse_args,
                                    preset, resolve_recipe)
from perceiver_mnist.errors import UserError

from .conftest import ROOT


def test_every_field_is_a_flag_with_help_and_its_default():
    help_text = build_parser().format_help()
    for f in dataclasses.fields(Recipe) + dataclasses.fields(RunOptions):
        flag = "--" + f.name.replace("_", "-")
        assert flag in help_text, flag
        assert f.metadata["help"].split()[0] in help_text
    assert "presets: default=0.002, seed=0.0001, tiny=0.002" in " ".join(help_text.split())


def test_seed_preset_is_the_seed_recipe():
    r = preset("seed")
    assert (r.adapter, r.num_latents, r.latent_dim, r.depth, r.queries_dim, r.query) == \
        ("image", 256, 512, 6, 32, "zeros")
    assert (r.loss, r.optimizer, r.lr, r.scheduler, r.gamma, r.batch_size, r.test_batch_size, r.epochs) == \
        ("mse", "adam", 1e-4, "exponential", 0.9, 64, 1000, 50)
    assert (r.translate, r.rotate, r.scale, r.warmup_epochs, r.grad_clip) == (0, 0.0, 0.0, 0.0, 0.0)


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


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be positive"),
    (["--batch-size", "-4"], "--batch-size must be positive"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--patch-size", "5"], "--patch-size must divide 28"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
])
def test_impossible_values_are_refused(flags, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_recipe(parse_args(flags))


def test_unknown_preset_is_refused():
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        preset("huge")
    assert set(PRESETS) == {"seed", "default", "tiny"}


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
    assert result.returncode == 0 and "{default,seed,tiny}" in result.stdout
