"""Paper-style figures from a run's TensorBoard event files (and, when present, its model and test data).

Curves come from the event files alone: no training code, no GPU. The model figures (confusion matrix, worst
mistakes, attention maps) load ``model.safetensors`` through ``load_model`` and run it on the CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import tracking
from .datasets import DATASETS
from .errors import UserError
from .events import RunEvents, Series, read_events
from .runs import FIGURES_DIR, WEIGHTS_FILE, atomic_path, find_run, read_config

SMOOTHING = 0.9  # TensorBoard's default exponential smoothing of the step-level train loss
STYLE = {
    "figure.dpi": 100, "savefig.dpi": 150, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
    "legend.fontsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "lines.linewidth": 1.6, "svg.hashsalt": "perceiver-mnist",
    "figure.constrained_layout.use": True,
}
CURVE_SIZE = (6.4, 4.0)  # inches; at the default 150 dpi a curve figure is 960 x 600 pixels
BLUE, ORANGE, RED, GREY = "#1f77b4", "#ff7f0e", "#d62728", "#7f7f7f"


@dataclass
class Report:
    """What was written, and what could not be made (one line each)."""

    written: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def smooth(values: list[float], weight: float = SMOOTHING) -> np.ndarray:
    """Debiased exponential moving average, as TensorBoard draws it."""
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return np.asarray(out)


def epoch_axis(events: RunEvents) -> tuple[np.ndarray, np.ndarray]:
    """(steps, epochs) pairs from the ``epoch`` tag, starting at (0, 0): maps the step axis to epochs."""
    series = events.scalars.get(tracking.EPOCH, Series())
    return np.asarray([0] + series.steps, dtype=float), np.asarray([0.0] + series.values)


def per_epoch(events: RunEvents, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """An epoch-level tag against the epoch that ended at each of its steps."""
    series = events.scalars[tag]
    steps, epochs = epoch_axis(events)
    return np.interp(series.steps, steps, epochs), np.asarray(series.values)


def best_epoch(events: RunEvents) -> tuple[float, float]:
    """(epoch, accuracy) of the best test accuracy; the first one on ties."""
    epochs, acc = per_epoch(events, tracking.TEST_ACCURACY)
    i = int(np.argmax(acc))
    return float(epochs[i]), float(acc[i])


# ----------------------------------------------------------------------------------------------------------
# Drawing (each function draws on an axis, so the summary figure reuses them)
# ----------------------------------------------------------------------------------------------------------

def _epochs_on_top(ax, events: RunEvents) -> None:
    steps, epochs = epoch_axis(events)
    if len(steps) > 1:
        top = ax.secondary_xaxis("top", functions=(lambda s: np.interp(s, steps, epochs),
                                                   lambda e: np.interp(e, epochs, steps)))
        top.set_xlabel("epoch")


def draw_train_loss(ax, events: RunEvents, epochs_on_top: bool = True) -> None:
    s = events.scalars[tracking.TRAIN_LOSS_STEP]
    ax.plot(s.steps, s.values, color=BLUE, alpha=0.25, linewidth=0.8, label="logged")
    ax.plot(s.steps, smooth(s.values), color=BLUE, label=f"smoothed ({SMOOTHING})")
    ax.set(xlabel="optimizer step", ylabel="loss", title="Training loss")
    ax.legend(loc="upper right")
    if epochs_on_top:
        _epochs_on_top(ax, events)


def plot_per_epoch(ax, events: RunEvents, tag: str, fmt: str, **style) -> np.ndarray | None:
    """Plot an epoch-level tag against epochs if it was logged; returns its values."""
    if not events.has(tag):
        return None
    x, y = per_epoch(events, tag)
    ax.plot(x, y, fmt, **style)
    return y


def draw_test_loss(ax, events: RunEvents) -> None:
    plot_per_epoch(ax, events, tracking.TEST_LOSS, "o-", color=ORANGE, markersize=3.5, label="test")
    plot_per_epoch(ax, events, tracking.TRAIN_LOSS, "--", color=BLUE, alpha=0.7,
                   label="train (epoch mean, augmented)")
    plot_per_epoch(ax, events, tracking.VAL_LOSS, "s-", color=GREY, markersize=3, label="validation")
    ax.set(xlabel="epoch", ylabel="loss", title="Loss per epoch")
    ax.legend(loc="upper right")


def draw_accuracy(ax, events: RunEvents) -> None:
    y = plot_per_epoch(ax, events, tracking.TEST_ACCURACY, "o-", color=ORANGE, markersize=3.5,
                       label="test (all images)")
    plot_per_epoch(ax, events, tracking.VAL_ACCURACY, "s-", color=GREY, markersize=3, label="validation")
    be, ba = best_epoch(events)
    ax.plot([be], [ba], "*", color=RED, markersize=12, zorder=5, label=f"best: {ba:.2f}% (epoch {be:g})")
    ax.annotate(f"{ba:.2f}%", (be, ba), textcoords="offset points", xytext=(0, 8), ha="center", color=RED)
    low = float(np.percentile(y, 10)) if len(y) > 3 else float(np.min(y))
    ax.set_ylim(max(0.0, low - 1.0), min(100.0, ba + 1.0))
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Test accuracy")
    ax.legend(loc="lower right")


def draw_lr(ax, events: RunEvents) -> None:
    s = events.scalars[tracking.LEARNING_RATE]
    ax.plot(s.steps, s.values, color=BLUE)
    ax.set(xlabel="optimizer step", ylabel="learning rate", title="Learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    _epochs_on_top(ax, events)


# ----------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Writer:
    out_dir: str
    fmt: str
    dpi: int
    report: Report

    def save(self, fig, name: str) -> None:
        import matplotlib.pyplot as plt
        path = os.path.join(self.out_dir, f"{name}.{self.fmt}")
        # No timestamps or version strings in the files: identical inputs give identical bytes.
        metadata = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
                    "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}[self.fmt]
        try:  # a failed write (full disk) leaves an earlier figure of that name intact
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=self.fmt, dpi=self.dpi, metadata=metadata)
        except OSError as err:
            raise UserError(f"cannot write {path} ({err.strerror or err}); free some space or choose a writable "
                            f"--out") from None
        finally:
            plt.close(fig)
        self.report.written.append(path)

    def attempt(self, name: str, needs: list[str], events: RunEvents | None, draw: Callable[[], None]) -> None:
        """Draw one figure if its tags were logged; otherwise record which tags are missing."""
        missing = [t for t in needs if events is None or not events.has(t)]
        if missing:
            self.report.notices.append(f"{name}: skipped, the event files have no {', '.join(missing)}")
            return
        draw()


def _curve_figures(w: Writer, events: RunEvents | None, run_name: str) -> None:
    import matplotlib.pyplot as plt

    def single(name: str, draw: Callable) -> Callable[[], None]:
        def make() -> None:
            fig, ax = plt.subplots(figsize=CURVE_SIZE)
            draw(ax, events)
            fig.suptitle(run_name, fontsize=9, color=GREY, x=0.99, ha="right")
            w.save(fig, name)
        return make

    acc_tags = [tracking.TEST_ACCURACY, tracking.EPOCH]
    w.attempt("train_loss", [tracking.TRAIN_LOSS_STEP], events, single("train_loss", draw_train_loss))
    w.attempt("test_loss", [tracking.TEST_LOSS, tracking.EPOCH], events, single("test_loss", draw_test_loss))
    w.attempt("accuracy", acc_tags, events, single("accuracy", draw_accuracy))
    w.attempt("lr", [tracking.LEARNING_RATE], events, single("lr", draw_lr))

    def summary() -> None:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        draw_train_loss(axes[0], events, epochs_on_top=False)
        draw_test_loss(axes[1], events)
        draw_accuracy(axes[2], events)
        final = events.scalars[tracking.TEST_ACCURACY].values[-1]
        be, ba = best_epoch(events)
        fig.suptitle(f"{run_name}: final test accuracy {final:.2f}%, best {ba:.2f}% (epoch {be:g})",
                     fontsize=12)
        w.save(fig, "summary")

    w.attempt("summary", [tracking.TRAIN_LOSS_STEP, tracking.TEST_LOSS] + acc_tags, events, summary)


def _prediction_grids(w: Writer, events: RunEvents | None) -> None:
    grids = events.images.get(tracking.PREDICTIONS, []) if events else []
    if not grids:
        w.report.notices.append(f"image_epoch_N: skipped, the event files have no {tracking.PREDICTIONS} images")
        return
    steps, epochs = epoch_axis(events)
    for step, png in grids:
        # The grids are PNGs already (drawn by train.py): written as TensorBoard stored them, whatever --format.
        path = os.path.join(w.out_dir, f"image_epoch_{float(np.interp(step, steps, epochs)):g}.png")
        with open(path, "wb") as f:
            f.write(png)
        w.report.written.append(path)


def compare_runs(w: Writer, runs: dict[str, RunEvents]) -> None:
    """One figure overlaying accuracy and loss per epoch of several runs: on the test set, or on the validation
    split when the runs scored no test set (a recipe search's trials)."""
    import matplotlib.pyplot as plt

    split, acc_tag, loss_tag = "Test", tracking.TEST_ACCURACY, tracking.TEST_LOSS
    if not any(ev.has(tracking.TEST_ACCURACY) for ev in runs.values()) and all(
            ev.has(tracking.VAL_ACCURACY) for ev in runs.values()):
        split, acc_tag, loss_tag = "Validation", tracking.VAL_ACCURACY, tracking.VAL_LOSS
    usable = {name: ev for name, ev in runs.items() if ev.has(acc_tag) and ev.has(tracking.EPOCH)}
    for name in sorted(set(runs) - set(usable)):
        w.report.notices.append(f"compare: {name} skipped, it has no {acc_tag} per epoch")
    if not usable:
        return
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, (name, ev) in enumerate(usable.items()):
        color = plt.get_cmap("tab10")(i % 10)
        best = max(ev.scalars[acc_tag].values)
        plot_per_epoch(ax_acc, ev, acc_tag, "o-", markersize=3, color=color, label=f"{name} (best {best:.2f}%)")
        plot_per_epoch(ax_loss, ev, loss_tag, "o-", markersize=3, color=color, label=name)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{split} accuracy")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{split} loss")
    ax_acc.legend(loc="lower right")
    ax_loss.legend(loc="upper right")
    w.save(fig, "compare")


