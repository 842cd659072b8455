"""What a run logs to TensorBoard: the tag names (read back by ``figures``), the prediction grid, the hparams.

Every event is logged at the global optimizer step, also the per-epoch ones (with the ``epoch`` tag giving the
epoch that ended there): one x axis means a resumed run can purge stale events with ``purge_step``.
"""
from __future__ import annotations

import io
from typing import Any


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
EVAL_TIME = "time/eval_s"              # wall time of the test evaluation
ELAPSED = "time/elapsed_s"             # wall time since the run started, summed over resumed sessions
MEMORY = "system/rss_mb"               # resident memory of the main process at the epoch's end (leaks show here)
# --- image tag ---
PREDICTIONS = "test/predictions"       # a grid of test digits titled with predicted / true class

EPOCH_SCALARS = [TRAIN_LOSS, SAMPLES_PER_S, TEST_LOSS, TEST_ACCURACY, TEST_SAMPLES, EPOCH,
                 EPOCH_TIME, EVAL_TIME, ELAPSED, MEMORY]


def prediction_grid(images: Any, preds: Any, labels: Any, title: str) -> bytes:
    """PNG bytes of a grid of digits (tensors ``(N, 1, 28, 28)`` in [0, 1], ``(N,)``, ``(N,)``), each titled
    ``pred / true``; wrong predictions in red with a red frame."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = min(8, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        ok = int(preds[i]) == int(labels[i])
        ax.imshow(images[i].reshape(28, 28).cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{int(preds[i])} / {int(labels[i])}", fontsize=9, color="black" if ok else "red",
                     fontweight="normal" if ok else "bold")
        for spine in ax.spines.values():
            spine.set_edgecolor("lightgray" if ok else "red")
            spine.set_linewidth(1 if ok else 2.5)
    fig.suptitle(f"{title}   (predicted / true; mistakes in red)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def log_png(writer: Any, tag: str, png: bytes, step: int) -> None:
    """Write PNG bytes as a TensorBoard image summary, untouched (figures.py exports them as they are)."""
    from PIL import Image
    from torch.utils.tensorboard.summary import Summary

    width, height = Image.open(io.BytesIO(png)).size
    image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def log_hparams(writer: Any, hparams: dict[str, Any]) -> None:
    """Declare the run's hparams in its own event file, with test accuracy/loss as the metrics to show."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
    for summary in hparams_summary(clean, {TEST_ACCURACY: 0.0, TEST_LOSS: 0.0}):
        writer._get_file_writer().add_summary(summary)
