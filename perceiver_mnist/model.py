"""The model, top to bottom as in the Perceiver IO diagram:

    image (B, 1, 28, 28) in [0, 1]
      -> input adapter: normalise, cut into tokens, add Fourier positions   (B, N, C)
      -> [optional] linear token projection                                 (B, N, token_dim)
      -> [optional, training only] token dropout: a random subset of tokens (B, N', token_dim)
      -> [optional] token self-attention x token_depth                      (B, N', token_dim)
      -> encoder cross-attention: latents (L, D) attend to the tokens       (B, L, D)
      -> latent self-attention x depth                                      (B, L, D)
      -> decoder cross-attention: one query (1, Q) attends to the latents   (B, 1, Q)
      -> linear head                                                        (B, 1, 10) -> logits (B, 10)

The Perceiver IO core (encoder, latents, decoder, head) is lucidrains' ``perceiver_pytorch.PerceiverIO``; this
file owns what surrounds it: the input adapter and the output query.
"""
from __future__ import annotations

import math
import os
from typing import Callable

import torch
from perceiver_pytorch import PerceiverIO
from perceiver_pytorch.perceiver_io import Attention, FeedForward, PreNorm, dropout_seq
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .config import IMAGE_SIZE, NUM_CLASSES, Recipe, recipe_from_dict
from .datasets import DATASETS
from .errors import UserError
from .runs import WEIGHTS_FILE, read_config


# ----------------------------------------------------------------------------------------------------------
# Input adapters: image -> tokens
# ----------------------------------------------------------------------------------------------------------

def fourier_positions(h: int, w: int, num_bands: int, max_freq: float) -> torch.Tensor:
    """2-D Fourier features of a ``h x w`` grid over [-1, 1]^2: ``(h*w, 2 * (2 * num_bands + 1))``.

    Per axis: sin and cos at ``num_bands`` frequencies from 1 to max_freq/2 cycles, plus the raw coordinate
    (the Perceiver paper's encoding)."""
    ys, xs = torch.linspace(-1, 1, h), torch.linspace(-1, 1, w)
    pos = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(h * w, 2, 1)  # (N, 2, 1)
    freqs = torch.linspace(1.0, max_freq / 2, num_bands)                                   # (bands,)
    angles = pos * freqs * math.pi                                                         # (N, 2, bands)
    return torch.cat([angles.sin(), angles.cos(), pos], dim=-1).reshape(h * w, -1)


class InputAdapter(nn.Module):
    """Normalises a ``(B, 1, 28, 28)`` batch in [0, 1] and turns it into tokens ``(B, N, token_features)``.

    ``grid`` is the (rows, cols) layout of the N tokens over the image, used to draw attention maps."""

    grid: tuple[int, int]
    token_features: int

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.tokenize((images - self.mean) / self.std)

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ImageAdapter(InputAdapter):
    """The seed's adapter: the whole image is ONE token of 784 features (no positions needed)."""

    def __init__(self, mean: float, std: float):
        super().__init__(mean, std)
        self.grid, self.token_features = (1, 1), IMAGE_SIZE * IMAGE_SIZE

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).unsqueeze(1)  # (B, 1, 784)


