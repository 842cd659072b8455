"""Tiny shapes, parameter counts per preset, input adapters, attention maps, loading saved weights."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn
from perceiver_pytorch import PerceiverIO

from perceiver_mnist import build_model, load_model, preset
from perceiver_mnist.config import PRESETS, diff_model_fields, recipe_to_dict
from perceiver_mnist.errors import UserError
from perceiver_mnist.model import PerceiverClassifier, count_parameters, fourier_positions

from .conftest import saved_run


def seed_reference_count() -> int:
    """Parameters of the seed notebook's PerceiverIO(dim=784, queries_dim=32, logits_dim=10, depth=6,
    num_latents=256, latent_dim=512, cross_heads=1, latent_heads=8, cross_dim_head=64, latent_dim_head=64),
    counted by hand from the Perceiver IO layout (pre-norm attention + GEGLU feed-forward blocks)."""
    dim, lat, n_lat, q = 784, 512, 256, 32
    norm = lambda d: 2 * d  # noqa: E731  LayerNorm gain + bias
    attn = lambda qd, cd, inner: qd * inner + cd * 2 * inner + inner * qd + qd  # noqa: E731  q, kv, out(+bias)
    ff = lambda d: d * d * 8 + d * 8 + d * 4 * d + d  # noqa: E731  Linear(d, 8d) -> GEGLU -> Linear(4d, d)
    total = n_lat * lat                                                   # latent array
    total += norm(lat) + norm(dim) + attn(lat, dim, 64)                   # encoder cross-attention
    total += norm(lat) + ff(lat)                                          # its feed-forward
    total += 6 * (norm(lat) + attn(lat, lat, 8 * 64) + norm(lat) + ff(lat))  # 6 latent self-attention blocks
    total += norm(q) + norm(lat) + attn(q, lat, 64)                       # decoder cross-attention
    total += q * 10 + 10                                                  # logits head
    return total


def encoder_contexts(model) -> list[torch.Tensor]:
    """The tokens that each later forward pass hands to the encoder cross-attention, in call order."""
    contexts: list[torch.Tensor] = []
    model.perceiver.cross_attend_block.register_forward_pre_hook(
        lambda module, args, kwargs: contexts.append(kwargs["context"]), with_kwargs=True)
    return contexts


def test_seed_preset_has_the_seed_constructions_parameter_count():
    reference = PerceiverIO(dim=784, queries_dim=32, logits_dim=10, depth=6, num_latents=256, latent_dim=512,
                            cross_heads=1, latent_heads=8, cross_dim_head=64, latent_dim_head=64)
    model = build_model(preset("seed"))
    assert count_parameters(model) == count_parameters(reference) == seed_reference_count() == 28_731_338
    # The seed's query is a fixed zero buffer, not a parameter, and the whole image is a single token.
    assert torch.equal(model.query, torch.zeros(1, 32))
    assert model.adapter(torch.rand(2, 1, 28, 28)).shape == (2, 1, 784)


# Every preset's exact size: a changed layer, width or default moves it. `gpu` is `default`'s model at another batch
# size; `seed`'s count is derived by hand in seed_reference_count.
PARAMETERS = {"default": 1_390_474, "gpu": 1_390_474, "fast": 832_970, "fashion": 1_153_738, "seed": 28_731_338,
              "sprint": 205_898, "tiny": 12_442}


def test_every_preset_has_a_pinned_parameter_count():
    assert sorted(PARAMETERS) == sorted(PRESETS)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_preset_parameter_counts(name):
    assert count_parameters(build_model(preset(name))) == PARAMETERS[name]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_maps_images_to_logits(name):
    model = build_model(preset(name)).eval()
    logits = model(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()


def test_the_sprint_is_the_fast_model_with_fewer_smaller_latents():
    """Still a Perceiver: the conv stem's 49 tokens are read by 4 latents through cross-attention, one latent block,
    and the class is decoded from the latents by the output query (no head beside them)."""
    assert diff_model_fields(preset("fast"), preset("sprint")) == ["num_latents: 8 -> 4", "latent_dim: 128 -> 64",
                                                                   "depth: 2 -> 1"]
    model = build_model(preset("sprint")).eval()
    assert model.adapter(torch.rand(2, 1, 28, 28)).shape[1] == 49
    logits, maps = model.attend(torch.rand(2, 1, 28, 28))
    # 4 cross-attention heads, 4 latents, each attending over the 7x7 grid of tokens
    assert logits.shape == (2, 10) and maps.shape == (2, 4, 4, 7, 7)


@pytest.mark.parametrize("adapter, patch, tokens, features", [
    ("image", 4, 1, 784), ("pixels", 4, 784, 1 + 2 * (2 * 3 + 1)), ("patches", 7, 16, 49 + 2 * (2 * 3 + 1)),
    ("conv", 4, 49, 2 * 16 * 2 * 2 + 2 * (2 * 3 + 1)), ("conv", 14, 4, 2 * 16 * 7 * 7 + 2 * (2 * 3 + 1))])
def test_input_adapters_tokenize(adapter, patch, tokens, features):
    recipe = preset("tiny")
    recipe.adapter, recipe.patch_size, recipe.num_freq_bands = adapter, patch, 3
    recipe.token_depth = 0  # one token per image (--adapter image) has nothing to mix
    model = build_model(recipe)
    assert model.adapter(torch.rand(2, 1, 28, 28)).shape == (2, tokens, features)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_patch_tokens_are_the_normalised_pixels_of_each_patch():
    recipe = preset("tiny")  # 7x7 patches
    model = build_model(recipe)
    image = torch.rand(1, 1, 28, 28)
    tokens = model.adapter(image)
    normalised = (image - model.adapter.mean) / model.adapter.std
    # token 5 = patch row 1, column 1 (4 patches per row)
    assert torch.allclose(tokens[0, 5, :49], normalised[0, 0, 7:14, 7:14].reshape(-1))


def test_conv_tokens_see_their_own_patch_and_its_edge_only():
    """--adapter conv: token (r, c) reads the stem's features over patch (r, c) of the grid, and the stem's 3x3
    convolutions look a few pixels past the patch's edge (rows 4r-3 to 4r+5 for 4x4 patches), no further: a pixel
    changes its own patch's token and at most the tokens next to it."""
    recipe = dataclasses.replace(preset("default"), adapter="conv", patch_size=4)
    adapter = build_model(recipe).adapter
    assert adapter.grid == (7, 7)
    image = torch.rand(1, 1, 28, 28)
    base = adapter(image)[0]                                                    # (49, features)
    for row, col in [(0, 0), (27, 27), (13, 6), (4, 4), (14, 21)]:
        poked = image.clone()
        poked[0, 0, row, col] += 1.0
        changed = {divmod(int(t), 7) for t in (adapter(poked)[0] - base).abs().sum(-1).nonzero()}
        own = (row // 4, col // 4)
        assert own in changed, (row, col)
        assert all(abs(r - own[0]) <= 1 and abs(c - own[1]) <= 1 for r, c in changed), (row, col, changed)
        assert len(changed) < 9  # a 3x3 block of tokens at most, never the whole of it here
    # The image's corner pixel reaches no token but the corner one.
    corner = image.clone()
    corner[0, 0, 0, 0] += 1.0
    assert {int(t) for t in (adapter(corner)[0] - base).abs().sum(-1).nonzero()} == {0}


def test_a_deeper_conv_stem_adds_residual_convolutions_that_pass_the_shallower_stem_through_when_zero():
    """--stem-depth N: N more 3x3 convolutions at the stem's second width, each added to its input, so a zero
    convolution passes the shallower stem's features through unchanged; and with two of them a pixel reaches one
    more cell of tokens on every side than with the two-layer stem."""
    shallow = dataclasses.replace(preset("fashion"), stem_depth=0)
    deep = dataclasses.replace(shallow, stem_depth=2)
    width = 2 * shallow.stem_channels
    assert count_parameters(build_model(deep)) - count_parameters(build_model(shallow)) == 2 * (9 * width + 1) * width
    a, b = build_model(shallow).adapter, build_model(deep).adapter
    b.stem[:4].load_state_dict(a.stem.state_dict())
    image = torch.rand(3, 1, 28, 28)
    assert not torch.allclose(a(image), b(image))
    for block in b.stem[4:]:
        nn.init.zeros_(block.conv.weight)
        nn.init.zeros_(block.conv.bias)
    assert torch.equal(a(image), b(image))
    # Pixel 13 is odd, so the stride-2 convolution sees it at two positions (6 and 7 of 14); each 3x3 convolution
    # after it widens that by one on each side: 5-8 (cells 2-4 of the 2x2 cells) with the two-layer stem, 3-10
    # (cells 1-5) with two residual convolutions more.
    for adapter, (low, high) in ((a, (2, 4)), (build_model(deep).adapter, (1, 5))):
        poked = image[:1].clone()
        poked[0, 0, 13, 13] += 1.0
        changed = {divmod(int(t), 7) for t in (adapter(poked)[0] - adapter(image[:1])[0]).abs().sum(-1).nonzero()}
        assert changed == {(r, c) for r in range(low, high + 1) for c in range(low, high + 1)}, changed


def test_fourier_positions_are_distinct_and_bounded():
    pos = fourier_positions(7, 7, num_bands=4, max_freq=7.0)
    assert pos.shape == (49, 2 * (2 * 4 + 1))
    assert pos.abs().max() <= 1.0 + 1e-6
    assert torch.cdist(pos, pos).fill_diagonal_(1.0).min() > 1e-3  # every position encoded differently


def test_attention_maps_are_distributions_over_the_token_grid():
    model = build_model(preset("tiny")).eval()  # 4 latents over a 4x4 patch grid
    maps = model.attention_maps(torch.rand(2, 1, 28, 28))
    assert maps.shape == (2, 1, 4, 4, 4)
    assert torch.allclose(maps.sum(dim=(-1, -2)), torch.ones(2, 1, 4), atol=1e-5)


@pytest.mark.parametrize("inverted", [False, True])
def test_attention_maps_are_the_weights_the_encoder_applied(inverted):
    recipe = preset("tiny")
    recipe.cross_heads, recipe.inverted_cross_attn = 2, inverted
    model = build_model(recipe).eval()
    assert model.perceiver.inverted_cross_attn is inverted
    attn = model.perceiver.cross_attend_block.cross_attn.fn
    seen: dict[str, torch.Tensor] = {}
    attn.to_kv.register_forward_hook(lambda module, args, out: seen.update(v=out.chunk(2, dim=-1)[1]))
    attn.to_out.register_forward_pre_hook(lambda module, args: seen.update(mixed=args[0]))  # (B, L, h*d)
    images = torch.rand(3, 1, 28, 28)
    model(images)
    mixed, v = seen["mixed"], seen["v"]
    maps = model.attention_maps(images).flatten(-2)                      # (B, h, L, N)
    b, h, n_lat, n_tok = maps.shape
    v = v.view(b, n_tok, h, -1).transpose(1, 2)                          # (B, h, N, d)
    assert torch.allclose((maps @ v).transpose(1, 2).reshape(b, n_lat, -1), mixed, atol=1e-5)


def test_learned_query_is_a_parameter_and_zero_query_is_not():
    learned, zeros = preset("tiny"), preset("tiny")
    zeros.query = "zeros"
    assert count_parameters(build_model(learned)) - count_parameters(build_model(zeros)) == learned.queries_dim


def test_token_dropout_hides_a_fraction_of_the_tokens_from_the_encoder_in_training_only():
    recipe = preset("tiny")  # 16 patch tokens
    recipe.token_depth, recipe.token_dropout = 0, 0.25  # no blocks: the encoder reads the projected patches as cut
    model = build_model(recipe)
    contexts = encoder_contexts(model)
    images = torch.rand(2, 1, 28, 28)
    model.train()(images)
    model.eval()(images)
    assert [c.shape[1] for c in contexts] == [12, 16]
    # the encoder saw a subset of each image's own tokens, not new ones
    kept, full = contexts
    for b in range(2):
        assert (torch.cdist(kept[b], full[b]).min(dim=1).values < 1e-6).all()
    assert model.train().attention_maps(images).shape == (2, 1, 4, 4, 4) and model.training


@pytest.mark.parametrize("token_depth", [0, 1])
def test_token_blocks_let_each_token_see_the_others_before_the_encoder(token_depth):
    recipe = preset("tiny")  # 16 patch tokens of width 16
    recipe.token_depth = token_depth
    model = build_model(recipe).eval()
    contexts = encoder_contexts(model)
    images = torch.rand(1, 1, 28, 28)
    changed = images.clone()
    changed[..., :7, :7] += 0.5  # the first patch only
    model(images)
    model(changed)
    moved = (contexts[0] - contexts[1]).abs().amax(dim=-1)[0] > 1e-6   # (16,): which tokens the change reached
    # Without blocks a token is its own patch, projected; one block already mixes every token with the others.
    assert moved.tolist() == ([True] * 16 if token_depth else [True] + [False] * 15)


def test_token_dropout_hides_tokens_before_the_token_blocks_can_mix_them_into_the_rest():
    recipe = preset("tiny")  # 16 patch tokens of 7x7 pixels
    recipe.token_depth, recipe.token_dropout = 1, 0.25
    model = build_model(recipe).train()
    contexts = encoder_contexts(model)
    images = torch.rand(1, 1, 28, 28)
    unseen = 0
    for patch in range(16):
        changed = images.clone()
        row, col = divmod(patch, 4)
        changed[..., 7 * row:7 * row + 7, 7 * col:7 * col + 7] += 0.5
        for batch in (images, changed):
            torch.manual_seed(0)  # the same tokens dropped in both passes
            model(batch)
        unseen += torch.equal(contexts[-2], contexts[-1])
    assert unseen == 4  # the dropped patches, and only they, leave no trace in what the encoder reads


def test_load_model_gives_back_the_saved_weights(tmp_path):
    saved = saved_run(tmp_path / "run")
    loaded = load_model(str(tmp_path / "run"))
    x = torch.rand(3, 1, 28, 28)
    assert not loaded.training and torch.equal(loaded(x), saved(x))


@pytest.mark.parametrize("case, message", [
    ("truncated", "model.safetensors is not a valid safetensors file (Error while deserializing header"),
    ("garbage", "model.safetensors is not a valid safetensors file"),
    ("other_model", "holds the weights of another model than its config.json's recipe ("),
    ("other_model", " unexpected, e.g. perceiver.layers.1."),  # default has 4 latent blocks, tiny 1
    ("other_shapes", " of the wrong shape, e.g. perceiver.cross_attend_block."),
    ("missing", "model.safetensors not found: the run is still training or did not finish; wait for it, or resume it "
                "to completion"),
    ("a_directory", "model.safetensors not found"),
])
def test_a_bad_weights_file_is_one_clear_error(case, message, tmp_path):
    run = tmp_path / "run"
    saved_run(run, weights_of={"other_model": "default"}.get(case))
    weights = run / "model.safetensors"
    if case == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif case == "garbage":
        weights.write_bytes(b"not a safetensors file")
    elif case == "other_shapes":
        recipe = recipe_to_dict(preset("tiny"))
        (run / "config.json").write_text(json.dumps({"recipe": {**recipe, "latent_dim": 32}, "options": {}}))
    elif case in ("missing", "a_directory"):
        weights.unlink()
        if case == "a_directory":
            weights.mkdir()
    with pytest.raises(UserError) as err:
        load_model(str(run))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_load_model_needs_a_folder(tmp_path):
    with pytest.raises(UserError, match="is not a folder: give a run directory or a folder written by export.py"):
        load_model(str(tmp_path / "nowhere"))


def test_a_bug_while_loading_keeps_its_traceback(tmp_path, monkeypatch):
    saved_run(tmp_path / "run")

    def bug(*args, **kwargs):
        raise TypeError("a bug in our code, not a bad file")

    monkeypatch.setattr(PerceiverClassifier, "load_state_dict", bug)
    with pytest.raises(TypeError, match="a bug in our code"):
        load_model(str(tmp_path / "run"))
