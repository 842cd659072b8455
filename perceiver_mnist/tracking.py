"""What a run logs to TensorBoard: the tag names (read back by ``figures``), the prediction grid, the hparams.

Every event is logged at the global optimizer step, also the per-epoch ones (with the ``epoch`` tag giving the
epoch that ended there): one x axis means a resumed run can purge stale events with ``purge_step``.
"""
from __future__ import annotations

import io
from typing import Any, Sequence


# --- scalar tags ---
TRACKER = "tensorboard"                # accelerate's name for the one tracker every run logs to
TRAIN_LOSS_STEP = "train/loss_step"    # every --log-every steps, mean over processes
TRAIN_LOSS = "train/loss"              # per epoch: mean over the epoch's batches
LEARNING_RATE = "train/lr"             # per epoch (at its last step) and at every logged step
SAMPLES_PER_S = "train/samples_per_s"  # per epoch: training images / training wall time (all processes)
SKIPPED_STEPS = "train/skipped_steps"  # per epoch: fp16 steps skipped by the loss scaler so far
TEST_LOSS = "test/loss"
TEST_ACCURACY = "test/accuracy"        # percent, on every test image exactly once
TEST_SAMPLES = "test/num_samples"      # how many predictions the accuracy counts (10,000 on MNIST)
VAL_LOSS = "val/loss"
VAL_ACCURACY = "val/accuracy"
EPOCH = "epoch"                        # the (fractional, for --max-steps) epoch that ended at this step
EPOCH_TIME = "time/epoch_s"            # training wall time of the epoch
EVAL_TIME = "time/eval_s"              # wall time of the epoch's evaluations (test and validation splits)
ELAPSED = "time/elapsed_s"             # wall time since the run started, summed over resumed sessions
MEMORY = "system/rss_mb"               # resident memory of the main process at the epoch's end (leaks show here)
# --- image tag ---
PREDICTIONS = "test/predictions"       # a grid of test digits titled with predicted / true class
VAL_PREDICTIONS = "val/predictions"    # the same of validation images, in a selection run (no test set read)

EPOCH_SCALARS = [TRAIN_LOSS, SAMPLES_PER_S, TEST_LOSS, TEST_ACCURACY, TEST_SAMPLES, EPOCH,
                 EPOCH_TIME, EVAL_TIME, ELAPSED, MEMORY]


def prediction_grid(images: Any, preds: Any, labels: Any, title: str, classes: Sequence[str]) -> bytes:
    """PNG bytes of a grid of digits (tensors ``(N, 1, 28, 28)`` in [0, 1], ``(N,)``, ``(N,)``), each titled
    ``pred / true`` by ``classes``' names (names too long for one line take two); wrong predictions in red with a
    red frame.

    Drawn with PIL, not matplotlib: it runs after every epoch, and a matplotlib figure took 0.7 s on a 2-core CPU,
    longer than a whole training epoch of the ``gpu`` preset on a GPU. This takes milliseconds."""
    from PIL import Image, ImageDraw, ImageFont

    n = len(images)
    cols = min(8, n)
    rows = (n + cols - 1) // cols
    names = list(classes)
    two_lines = max(map(len, names)) > 3                  # "Ankle boot / Sneaker" is wider than a cell
    zoom, margin, head = 3, 12, 30                        # pixels: digit scale, border, figure title
    label = 30 if two_lines else 18                       # pixels: each digit's title
    side = 28 * zoom
    cell_w, cell_h = side + margin, label + side + margin
    sheet = Image.new("RGB", (margin + cols * cell_w, head + rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    small, large = ImageFont.load_default(size=11), ImageFont.load_default(size=12)
    draw.text((sheet.width / 2, head / 2), f"{title}   (predicted / true; mistakes in red)", fill="black",
              font=large, anchor="mm")
    # Ink (1) black on white paper; nearest-neighbour keeps the 28x28 pixels visible.
    digits = (255 * (1 - images.reshape(n, 28, 28).clamp(0, 1))).round().byte().cpu().numpy()
    for i in range(n):
        ok = int(preds[i]) == int(labels[i])
        x0, y0 = margin + (i % cols) * cell_w, head + (i // cols) * cell_h
        colour = "black" if ok else "red"
        text = f"{names[int(preds[i])]} /" + ("\n" if two_lines else " ") + names[int(labels[i])]
        draw.multiline_text((x0 + side / 2, y0 + label / 2), text, fill=colour, font=small, anchor="mm",
                            align="center", spacing=1, stroke_width=0 if ok else 1, stroke_fill=colour)
        top = y0 + label
        sheet.paste(Image.fromarray(digits[i]).resize((side, side), Image.Resampling.NEAREST), (x0, top))
        frame = 1 if ok else 3
        draw.rectangle((x0 - frame, top - frame, x0 + side - 1 + frame, top + side - 1 + frame),
                       outline="lightgray" if ok else "red", width=frame)
    buf = io.BytesIO()
    sheet.save(buf, format="png")
    return buf.getvalue()


def log_png(writer: Any, tag: str, png: bytes, step: int) -> None:
    """Write PNG bytes as a TensorBoard image summary, untouched (figures.py exports them as they are)."""
    from PIL import Image
    from torch.utils.tensorboard.summary import Summary

    width, height = Image.open(io.BytesIO(png)).size
    image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
    _file_writer(writer).add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def log_hparams(writer: Any, hparams: dict[str, Any]) -> None:
    """Declare the run's hparams in its own event file, with test accuracy/loss as the metrics to show."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
    for summary in hparams_summary(clean, {TEST_ACCURACY: 0.0, TEST_LOSS: 0.0}):
        _file_writer(writer).add_summary(summary)


def _file_writer(writer: Any) -> Any:
    """The SummaryWriter's own event file writer, which takes a ready-made summary. torch has no public way to it:
    ``add_image`` would decode and re-encode the PNG, and ``add_hparams`` writes into a new subdirectory (a second
    run in TensorBoard's list). So the private accessor, checked: a torch without it fails in one line."""
    get = getattr(writer, "_get_file_writer", None)
    if get is None:
        import torch

        from .errors import UserError
        raise UserError(f"torch {torch.__version__}'s SummaryWriter has no _get_file_writer, which the run's event "
                        f"file needs; install a torch this suite supports (setup.cfg)")
    return get()