class PatchAdapter(InputAdapter):
    """Non-overlapping ``p x p`` patches as tokens, each with its patch centre's Fourier position features.

    ``patch_size=1`` is one token per pixel (the ``pixels`` adapter). ``cut`` serves any map laid over the image on
    the same grid: ``channels`` deep, in cells of ``cell`` (``patch_size`` on the image itself)."""

    def __init__(self, mean: float, std: float, patch_size: int, num_freq_bands: int, max_freq: float,
                 channels: int = 1, cell: int | None = None):
        super().__init__(mean, std)
        self.cell = cell or patch_size
        side = IMAGE_SIZE // patch_size
        self.grid = (side, side)
        # Derived from the recipe, so not saved in checkpoints (persistent=False).
        self.register_buffer("pos", fourier_positions(side, side, num_freq_bands, max_freq), persistent=False)
        self.token_features = channels * self.cell * self.cell + self.pos.shape[1]

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        return self.cut(x)

    def cut(self, f: torch.Tensor) -> torch.Tensor:
        """A map ``(B, C, rows * cell, cols * cell)`` -> one token per cell ``(B, N, C * cell * cell + P)``."""
        b, c, q = f.shape[0], f.shape[1], self.cell
        rows, cols = self.grid
        # A view + permute, not F.unfold: im2col is many times slower on the CPU for this job.
        cells = f.reshape(b, c, rows, q, cols, q).permute(0, 2, 4, 1, 3, 5).reshape(b, rows * cols, c * q * q)
        pos = self.pos.to(cells.dtype).expand(b, -1, -1)                                        # (B, N, P)
        return torch.cat([cells, pos], dim=-1)                                                  # (B, N, C*q*q + P)


