"""predict.py: real MNIST test digits (the shipped data/MNIST/raw) redrawn as users' pictures come, brought back
to 28x28 by the preprocessing; end to end on a tiny run, bad files included."""
from __future__ import annotations

import gzip
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceiver_mnist.data import to_float
from perceiver_mnist.datasets import DATASETS
from perceiver_mnist.pictures import TRANSFORMS, write_picture
from perceiver_mnist.predict import NotAPicture, open_picture, preprocess

from .conftest import ROOT, run_python, saved_run

DIGITS = 8  # the first 8 test digits: 7 2 1 0 4 1 4 9


def shipped_test_digits(n: int) -> np.ndarray:
    """The first ``n`` images of the real MNIST test set, read from the .gz that ships with the repository."""
    with gzip.open(ROOT / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz") as f:
        return np.frombuffer(f.read(16 + n * 28 * 28), dtype=np.uint8, offset=16).reshape(n, 28, 28)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images as a fraction of full scale, after the best whole-pixel shift
    (up to one pixel each way) of ``a``: MNIST centres a digit's centre of mass to the nearest whole pixel, so a
    digit whose centre lies near half a pixel may come back one pixel over, and that is as good."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return min(float(np.abs(np.roll(a, (dy, dx), axis=(0, 1)) - b).mean()) / 255
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def half_pixel_cost(digit: np.ndarray) -> float:
    """How far the digit is from itself moved half a pixel down and right (each pixel the mean of four)."""
    d = np.pad(digit.astype(np.float64), ((0, 1), (0, 1)))
    moved = (d[:-1, :-1] + d[1:, :-1] + d[:-1, 1:] + d[1:, 1:]) / 4
    return float(np.abs(moved - digit).mean()) / 255


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return shipped_test_digits(DIGITS)


def test_a_raw_mnist_digit_comes_back_unchanged(digits):
    # Already 20 pixels high and centred: nothing to do, up to the rounding of a whole-pixel centring.
    for digit in digits:
        assert difference(preprocess(Image.fromarray(digit)), digit) < 0.002  # half a grey level per pixel


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_pictures_of_mnist_digits_come_back_close_to_the_original(transform, digits, tmp_path):
    """The tolerance is what the lost pixel grid allows. An enlarged picture no longer says where the original
    pixels lay, so cropping and shrinking it again can land up to half a pixel off: each digit must come back at
    least as close as the original digit moved by half a pixel. Measured on the first 300 test digits: 0.45-0.66
    of that on average per transform, 1.01 for the worst digit of 1,800; for these 8 at most 0.73."""
    ratios = []
    for i, digit in enumerate(digits):
        path = write_picture(digit, transform, str(tmp_path / f"{i}"), seed=i)
        ratios.append(difference(preprocess(open_picture(path)), digit) / half_pixel_cost(digit))
    assert max(ratios) < 1.0, ratios
    assert np.mean(ratios) < 0.75, ratios


def inverted_enlarged(digit: np.ndarray) -> np.ndarray:
    return 255 - np.asarray(Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC))


def test_noise_and_specks_do_not_move_the_crop(digits):
    clean = inverted_enlarged(digits[0])
    rng = np.random.default_rng(0)
    noisy = clean.astype(np.float64) + rng.normal(0.0, 20.0, clean.shape)  # sensor noise, std 20 of 255
    specks = rng.integers(0, 112, (60, 2))
    specks = specks[(np.abs(specks - 56) > 45).any(axis=1)]  # near the edges, far from the digit
    noisy[specks[:, 0], specks[:, 1]] = 0  # dark dust on the paper: each alone would widen a naive crop
    noisy = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    assert len(specks) > 10
    assert difference(preprocess(noisy), preprocess(Image.fromarray(clean))) < 0.3 * half_pixel_cost(digits[0])


@pytest.mark.parametrize("stroke", ["black", "white"])
def test_a_drawing_on_a_transparent_canvas_reads_as_its_strokes(stroke, digits):
    ink = np.asarray(Image.fromarray(digits[1]).resize((112, 112), Image.Resampling.BICUBIC))
    rgba = np.zeros((112, 112, 4), dtype=np.uint8)
    rgba[..., :3] = 0 if stroke == "black" else 255
    rgba[..., 3] = ink  # strokes opaque, the canvas transparent
    expected = preprocess(Image.fromarray(ink))
    assert difference(preprocess(Image.fromarray(rgba, mode="RGBA")), expected) < 0.002


def blank_page(kind: str) -> Image.Image:
    rng = np.random.default_rng(0)
    if kind == "noisy paper":
        return Image.fromarray(np.clip(rng.normal(230, 12, (300, 400)), 0, 255).astype(np.uint8))
    if kind == "unevenly lit paper":
        return Image.fromarray(np.tile(np.linspace(250, 170, 400), (300, 1)).astype(np.uint8))
    return Image.new("L", (300, 400), {"white": 255, "black": 0}[kind])


@pytest.mark.parametrize("kind", ["white", "black", "noisy paper", "unevenly lit paper"])
def test_a_blank_page_holds_no_ink(kind):
    with pytest.raises(NotAPicture, match="holds no ink"):
        preprocess(blank_page(kind))


# ----------------------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------------------

predict = partial(run_python, "predict.py")


