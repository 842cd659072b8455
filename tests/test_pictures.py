"""The degradations of bench/robustness.py do what their names say to a digit."""
from __future__ import annotations

import numpy as np
from PIL import Image

from perceiver_mnist.pictures import DEGRADATIONS, blurred, shrunk, thicker, thinner


def stroke() -> np.ndarray:
    """A 4-pixel-wide vertical bar, white on black, as a 28x28 uint8 digit."""
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[4:24, 12:16] = 255
    return digit


def ink(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture, dtype=np.float32) / 255


def test_every_degradation_keeps_a_28x28_grey_picture() -> None:
    for name, redraw in DEGRADATIONS.items():
        picture = redraw(stroke())
        assert picture.mode == "L" and picture.size == (28, 28), name


def test_thicker_and_thinner_strokes() -> None:
    digit = ink(Image.fromarray(stroke()))
    thick, thin = ink(thicker(stroke())), ink(thinner(stroke()))
    # one pixel more on each side: 6 wide instead of 4, 22 tall instead of 20
    assert (thick > 0.5).sum() == 6 * 22 and (thick >= digit).all()
    # half a pixel less on each side: the two middle columns still full, the edge ones half-covered, nothing outside
    assert np.allclose(thin[14, 10:18], [0, 0, 0.5, 1, 1, 0.5, 0, 0], atol=0.01)
    assert np.allclose(thin[3:6, 13], [0, 0.5, 1], atol=0.01)  # the bar's end too
    assert (thin[digit == 0] < 0.01).all()


def test_blur_spreads_the_ink_without_losing_it() -> None:
    digit, soft = ink(Image.fromarray(stroke())), ink(blurred(stroke()))
    assert abs(soft.sum() - digit.sum()) / digit.sum() < 0.02
    assert soft[14, 11] > 0.1 and soft[14, 13] < 1.0  # ink beside the bar; its edge is no longer solid


def test_shrinking_keeps_only_what_the_small_scan_held() -> None:
    digit = stroke()
    for side in (14, 8):
        back = shrunk(side)(digit)
        small = Image.fromarray(digit).resize((side, side), Image.Resampling.BOX)
        # scaled back down, the degraded digit is the small scan again (up to bicubic's overshoot)
        again = back.resize((side, side), Image.Resampling.BOX)
        assert np.abs(ink(again) - ink(small)).max() < 0.2, side
    # 8x8 loses more detail than 14x14: further from the original
    err = {side: np.abs(ink(shrunk(side)(digit)) - ink(Image.fromarray(digit))).mean() for side in (14, 8)}
    assert err[8] > err[14] > 0
