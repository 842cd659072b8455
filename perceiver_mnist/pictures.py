"""MNIST digits redrawn the way users' pictures come: enlarged, dark ink on paper, off-centre, in colour, as JPEG
photos (``TRANSFORMS``); and degraded the way scans and pens differ from MNIST's strokes: blurred, shrunk and
scaled back up, thinner or thicker (``DEGRADATIONS``). The tests check that ``predict.preprocess`` brings each
transform back to its original 28x28; bench/predict_check.py and bench/robustness.py measure the model's accuracy on
them. Deterministic: the same digit and seed give the same file.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

PAPER, INK = (244, 240, 228), (20, 40, 140)  # cream paper, blue ballpoint: the RGB and photo pictures


def _resized(pixels: np.ndarray, side: int) -> Image.Image:
    """A grey picture scaled to ``side`` x ``side`` smoothly (bicubic), as a drawing program exports it."""
    return Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC)


def _ink_on_paper(ink: np.ndarray) -> np.ndarray:
    """RGB float pixels of blue ink on cream paper, from an ink coverage in [0, 1] of shape ``(h, w)``."""
    return (1 - ink[..., None]) * np.array(PAPER) + ink[..., None] * np.array(INK)


def enlarged(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """White on black as in MNIST, 4x larger, smoothly (bicubic), as a drawing program would export it."""
    return _resized(digit, 112)


def inverted(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Black ink on white paper, 3x larger."""
    return _resized(255 - digit, 84)


def off_centre(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Black on white, 2x larger, somewhere near a corner of a wider 200x150 page."""
    page = Image.new("L", (200, 150), 255)
    left, top = int(rng.integers(4, 40)), int(rng.integers(4, 30))
    if rng.random() < 0.5:
        left = 200 - 56 - left
    page.paste(_resized(255 - digit, 56), (left, top))
    return page


def rgb(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Blue ink on cream paper in RGB, 3x larger."""
    mixed = _ink_on_paper(np.asarray(_resized(digit, 84), dtype=np.float32) / 255)
    return Image.fromarray(np.round(mixed).astype(np.uint8), mode="RGB")


def jpeg(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Black on white, 4x larger, saved as a JPEG of quality 50 (visible ringing around the strokes)."""
    return _resized(255 - digit, 112)


def photo(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Everything at once, like a phone photo: blue ink on cream paper, off-centre on a 240x180 page, lighting that
    falls off across the page, sensor noise (std 6 of 255), then JPEG of quality 75."""
    h, w = 180, 240
    side = 72
    ink = np.zeros((h, w), dtype=np.float32)
    top, left = int(rng.integers(10, h - side - 10)), int(rng.integers(10, w - side - 10))
    ink[top:top + side, left:left + side] = np.asarray(_resized(digit, side), dtype=np.float32) / 255
    light = np.linspace(1.0, 0.8, w, dtype=np.float32)[None, :, None]  # darker towards one side
    mixed = _ink_on_paper(ink) * light
    mixed += rng.normal(0.0, 6.0, mixed.shape)
    return Image.fromarray(np.clip(np.round(mixed), 0, 255).astype(np.uint8), mode="RGB")


# name -> (how the digit is redrawn, the file format it is saved in, save options)
TRANSFORMS: dict[str, tuple[Callable[[np.ndarray, np.random.Generator], Image.Image], str, dict]] = {
    "enlarged": (enlarged, "PNG", {}),
    "inverted": (inverted, "BMP", {}),
    "off_centre": (off_centre, "PNG", {}),
    "rgb": (rgb, "PNG", {}),
    "jpeg": (jpeg, "JPEG", {"quality": 50}),
    "photo": (photo, "JPEG", {"quality": 75}),
}
EXTENSIONS = {"PNG": ".png", "BMP": ".bmp", "JPEG": ".jpg"}


def write_picture(digit: np.ndarray, transform: str, path_stem: str, seed: int = 0) -> str:
    """Redraw a uint8 ``(28, 28)`` digit with one of ``TRANSFORMS`` and save it; returns the file's path."""
    draw, fmt, options = TRANSFORMS[transform]
    path = path_stem + EXTENSIONS[fmt]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    draw(digit, np.random.default_rng(seed)).save(path, fmt, **options)
    return path


def blurred(digit: np.ndarray) -> Image.Image:
    """An out-of-focus scan: a Gaussian blur of 1 pixel (MNIST's strokes are 2-3 pixels wide)."""
    return Image.fromarray(digit).filter(ImageFilter.GaussianBlur(1.0))


def shrunk(side: int) -> Callable[[np.ndarray], Image.Image]:
    """A low-resolution scan: the digit averaged down to ``side`` x ``side`` pixels, then scaled back up to 28x28
    (bicubic), as a viewer enlarges it."""
    def redraw(digit: np.ndarray) -> Image.Image:
        small = Image.fromarray(digit).resize((side, side), Image.Resampling.BOX)
        return small.resize(digit.shape[::-1], Image.Resampling.BICUBIC)
    return redraw


def thinner(digit: np.ndarray) -> Image.Image:
    """A finer pen: strokes eroded by half a pixel on each side (a 3x3 minimum at twice the resolution)."""
    big = Image.fromarray(digit).resize((digit.shape[1] * 2, digit.shape[0] * 2), Image.Resampling.BICUBIC)
    return big.filter(ImageFilter.MinFilter(3)).resize(digit.shape[::-1], Image.Resampling.BOX)


def thicker(digit: np.ndarray) -> Image.Image:
    """A marker: strokes dilated by one pixel on each side (a 3x3 maximum)."""
    return Image.fromarray(digit).filter(ImageFilter.MaxFilter(3))


# name -> how a uint8 (28, 28) digit is degraded; each result is a 28x28 grey picture, white ink on black.
DEGRADATIONS: dict[str, Callable[[np.ndarray], Image.Image]] = {
    "blurred": blurred,
    "shrunk to 14x14": shrunk(14),
    "shrunk to 8x8": shrunk(8),
    "thinner strokes": thinner,
    "thicker strokes": thicker,
}