@pytest.fixture(scope="module")
def pictures(digits, tmp_path_factory) -> tuple[Path, Path]:
    """A folder of good pictures in several formats and a text file (skipped in a folder: not named like a
    picture), and a folder of bad files."""
    folder = tmp_path_factory.mktemp("pictures")
    for transform in ["rgb", "jpeg", "inverted"]:
        write_picture(digits[0], transform, str(folder / transform))
    (folder / "notes.txt").write_text("not a picture, and not named like one: skipped")
    bad = tmp_path_factory.mktemp("bad")
    (bad / "text.png").write_text("a text file named like a picture")
    png = (folder / "rgb.png").read_bytes()
    (bad / "truncated.png").write_bytes(png[:len(png) // 2])
    blank_page("white").save(bad / "blank.png")
    return folder, bad


def test_predict_py_classifies_a_folder_and_names_each_bad_file(pictures, tiny_run, tmp_path):
    pictures, bad = pictures
    missing = str(tmp_path / "missing.png")
    result = predict("--run", "tiny", "--logdir", str(tiny_run.parent), str(pictures),
                     *sorted(str(p) for p in bad.iterdir()), missing, "--save-preprocessed", str(tmp_path / "seen"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    in_order = ["inverted.bmp", "jpeg.jpg", "rgb.png"]  # sorted; notes.txt is not named like a picture
    assert [line.split(":")[0] for line in lines] == [str(pictures / name) for name in in_order]
    assert all(" top 3: " in line for line in lines)
    errors = dict(line.split(": error: ") for line in result.stderr.splitlines())
    assert errors == {
        str(bad / "blank.png"): "holds no ink (nothing stands more than 20% above the background)",
        str(bad / "text.png"): "not an image Pillow can read",
        str(bad / "truncated.png"): "image file is truncated",
        missing: "No such file or directory",
    }, result.stderr
    saved = sorted(p.name for p in (tmp_path / "seen").iterdir())
    assert saved == ["inverted.png", "jpeg.png", "rgb.png"]
    expected = preprocess(open_picture(str(pictures / "rgb.png")))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "seen" / "rgb.png")), expected)


def test_predict_py_json_is_what_the_model_says_with_the_class_names_of_its_dataset(pictures, tmp_path):
    pictures, bad = pictures[0], str(pictures[1] / "text.png")
    model = saved_run(tmp_path / "fashion", dataset="fashion-mnist")
    result = predict("--model", str(tmp_path / "fashion"), "--json", str(pictures / "jpeg.jpg"), bad)
    assert result.returncode == 2 and result.stderr == ""
    good, failed = (json.loads(line) for line in result.stdout.splitlines())
    assert failed == {"path": bad, "error": "not an image Pillow can read"}
    with torch.no_grad():
        pixels = torch.from_numpy(preprocess(open_picture(str(pictures / "jpeg.jpg")), "fashion-mnist"))[None]
        probs = model(to_float(pixels)).softmax(-1)[0]
    classes = DATASETS["fashion-mnist"].classes
    assert good["label"] == int(probs.argmax()) and good["class"] == classes[good["label"]]
    assert good["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
    assert [t["label"] for t in good["top"]] == probs.topk(3).indices.tolist()
    assert good["top"][0] == {"label": good["label"], "class": good["class"], "probability": good["probability"]}
    assert classes[7] == "Sneaker" and DATASETS["mnist"].classes[7] == "7"  # Zalando's order, torchvision's names


def test_a_garment_is_framed_as_fashion_mnist_frames_it_and_a_digit_as_mnist_does():
    """Zalando scaled each product's longer side to 28 and centred its box; MNIST scaled a digit into 20x20 and
    centred its mass. A picture is brought to the frame of the dataset its model learnt."""
    garment = np.zeros((28, 28), dtype=np.uint8)
    garment[9:19, :] = 60  # a wide, flat item (a sneaker's proportions) ...
    garment[9:19, 20:] = 255  # ... far brighter at one end, so its centre of mass is well off its box's centre
    rng = np.random.default_rng(0)
    picture = TRANSFORMS["photo"][0](garment, rng)  # blue on cream paper, off-centre, uneven light, noise
    framed = preprocess(picture, "fashion-mnist")
    rows, cols = np.flatnonzero(framed.any(1)), np.flatnonzero(framed.any(0))
    assert (cols[0], cols[-1]) == (0, 27)  # its longer side fills the frame
    assert abs((rows[0] + rows[-1]) / 2 - 13.5) <= 0.5 and 9 <= len(rows) <= 11  # its box centred, its shape kept
    digit = preprocess(picture, "mnist")
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    assert 19 <= len(cols) <= 21  # MNIST: the longer side fills 20 pixels
    mass_col = (digit.sum(0) * np.arange(28)).sum() / digit.sum()
    assert abs(mass_col - 14) <= 1 and abs((cols[0] + cols[-1]) / 2 - 13.5) > 1  # centred by mass, not by box


def test_the_shipped_garment_photos_are_framed_like_their_test_images():
    """docs/garments: Fashion-MNIST test images (a sneaker, a trouser) redrawn as phone photos with
    perceiver_mnist.pictures; each comes back with its item's proportions, filling the frame."""
    for name, (width, height) in {"photo_sneaker.jpg": (28, 12), "photo_trouser.jpg": (12, 28)}.items():
        framed = preprocess(open_picture(str(ROOT / "docs" / "garments" / name)), "fashion-mnist")
        box = (int(framed.any(0).sum()), int(framed.any(1).sum()))
        assert abs(box[0] - width) <= 1 and abs(box[1] - height) <= 1, (name, box)


def test_predicting_imports_neither_torchvision_nor_the_compiler(pictures, tmp_path):
    """torchvision's import pulls in torch._dynamo, seconds of start-up: the reading and predicting path needs
    neither (only a download imports torchvision)."""
    saved_run(tmp_path / "run")
    code = ("import sys; from perceiver_mnist.model import load_model; from perceiver_mnist.predict import "
            f"predict_paths; assert predict_paths(load_model({str(tmp_path / 'run')!r}), [{str(pictures[0])!r}]); "
            "bad = [m for m in ('torchvision', 'torch._dynamo') if m in sys.modules]; assert not bad, bad")
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