class ResidualConv(nn.Module):
    """``x + GELU(conv3x3(x))`` at constant width and size. Residual, so that each layer adds a correction to the
    features below it and a deeper stem keeps the shallower one's direct path from pixels to tokens (a zero
    convolution is the identity), which makes added depth less likely to slow training."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + nn.functional.gelu(self.conv(x))                                 # (B, C, H, W)


class ConvAdapter(PatchAdapter):
    """Cells of a small convolutional stem's feature map as tokens, each with its Fourier position features.

    Two 3x3 convolutions, the first of stride 2 (and ``depth`` residual ones after them, ``--stem-depth``), then
    non-overlapping cells of ``patch_size / 2`` on the half-size map: each token covers the same ``patch_size``
    square of the image as a ``patches`` token does, on the same grid. Early convolutions give the tokens local edges
    and strokes that raw pixel patches leave the attention to learn: they make transformers train faster and more
    stably on small images (Xiao et al. 2021, "Early convolutions help transformers see better"; Perceiver IO's own
    ImageNet model has a conv variant). At 16 channels the stem costs about 7 ms of the default's 130 ms step on a
    2-core CPU; its second convolution's work grows with the square of the channels, and each residual one does
    twice the second's."""

    def __init__(self, mean: float, std: float, patch_size: int, channels: int, num_freq_bands: int,
                 max_freq: float, depth: int = 0):
        super().__init__(mean, std, patch_size, num_freq_bands, max_freq, channels=2 * channels,
                         cell=patch_size // 2)
        self.stem = nn.Sequential(
            # Stride 2 first: the same multiply-adds as a full-size first layer would cost, but no full-size
            # activation to store and run GELU over, which made the stem 4x slower on the CPU.
            nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.GELU(),               # (B, c, 14, 14)
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.GELU(),              # (B, 2c, 14, 14)
            *[ResidualConv(2 * channels) for _ in range(depth)])                     # (B, 2c, 14, 14)

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        return self.cut(self.stem(x))                                               # (B, N, 2c*q*q + P)


def build_adapter(recipe: Recipe) -> InputAdapter:
    stats = DATASETS[recipe.dataset]
    if recipe.adapter == "image":
        return ImageAdapter(stats.mean, stats.std)
    if recipe.adapter == "conv":
        return ConvAdapter(stats.mean, stats.std, recipe.patch_size, recipe.stem_channels, recipe.num_freq_bands,
                           recipe.max_freq, recipe.stem_depth)
    patch = 1 if recipe.adapter == "pixels" else recipe.patch_size
    return PatchAdapter(stats.mean, stats.std, patch, recipe.num_freq_bands, recipe.max_freq)


class TokenBlock(nn.Module):
    """A pre-norm transformer block over the input tokens ``(B, N, dim) -> (B, N, dim)``, from perceiver-pytorch's
    own parts. It lets each token see the others before the latents read them."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = PreNorm(dim, Attention(dim, heads=heads, dim_head=dim // heads))
        # A feed-forward twice as wide, not the library's four times: on the CPU one block of the default's width
        # costs 1.26x the step time this way and 1.45x the other.
        self.ff = PreNorm(dim, FeedForward(dim, mult=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)                                     # (B, N, dim)
        return x + self.ff(x)                                    # (B, N, dim)


# ----------------------------------------------------------------------------------------------------------
# The classifier
# ----------------------------------------------------------------------------------------------------------

class PerceiverClassifier(nn.Module):
    """Images ``(B, 1, 28, 28)`` in [0, 1] -> logits ``(B, 10)``."""

    def __init__(self, recipe: Recipe):
        super().__init__()
        self.recipe = recipe  # what it was built from: its dataset names the classes
        self.adapter = build_adapter(recipe)
        width = self.adapter.token_features
        self.project = nn.Linear(width, recipe.token_dim) if recipe.token_dim else nn.Identity()
        self.token_dropout = recipe.token_dropout
        self.token_blocks = nn.Sequential(*[TokenBlock(recipe.token_dim, recipe.cross_heads)
                                            for _ in range(recipe.token_depth)])
        self.perceiver = PerceiverIO(
            dim=recipe.token_dim or width,
            queries_dim=recipe.queries_dim,
            logits_dim=NUM_CLASSES,
            depth=recipe.depth,
            num_latents=recipe.num_latents,
            latent_dim=recipe.latent_dim,
            cross_heads=recipe.cross_heads,
            latent_heads=recipe.latent_heads,
            cross_dim_head=recipe.cross_dim_head,
            latent_dim_head=recipe.latent_dim_head,
            decoder_ff=recipe.decoder_ff,
            inverted_cross_attn=recipe.inverted_cross_attn,
        )
        query = torch.zeros(1, recipe.queries_dim)
        if recipe.query == "zeros":
            # The seed's query: a constant, so not a parameter (and not in the state dict).
            self.register_buffer("query", query, persistent=False)
        else:
            self.query = nn.Parameter(query.normal_(std=0.02))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.project(self.adapter(images))              # (B, N, C)
        if self.training and self.token_dropout:
            # perceiver-pytorch's own token dropout (its seq_dropout_prob), but here rather than inside PerceiverIO,
            # which would drop tokens after the token blocks had already mixed the hidden ones into the rest.
            tokens, _ = dropout_seq(tokens, None, self.token_dropout)  # (B, N', C)
        tokens = self.token_blocks(tokens)                       # (B, N', C)
        out = self.perceiver(tokens, queries=self.query)         # (B, 1, 10)
        return out[:, 0]                                         # (B, 10)

    @torch.no_grad()
    def attend(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, 10)`` and the encoder cross-attention weights ``(B, heads, latents, rows, cols)`` (where
        each latent looks), from one forward pass in eval mode.

        With ``--token-depth`` the token at a grid position has already mixed in the others, so a map says which
        tokens a latent reads, each mostly but not only its own patch."""
        # perceiver-pytorch computes the softmax inline; capture the (normalised) latents and tokens that enter
        # the encoder cross-attention and recompute the weights from its own projections.
        attn = self.perceiver.cross_attend_block.cross_attn.fn
        seen: dict[str, torch.Tensor] = {}

        def grab(module: nn.Module, args: tuple, kwargs: dict) -> None:
            seen["latents"], seen["tokens"] = args[0], kwargs["context"]

        handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
        was_training = self.training
        self.eval()  # --token-dropout (training only) would hide and reorder tokens: the maps cover the whole grid
        try:
            logits = self(images)
        finally:
            handle.remove()
            self.train(was_training)
        h = attn.heads
        q = attn.to_q(seen["latents"])                                # (B, L, h*d)
        k = attn.to_kv(seen["tokens"]).chunk(2, dim=-1)[0]            # (B, N, h*d)
        b, n_lat, n_tok = q.shape[0], q.shape[1], k.shape[1]
        q = q.view(b, n_lat, h, -1).transpose(1, 2)                   # (B, h, L, d)
        k = k.view(b, n_tok, h, -1).transpose(1, 2)                   # (B, h, N, d)
        sim = q @ k.transpose(-1, -2) * attn.scale                    # (B, h, L, N)
        if self.perceiver.inverted_cross_attn:
            # As perceiver-pytorch does it: each token's softmax over the latents, then each latent's weights
            # rescaled to sum to 1 over the tokens.
            weights = sim.softmax(-2)
            weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-8)
        else:
            weights = sim.softmax(-1)
        return logits, weights.view(b, h, n_lat, *self.adapter.grid)

    def attention_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder cross-attention weights ``(B, heads, latents, rows, cols)``: where each latent looks."""
        return self.attend(images)[1]


def pixel_maps(maps: torch.Tensor, size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention weights ``(B, heads, latents, rows, cols)`` as maps over the image's pixels: averaged over heads
    and latents ``(B, size, size)`` (where the latents look together), and per latent, averaged over heads
    ``(B, latents, size, size)``. Each token's weight covers its patch (nearest-neighbour upsampling)."""
    per_latent = maps.mean(dim=1)                                              # (B, L, rows, cols)
    b, n_lat = per_latent.shape[:2]
    up = nn.functional.interpolate(per_latent.flatten(0, 1)[:, None], size=(size, size), mode="nearest")
    per_latent = up.view(b, n_lat, size, size)                                 # (B, L, size, size)
    return per_latent.mean(dim=1), per_latent


