"""MNIST digits redrawn the way users' pictures come: enlarged, dark ink on paper, off-centre, in colour, as JPEG
photos. The tests check that ``predict.preprocess`` brings each back to its original 28x28; bench/predict_check.py
measures the model's accuracy on them. Deterministic: the same digit and seed give the same file.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
from PIL import Image

PAPER, INK = (244, 240, 228), (20, 40, 140)  # cream paper, blue ballpoint: the RGB and photo pictures


def enlarged(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """White on black as in MNIST, 4x larger, smoothly (bicubic), as a drawing program would export it."""
    return Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC)


def inverted(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Black ink on white paper, 3x larger."""
    return Image.fromarray(255 - digit).resize((84, 84), Image.Resampling.BICUBIC)


def off_centre(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Black on white, 2x larger, somewhere near a corner of a wider 200x150 page."""
    page = Image.new("L", (200, 150), 255)
    left, top = int(rng.integers(4, 40)), int(rng.integers(4, 30))
    if rng.random() < 0.5:
        left = 200 - 56 - left
    page.paste(Image.fromarray(255 - digit).resize((56, 56), Image.Resampling.BICUBIC), (left, top))
    return page


def rgb(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Blue ink on cream paper in RGB, 3x larger."""
    ink = np.asarray(Image.fromarray(digit).resize((84, 84), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    mixed = (1 - ink[..., None]) * np.array(PAPER) + ink[..., None] * np.array(INK)
    return Image.fromarray(np.round(mixed).astype(np.uint8), mode="RGB")


def jpeg(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Black on white, 4x larger, saved as a JPEG of quality 50 (visible ringing around the strokes)."""
    return Image.fromarray(255 - digit).resize((112, 112), Image.Resampling.BICUBIC)


def photo(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Everything at once, like a phone photo: blue ink on cream paper, off-centre on a 240x180 page, lighting that
    falls off across the page, sensor noise (std 6 of 255), then JPEG of quality 75."""
    h, w = 180, 240
    side = 72
    ink = np.zeros((h, w), dtype=np.float32)
    top, left = int(rng.integers(10, h - side - 10)), int(rng.integers(10, w - side - 10))
    big = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    ink[top:top + side, left:left + side] = np.asarray(big, dtype=np.float32) / 255
    light = np.linspace(1.0, 0.8, w, dtype=np.float32)[None, :, None]  # darker towards one side
    mixed = ((1 - ink[..., None]) * np.array(PAPER) + ink[..., None] * np.array(INK)) * light
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
