"""Predictions on pictures users give (photos, scans, drawings in any format Pillow reads), on the CPU.

A picture is first brought to what the model was trained on, the way the dataset's authors prepared theirs:

    grayscale -> ink bright on black (inverted when the background is light) -> cropped to the ink
      -> longer side scaled to 20 pixels, aspect ratio kept -> centre of mass at the centre of a 28x28 frame
         (MNIST; for Fashion-MNIST: longer side scaled to 28, the crop centred in the frame)

Ink is what differs from the paper, and the paper is a plane fitted to the picture's border, so light that falls
off across a photo is not ink. The crop must not be widened by noise or JPEG artefacts, so it is found in two
steps: pixels clearly inked after a 3x3 median (which removes isolated specks) are the seeds, and the crop grows
from them into the fainter pixels connected to them (the anti-aliased edges of the strokes), but never into ones
that only noise makes bright.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from .config import IMAGE_SIZE
from .datasets import DATASETS
from .errors import UserError

CENTRE = 14.0         # MNIST's centre of mass: every test digit's lies in [13.5, 14.5) of rows and columns 0..27
WORK_SIDE = 1024      # larger pictures are first shrunk to this longer side: a 12 MP photo needs no more
MIN_CONTRAST = 0.2    # ink must stand this far (of black to white) above the background, or the page is blank
STRONG = 0.5          # seeds: at least this fraction of the ink's peak after the median
WEAK = 0.1            # the crop grows into pixels above this fraction of the peak ...
NOISE_SIGMAS = 3.0    # ... and above this many standard deviations of the background's noise
TOP = 3               # predictions listed per picture


class NotAPicture(UserError):
    """A file that cannot be turned into a 28x28 digit: unreadable, not an image, or blank."""


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------

def open_picture(path: str) -> Image.Image:
    """The picture in a file, upright (camera EXIF orientation applied), fully decoded."""
    try:
        # Pillow warns about damaged metadata in files it can still read: the picture is then used, silently.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                image.load()  # decode now: a truncated file fails here, not later
                return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as err:
        raise NotAPicture(f"too large to be a picture of one digit ({err})") from None
    except Image.UnidentifiedImageError:
        raise NotAPicture("not an image Pillow can read") from None
    except OSError as err:  # missing, a directory, no permission, a truncated or corrupt image
        raise NotAPicture(err.strerror or str(err)) from None


def grayscale(image: Image.Image) -> np.ndarray:
    """Luminance in [0, 1] as a float array ``(H, W)``; a transparent background is laid under the ink."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit and float scans: their own range
        values = np.asarray(image.convert("F"), dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = _flatten(image.convert("RGBA"))
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _flatten(image: Image.Image) -> Image.Image:
    """Put a picture with transparency on an opaque background that contrasts with its ink.

    Drawings are often strokes on a transparent canvas, and their colour says nothing about the background:
    black strokes go on white, white strokes on black (a transparent pixel's own colour is arbitrary)."""
    rgba = np.asarray(image, dtype=np.float32) / 255.0
    alpha = rgba[..., 3]
    if alpha.min() == 1.0:  # opaque after all
        return image.convert("RGB")
    luma = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    ink = alpha > 0.5
    dark_ink = not ink.any() or float(np.median(luma[ink])) < 0.5
    background = Image.new("RGBA", image.size, (255, 255, 255, 255) if dark_ink else (0, 0, 0, 255))
    return Image.alpha_composite(background, image).convert("RGB")


# ----------------------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------------------

def _border_mask(shape: tuple[int, int]) -> np.ndarray:
    """The outermost 2% of each side (at least one pixel): the background, in a picture of a digit."""
    h, w = shape
    dy, dx = max(1, h // 50), max(1, w // 50)
    mask = np.zeros(shape, dtype=bool)
    mask[:dy], mask[-dy:], mask[:, :dx], mask[:, -dx:] = True, True, True, True
    return mask


def _background(gray: np.ndarray, border: np.ndarray) -> tuple[np.ndarray, float]:
    """The paper's brightness at every pixel, a plane fitted to the border (light that falls off across a photo),
    and the standard deviation of the noise around it. Border pixels far off the first fit (ink that reaches the
    edge) are left out of the second."""
    h, w = gray.shape
    ys, xs = np.nonzero(border)
    design = np.stack([np.ones(len(ys)), xs / w, ys / h], axis=1)
    values = gray[border].astype(np.float64)
    keep = np.ones(len(values), dtype=bool)
    for _ in range(2):
        coef = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
        residual = values - design @ coef
        noise = 1.4826 * float(np.median(np.abs(residual[keep])))  # a robust standard deviation
        keep = np.abs(residual) <= max(3 * noise, 1 / 255)
    plane = coef[0] + coef[1] * np.arange(w)[None, :] / w + coef[2] * np.arange(h)[:, None] / h
    return plane.astype(np.float32), noise


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 (8-connected) binary dilation."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def _grow(seeds: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The pixels of ``allowed`` 8-connected to ``seeds`` (morphological reconstruction)."""
    grown = seeds & allowed
    for _ in range(sum(allowed.shape)):  # a bound, never reached by strokes: each step adds a pixel or stops
        bigger = _dilate(grown) & allowed
        if np.array_equal(bigger, grown):
            break
        grown = bigger
    return grown


def _median3(a: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(a, mode="F").filter(ImageFilter.MedianFilter(3)), dtype=np.float32)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float array to ``size`` = (width, height): area averaging to shrink (as MNIST's anti-aliasing did),
    bicubic to enlarge."""
    image = Image.fromarray(a, mode="F")
    shrink = size[0] < image.width or size[1] < image.height
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    return np.asarray(image.resize(size, resample), dtype=np.float32)


def preprocess(image: Image.Image, dataset: str = "mnist") -> np.ndarray:
    """A picture of one digit (or garment) -> the uint8 ``(28, 28)`` image the model reads, white ink on black,
    framed as ``dataset``'s images are.

    Raises ``NotAPicture`` when it holds no ink (a blank page)."""
    if max(image.size) > WORK_SIDE:
        image = image.copy()
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    gray = grayscale(image)
    border = _border_mask(gray.shape)
    paper, noise = _background(gray, border)
    light = np.median(gray[border]) > 0.5  # a light background: dark ink on paper
    ink = np.clip(paper - gray if light else gray - paper, 0.0, None)

    smooth = _median3(ink)
    peak = float(smooth.max())
    if peak < MIN_CONTRAST:
        raise NotAPicture(f"holds no ink (nothing stands more than {MIN_CONTRAST:.0%} above the background)")
    seeds = smooth >= STRONG * peak
    inked = _grow(seeds, seeds | (ink >= max(WEAK * peak, NOISE_SIGMAS * noise)))
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # The strokes' own brightness becomes white, as in MNIST (not the median's peak: it dims thin strokes).
    level = float(np.percentile(ink[inked], 99))
    # Only the ink and its immediate surroundings: specks elsewhere in the crop are background.
    digit = (np.clip(ink / level, 0.0, 1.0) * _dilate(inked))[top:bottom, left:right]

    h, w = digit.shape
    info = DATASETS[dataset]
    scale = info.item_box / max(h, w)
    if scale != 1.0:
        digit = np.clip(_resize(digit, (max(1, round(w * scale)), max(1, round(h * scale)))), 0.0, 1.0)
    return _centre(digit, by_mass=info.centring == "mass")


def _centre(digit: np.ndarray, by_mass: bool = True) -> np.ndarray:
    """Paste ``digit`` into a black 28x28 frame with its centre of mass (else its box's centre) on the centre, by a
    whole-pixel shift."""
    h, w = digit.shape
    mass = float(digit.sum())
    if by_mass and mass:
        cy = float((digit.sum(axis=1) * np.arange(h)).sum() / mass)
        cx = float((digit.sum(axis=0) * np.arange(w)).sum() / mass)
        top, left = int(np.floor(CENTRE - cy + 0.5)), int(np.floor(CENTRE - cx + 0.5))
    else:
        top, left = (IMAGE_SIZE - h) // 2, (IMAGE_SIZE - w) // 2
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    # What of the digit falls inside the frame (a lopsided digit can reach past an edge, as in MNIST).
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(IMAGE_SIZE, top + h), min(IMAGE_SIZE, left + w)
    frame[y0:y1, x0:x1] = digit[y0 - top:y1 - top, x0 - left:x1 - left]
    return np.round(frame * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# Predicting
# ----------------------------------------------------------------------------------------------------------

def picture_files(paths: list[str]) -> Iterator[str]:
    """Each PATH, or for a folder the files in it whose extension Pillow can open (sorted, not recursive)."""
    readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    for path in paths:
        if not os.path.isdir(path):
            yield path
            continue
        names = sorted(n for n in os.listdir(path) if not n.startswith(".")
                       and os.path.splitext(n)[1].lower() in readable and os.path.isfile(os.path.join(path, n)))
        if not names:
            yield path  # reported as a failure: the user named a folder and gets nothing from it
        yield from (os.path.join(path, n) for n in names)


@dataclass
class Prediction:
    """One picture's answer: the top classes with their probabilities, or why it failed."""

    path: str
    top: list[tuple[int, float]] = field(default_factory=list)  # (class index, probability), most likely first
    error: str | None = None
    pixels: np.ndarray | None = None  # the 28x28 uint8 image the model read

    def as_dict(self, classes: tuple[str, ...]) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        label, probability = self.top[0]
        return {"path": self.path, "label": label, "class": classes[label], "probability": probability,
                "top": [{"label": k, "class": classes[k], "probability": p} for k, p in self.top]}

    def as_line(self, classes: tuple[str, ...]) -> str:
        if self.error is not None:
            return f"{self.path}: error: {self.error}"
        label, probability = self.top[0]
        alternatives = ", ".join(f"{classes[k]} {p:.3f}" for k, p in self.top)
        return f"{self.path}: {classes[label]} ({probability:.3f})   top {len(self.top)}: {alternatives}"


def predict_paths(model: Any, paths: list[str], batch_size: int = 256) -> list[Prediction]:
    """Preprocess and classify every picture file under ``paths``; a file that fails gets its ``error``."""
    import torch

    from .data import to_float

    results = []
    for path in picture_files(paths):
        result = Prediction(path)
        try:
            if os.path.isdir(path):
                raise NotAPicture("a folder with no picture files in it")
            result.pixels = preprocess(open_picture(path), model.recipe.dataset)
        except NotAPicture as err:
            result.error = str(err)
        results.append(result)
    ready = [r for r in results if r.error is None]
    for start in range(0, len(ready), batch_size):
        batch = ready[start:start + batch_size]
        with torch.no_grad():
            probs = model(to_float(torch.from_numpy(np.stack([r.pixels for r in batch])))).softmax(-1)
        values, indices = probs.topk(min(TOP, probs.shape[-1]), dim=-1)
        for r, v, i in zip(batch, values.tolist(), indices.tolist()):
            r.top = list(zip(i, v))
    return results


def save_preprocessed(results: list[Prediction], out_dir: str) -> None:
    """Write the 28x28 image the model read of each picture to ``out_dir`` as ``NAME.png`` (``NAME-2.png``, ...
    when two pictures share a name)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {out_dir} ({err.strerror or err}); choose another --save-preprocessed") \
            from None
    taken: set[str] = set()
    for result in results:
        if result.pixels is None:
            continue
        stem = os.path.splitext(os.path.basename(result.path))[0]
        name, n = stem, 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name)
        Image.fromarray(result.pixels).save(os.path.join(out_dir, f"{name}.png"))