def build_model(recipe: Recipe) -> PerceiverClassifier:
    """The network for a recipe, freshly initialised."""
    return PerceiverClassifier(recipe.validate())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_weights(model: nn.Module, path: str) -> None:
    """Load a ``model.safetensors`` into ``model``; a missing, unreadable or corrupt file, or one saved from another
    architecture, is a ``UserError`` (anything else is a bug and keeps its traceback)."""
    try:
        state = load_file(path)
    except SafetensorError as err:
        raise UserError(f"{path} is not a valid safetensors file ({err}); restore it or train again") from None
    except OSError as err:  # missing, a directory, no permission, an I/O error
        raise UserError(f"cannot read {path} ({err.strerror or err})") from None
    # Compared here, so that load_state_dict has nothing left to refuse: its errors would be bugs.
    expected = model.state_dict()
    problems = [f"{len(names)} {kind}, e.g. {names[0]}" for kind, names in (
        ("missing", sorted(set(expected) - set(state))),
        ("unexpected", sorted(set(state) - set(expected))),
        ("of the wrong shape", sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)),
    ) if names]
    if problems:
        raise UserError(f"{path} holds the weights of another model than its config.json's recipe "
                        f"({'; '.join(problems)}); restore the matching pair of files")
    model.load_state_dict(state)


def load_model(path: str, build: Callable[[Recipe], PerceiverClassifier] | None = None) -> PerceiverClassifier:
    """The trained model of a run directory, or of a folder written by ``export.py --format hf``, in eval mode on
    the CPU. Both hold the recipe in ``config.json`` and the weights in ``model.safetensors``. ``build`` makes the
    empty model from the recipe (default ``build_model``; a subclass such as the Hub's ``PerceiverMNIST``)."""
    if not os.path.isdir(path):
        raise UserError(f"{path} is not a folder: give a run directory or a folder written by export.py")
    config = read_config(path)
    recipe = recipe_from_dict(config["recipe"], path)
    weights_path = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(weights_path):
        # A run's config.json also holds its options; an exported folder's holds the recipe alone.
        fix = ("the run is still training or did not finish; wait for it, or resume it to completion"
               if "options" in config else "the folder is not a complete export (export it again)")
        raise UserError(f"{weights_path} not found: {fix}")
    model = (build or build_model)(recipe)
    load_weights(model, weights_path)
    return model.eval()