# ----------------------------------------------------------------------------------------------------------
# Model figures: need model.safetensors and the test set
# ----------------------------------------------------------------------------------------------------------

def _model_figures(w: Writer, run_dir: str, data_dir: str | None) -> None:
    weights = os.path.join(run_dir, WEIGHTS_FILE)
    names = "confusion_matrix, misclassified, attention"
    if not os.path.isfile(weights):
        w.report.notices.append(f"{names}: skipped, {weights} not found (the run has not finished)")
        return
    try:
        import torch

        from .data import run_test_set, to_float
        from .model import load_model
        model = load_model(run_dir)
        test = run_test_set(read_config(run_dir), data_dir)
    except UserError as err:
        w.report.notices.append(f"{names}: skipped, {err}")
        return
    with torch.no_grad():
        probs = torch.cat([model(to_float(test.images[i:i + 1000])).softmax(-1)
                           for i in range(0, len(test), 1000)])
    classes = DATASETS[model.recipe.dataset].classes
    _confusion_matrix(w, probs.argmax(-1).numpy(), test.labels.numpy(), classes)
    _misclassified(w, to_float(test.images).numpy(), probs.numpy(), test.labels.numpy(), classes)
    if model.adapter.grid == (1, 1):
        w.report.notices.append("attention: skipped, the 'image' adapter has a single input token (nothing to map)")
    else:
        _attention(w, model, to_float(test.images[:6]), [classes[k] for k in test.labels[:6].tolist()])


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, classes: int = 10) -> np.ndarray:
    """``(classes, classes)`` counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (labels, preds), 1)
    return matrix


def _confusion_matrix(w: Writer, preds: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> None:
    import matplotlib.pyplot as plt
    matrix = confusion_matrix(preds, labels)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    off_diagonal = matrix - np.diag(np.diag(matrix))
    im = ax.imshow(off_diagonal, cmap="Reds")
    for i in range(10):
        for j in range(10):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="black" if i != j else BLUE, fontweight="bold" if i == j else "normal")
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted class", ylabel="true class",
           title=f"Confusion matrix ({len(labels)} test images, accuracy {100 * np.mean(preds == labels):.2f}%)")
    long_names = max(map(len, classes)) > 2
    ax.set_xticklabels(classes, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticklabels(classes)
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="mistakes (off-diagonal)")
    w.save(fig, "confusion_matrix")


def _misclassified(w: Writer, images: np.ndarray, probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...],
                   n: int = 24) -> None:
    import matplotlib.pyplot as plt
    preds = probs.argmax(1)
    wrong = np.flatnonzero(preds != labels)
    # Worst first: the most confident wrong answers (stable sort: ties keep test-set order).
    wrong = wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:n]
    cols = 8
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.75 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i, 0], cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{classes[preds[i]]} ({probs[i, preds[i]]:.2f})\n"
                     f"true {classes[labels[i]]} ({probs[i, labels[i]]:.2f})",
                     fontsize=8, color=RED)
    fig.suptitle(f"Most confident mistakes: {len(np.flatnonzero(preds != labels))} of {len(labels)} test "
                 f"images wrong (predicted (p) / true (p))")
    w.save(fig, "misclassified")


def _attention(w: Writer, model, images, names: list[str]) -> None:
    import matplotlib.pyplot as plt

    from .model import pixel_maps
    mean, per_latent = pixel_maps(model.attention_maps(images), images.shape[-1])  # (B, H, W), (B, L, H, W)
    mean = mean.numpy()
    show = min(4, per_latent.shape[1])
    fig, axes = plt.subplots(len(images), 2 + show, figsize=(1.7 * (2 + show), 1.8 * len(images) + 0.5),
                             squeeze=False)
    for b in range(len(images)):
        digit = images[b, 0].numpy()
        axes[b, 0].imshow(digit, cmap="gray_r")
        axes[b, 0].set_title(f"true: {names[b]}", fontsize=8)
        axes[b, 1].imshow(digit, cmap="gray_r")
        axes[b, 1].imshow(mean[b], cmap="inferno", alpha=0.6)
        axes[b, 1].set_title("all latents", fontsize=8)
        for k in range(show):
            axes[b, 2 + k].imshow(per_latent[b, k].numpy(), cmap="inferno")
            axes[b, 2 + k].set_title(f"latent {k}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    fig.suptitle("Encoder cross-attention: where the latents look in the input")
    w.save(fig, "attention")


# ----------------------------------------------------------------------------------------------------------

def make_figures(logdir: str, run: str, out_dir: str | None = None, fmt: str = "png", dpi: int = 150,
                 compare: list[str] | None = None, data_dir: str | None = None, model_figures: bool = True) -> Report:
    """Write every figure that the run's files allow; raises ``UserError`` only when nothing could be made."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = find_run(logdir, run)
    compare_dirs = {name: find_run(logdir, name) for name in (compare or [])}
    out_dir = out_dir or os.path.join(run_dir, FIGURES_DIR)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {out_dir} ({err.strerror or err}); choose another --out") from None
    report = Report()
    w = Writer(out_dir, fmt, dpi, report)
    try:
        events: RunEvents | None = read_events(run_dir)
    except UserError as err:
        events = None
        report.notices.append(str(err))
    with plt.rc_context(STYLE):
        _curve_figures(w, events, run)
        _prediction_grids(w, events)
        if compare_dirs:
            runs = {run: events} if events else {}
            for name, path in compare_dirs.items():
                try:
                    runs[name] = read_events(path)
                except UserError as err:
                    report.notices.append(f"compare: {name} skipped, {err}")
            compare_runs(w, runs)
        if model_figures:
            _model_figures(w, run_dir, data_dir)
    if not report.written:
        raise UserError(f"no figure could be made for {run_dir}: " + "; ".join(report.notices))
    return report
