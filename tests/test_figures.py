"""figures.py on the event files of a real tiny training run."""
from __future__ import annotations

import errno
import json
import os
import shutil
import struct
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from perceiver_mnist import figures, tracking
from perceiver_mnist.datasets import DATASETS
from perceiver_mnist.errors import UserError, run_cli
from perceiver_mnist.events import read_events

from .conftest import run_python, saved_run

CURVES = ["train_loss", "test_loss", "accuracy", "lr"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def keep_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """Every figure make_figures saves from now on, by name: the drawn data (lines, images, texts) stays readable
    after the figure is closed, so a test can check it against what it was drawn from."""
    drawn: dict[str, Figure] = {}
    save = figures.Writer.save

    def keep(self, fig, name):
        drawn[name] = fig
        return save(self, fig, name)

    monkeypatch.setattr(figures.Writer, "save", keep)
    return drawn


@pytest.fixture(scope="module")
def made(tiny_run: Path, data_dir: Path, tmp_path_factory) -> tuple[Path, figures.Report, dict[str, Figure]]:
    out = tmp_path_factory.mktemp("figures")
    with pytest.MonkeyPatch.context() as monkeypatch:
        drawn = keep_figures(monkeypatch)
        report = figures.make_figures(str(tiny_run.parent), tiny_run.name, str(out), data_dir=str(data_dir))
    return out, report, drawn


@dataclass
class ModelOnTestSet:
    """The tiny run's model on the test set, computed here apart from figures.py: what its figures must show."""

    model: torch.nn.Module
    images: np.ndarray   # float (N, 28, 28) in [0, 1], as the model read them
    labels: np.ndarray   # (N,)
    probs: np.ndarray    # (N, 10)

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)


@pytest.fixture(scope="module")
def on_test_set(tiny_run: Path, data_dir: Path) -> ModelOnTestSet:
    from perceiver_mnist.data import load_test_set, to_float
    from perceiver_mnist.model import load_model

    model = load_model(str(tiny_run))
    test = load_test_set(str(data_dir), "mnist")
    with torch.no_grad():
        probs = model(to_float(test.images)).softmax(-1).numpy()
    return ModelOnTestSet(model, to_float(test.images)[:, 0].numpy(), test.labels.numpy(), probs)


def test_every_figure_is_a_png_of_the_expected_size(made):
    out, report, _ = made
    assert report.notices == []
    for name in CURVES:
        assert png_size(out / f"{name}.png") == (960, 600), name  # 6.4 x 4.0 inches at 150 dpi
    assert png_size(out / "summary.png") == (2250, 630)
    for name in ["confusion_matrix", "misclassified", "attention", "image_epoch_1", "image_epoch_2"]:
        width, height = png_size(out / f"{name}.png")
        assert width > 300 and height > 100, name
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(p).name for p in report.written)


def test_the_confusion_matrix_counts_each_test_images_true_and_predicted_class(made, on_test_set):
    ax = made[2]["confusion_matrix"].axes[0]
    t = on_test_set
    pairs = Counter(zip(t.labels.tolist(), t.preds.tolist()))
    expected = np.array([[pairs[(true, pred)] for pred in range(10)] for true in range(10)])
    # Not symmetric: a transposed matrix (rows predicted, columns true) would not pass.
    assert expected.sum() == len(t.labels) and not np.array_equal(expected, expected.T)
    written = np.full((10, 10), -1)
    for text in ax.texts:  # one count per cell, at (x, y) = (predicted, true)
        x, y = text.get_position()
        written[int(y), int(x)] = int(text.get_text())
    assert np.array_equal(written, expected)
    # The colours show the mistakes alone: the diagonal, the right answers, stays blank.
    assert np.array_equal(ax.images[0].get_array(), expected - np.diag(np.diag(expected)))
    assert f"({len(t.labels)} test images, accuracy {100 * np.trace(expected) / len(t.labels):.2f}%)" in ax.get_title()


def test_confusion_matrix_rows_are_true_classes_and_columns_predicted_ones():
    matrix = figures.confusion_matrix(np.array([1, 1, 2, 2]), np.array([0, 1, 1, 1]), classes=3)
    assert matrix.tolist() == [[0, 1, 0], [0, 1, 2], [0, 0, 0]]


def test_the_misclassified_figure_shows_the_most_confident_mistakes_each_really_wrong(made, on_test_set):
    fig, t = made[2]["misclassified"], on_test_set
    classes = DATASETS["mnist"].classes
    wrong = np.flatnonzero(t.preds != t.labels)
    tiles = [ax for ax in fig.axes if ax.images]
    assert len(tiles) == min(24, len(wrong)) > 0  # the tiny run's model makes more than 24: which are shown counts
    shown = []
    for ax in tiles:
        [i] = [k for k in range(len(t.labels)) if np.array_equal(t.images[k], ax.images[0].get_array())]
        pred, true = t.preds[i], t.labels[i]
        assert pred != true, i
        assert ax.get_title().split("\n") == [f"{classes[pred]} ({t.probs[i, pred]:.2f})",
                                              f"true {classes[true]} ({t.probs[i, true]:.2f})"], i
        shown.append(i)
    confidence = t.probs[shown, t.preds[shown]]
    assert list(confidence) == sorted(confidence, reverse=True)  # the most confident mistake first
    left_out = np.setdiff1d(wrong, shown)
    assert confidence.min() >= t.probs[left_out, t.preds[left_out]].max(initial=0.0)
    assert any(f"{len(wrong)} of {len(t.labels)} test images wrong" in text.get_text() for text in fig.texts)


def test_the_attention_figure_shows_each_latents_weights_over_its_patches(made, on_test_set):
    fig, t = made[2]["attention"], on_test_set
    with torch.no_grad():  # (6, latents, 4, 4): the tiny model's weights per token, averaged over its heads
        maps = t.model.attention_maps(torch.from_numpy(t.images[:6, None])).mean(1).numpy()
    latents, patch = maps.shape[1], 28 // maps.shape[-1]
    over_pixels = lambda grid: np.kron(grid, np.ones((patch, patch)))  # noqa: E731  a token's weight on its patch
    # The latents look at different places: maps drawn in another latent's place would not pass.
    assert not np.allclose(maps[:, 0], maps[:, 1], atol=1e-3)
    axes = np.array(fig.axes).reshape(6, 2 + latents)  # the tiny model's 4 latents: all of them shown
    for b in range(6):
        assert np.array_equal(axes[b, 0].images[0].get_array(), t.images[b])
        assert axes[b, 0].get_title() == f"true: {DATASETS['mnist'].classes[t.labels[b]]}"
        digit, everyone = axes[b, 1].images
        assert np.array_equal(digit.get_array(), t.images[b])
        assert np.allclose(everyone.get_array(), over_pixels(maps[b].mean(0)), atol=1e-6), b
        for k in range(latents):
            assert np.allclose(axes[b, 2 + k].images[0].get_array(), over_pixels(maps[b, k]), atol=1e-6), (b, k)
            assert axes[b, 2 + k].get_title() == f"latent {k}"


def test_prediction_grids_are_the_png_bytes_train_py_logged(made, tiny_run):
    out, _, _ = made
    grids = read_events(str(tiny_run)).images[tracking.PREDICTIONS]
    assert (out / "image_epoch_2.png").read_bytes() == grids[-1][1]


def test_the_prediction_grid_frames_mistakes_in_red_and_draws_the_digits():
    """train.py's per-epoch grid (PIL): the digits in ink on paper, a red frame around each mistake only."""
    import io

    import torch
    from PIL import Image

    images = torch.zeros(10, 1, 28, 28)
    images[:, :, 10:18, 12:16] = 1.0                      # a bar of ink in every digit
    labels = torch.arange(10)
    digits, clothes = DATASETS["mnist"].classes, DATASETS["fashion-mnist"].classes
    grid = lambda preds, classes=digits: np.asarray(Image.open(io.BytesIO(  # noqa: E731
        tracking.prediction_grid(images, preds, labels, "t", classes))))
    right, wrong = grid(labels.clone()), grid(torch.tensor([0, 1, 2, 9, 4, 5, 6, 7, 8, 9]))
    red = lambda a: ((a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)).sum()  # noqa: E731
    assert red(right) == 0 and red(wrong) > 4 * 84      # a frame of 3 pixels around an 84-pixel square, and text
    assert right.shape == wrong.shape and right.shape[1] == 12 + 8 * 96  # 8 columns of 84 + 12 pixels
    # The first digit's square, exactly: white paper, and the bar (rows 10-17, columns 12-15) in black, 3x larger.
    cell = right[30 + 18:30 + 18 + 84, 12:12 + 84, :3]
    expected = np.full((84, 84, 3), 255, dtype=np.uint8)
    expected[30:54, 36:48] = 0
    assert np.array_equal(cell, expected)
    # Garments' names ("Ankle boot / Sneaker") take two lines: each title 12 pixels taller, the squares the same.
    named = grid(labels.clone(), clothes)
    assert named.shape[0] == right.shape[0] + 2 * 12 and named.shape[1] == right.shape[1]
    assert np.array_equal(named[30 + 30:30 + 30 + 84, 12:12 + 84, :3], expected)
    title = lambda a: (a[30:30 + 18, 12:12 + 84, :3] < 128).any(-1).sum()  # noqa: E731  dark pixels of the 1st
    assert title(named) > 2 * title(right)  # "T-shirt/top /" over "T-shirt/top": more ink than "0 / 0"


def test_curve_data_is_the_logged_scalars(tiny_run):
    events = read_events(str(tiny_run))
    epochs, acc = figures.per_epoch(events, tracking.TEST_ACCURACY)
    assert list(epochs) == [1.0, 2.0]
    assert list(acc) == events.scalars[tracking.TEST_ACCURACY].values
    assert figures.best_epoch(events) == (float(epochs[np.argmax(acc)]), float(max(acc)))
    steps, ep = figures.epoch_axis(events)
    assert steps[0] == 0 and ep[0] == 0 and list(ep[1:]) == [1.0, 2.0]


def test_smoothing_is_tensorboards_debiased_ema():
    values = [1.0, 0.0, 0.0, 1.0]
    expected, last = [], 0.0
    for i, v in enumerate(values, start=1):
        last = 0.9 * last + 0.1 * v
        expected.append(last / (1 - 0.9 ** i))
    assert np.allclose(figures.smooth(values), expected)
    assert figures.smooth([3.0])[0] == 3.0


def test_identical_inputs_give_identical_files(tiny_run, tmp_path):
    a = figures.make_figures(str(tiny_run.parent), tiny_run.name, str(tmp_path / "a"), model_figures=False)
    figures.make_figures(str(tiny_run.parent), tiny_run.name, str(tmp_path / "b"), model_figures=False)
    for path in a.written:
        name = Path(path).name
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_compare_overlays_two_runs_each_with_its_own_curves(tiny_run, tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "runs"
    shutil.copytree(tiny_run, logdir / "a")
    with SummaryWriter(str(logdir / "b")) as writer:  # three epochs, with numbers the tiny run has not
        for epoch, (accuracy, loss) in enumerate([(50.0, 1.5), (70.0, 0.9), (65.0, 1.1)], start=1):
            for tag, value in ((tracking.EPOCH, epoch), (tracking.TEST_ACCURACY, accuracy),
                               (tracking.TEST_LOSS, loss)):
                writer.add_scalar(tag, value, 7 * epoch)
    drawn = keep_figures(monkeypatch)
    report = figures.make_figures(str(logdir), "a", compare=["b"], model_figures=False, fmt="svg")
    ax_acc, ax_loss = drawn["compare"].axes
    assert len(ax_acc.get_lines()) == len(ax_loss.get_lines()) == 2
    colours = {}
    for name in ("a", "b"):
        scalars = read_events(str(logdir / name)).scalars
        epochs = scalars[tracking.EPOCH].values  # logged at the steps of the test numbers
        accuracy, loss = scalars[tracking.TEST_ACCURACY].values, scalars[tracking.TEST_LOSS].values
        [acc_line] = [line for line in ax_acc.get_lines() if line.get_label() == f"{name} (best {max(accuracy):.2f}%)"]
        [loss_line] = [line for line in ax_loss.get_lines() if line.get_label() == name]
        assert list(acc_line.get_xdata()) == epochs and list(acc_line.get_ydata()) == accuracy, name
        assert list(loss_line.get_xdata()) == epochs and list(loss_line.get_ydata()) == loss, name
        assert acc_line.get_color() == loss_line.get_color(), name  # one colour per run, in both panels
        colours[name] = acc_line.get_color()
    assert colours["a"] != colours["b"]
    compare = logdir / "a" / "figures" / "compare.svg"
    assert str(compare) in report.written
    svg = compare.read_text()  # matplotlib keeps each text as an SVG comment beside its glyphs
    assert svg.startswith("<?xml") and "a (best " in svg and "b (best " in svg


def test_missing_tags_are_named_and_the_rest_is_still_made(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    run = tmp_path / "runs" / "partial"
    with SummaryWriter(str(run)) as writer:
        for step in range(1, 21):
            writer.add_scalar(tracking.TRAIN_LOSS_STEP, 1.0 / step, step)
    report = figures.make_figures(str(tmp_path / "runs"), "partial", model_figures=True)
    assert [Path(p).name for p in report.written] == ["train_loss.png"]
    notices = "\n".join(report.notices)
    assert f"test_loss: skipped, the event files have no {tracking.TEST_LOSS}" in notices
    assert "model.safetensors not found" in notices


run_figures = partial(run_python, "figures.py")


@pytest.mark.parametrize("code, strerror, message", [
    (errno.ENOSPC, "No space left on device", "cannot write /x (No space left on device); free some space or "
                                              "choose a writable location"),
    (errno.EACCES, "Permission denied", "cannot access /x (Permission denied); fix its permissions or choose "
                                        "another location"),
])
def test_a_full_or_forbidden_disk_is_one_line_and_other_os_errors_stay_bugs(code, strerror, message, capsys):
    def disk_error():
        raise OSError(code, strerror, "/x")

    with pytest.raises(SystemExit) as exit_:
        run_cli(disk_error, "figures.py")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"figures.py: error: {message} (--logdir, --data-dir, --out)\n"

    def bug():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/nope")

    with pytest.raises(FileNotFoundError):
        run_cli(bug, "figures.py")


def test_unknown_run_lists_the_existing_ones(tiny_run):
    result = run_figures("--logdir", str(tiny_run.parent), "--run", "nope")
    assert result.returncode == 2
    assert result.stderr.strip() == f"figures.py: error: no run named 'nope' (runs in {tiny_run.parent}: tiny)"


def test_a_run_without_event_files_is_a_clear_error(tmp_path):
    run = tmp_path / "runs" / "empty"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    result = run_figures("--logdir", str(tmp_path / "runs"), "--run", "empty", "--no-model")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has no TensorBoard event files" in result.stderr.strip().splitlines()[-1]


def test_a_failed_write_is_one_error_and_keeps_the_earlier_figure(tiny_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train_loss.png").write_bytes(b"an earlier figure")
    (out / f"train_loss.png.tmp{os.getpid()}").mkdir()  # where the new figure would be written: a write error
    with pytest.raises(UserError, match=r"cannot write .*train_loss\.png \(Is a directory\); free some space"):
        figures.make_figures(str(tiny_run.parent), tiny_run.name, str(out), model_figures=False)
    assert (out / "train_loss.png").read_bytes() == b"an earlier figure"


def test_figures_need_no_training_code(tiny_run, tmp_path):
    code = ("import sys; from perceiver_mnist.figures import make_figures; "
            f"make_figures({str(tiny_run.parent)!r}, 'tiny', {str(tmp_path)!r}, model_figures=False); "
            "bad = [m for m in ('torch', 'accelerate', 'perceiver_mnist.engine') if m in sys.modules]; "
            "assert not bad, bad")
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]


def test_model_figures_need_only_the_test_files_and_survive_odd_saved_options(tiny_run, data_dir, tmp_path,
                                                                              monkeypatch):
    run = tmp_path / "runs" / "r"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "options": ["not", "a", "dict"]}))
    test_only = tmp_path / "data" / "MNIST" / "raw"
    test_only.mkdir(parents=True)
    for name in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        shutil.copy(data_dir / "MNIST" / "raw" / name, test_only / name)
    monkeypatch.chdir(tmp_path)  # the saved options are unusable: the default ./data is where the data is
    report = figures.make_figures(str(run.parent), "r", str(tmp_path / "out"))
    assert report.notices == []
    assert png_size(tmp_path / "out" / "confusion_matrix.png")[0] > 300


def test_model_figures_name_the_classes_of_the_runs_dataset(data_dir, tmp_path, monkeypatch):
    import matplotlib.text

    run = tmp_path / "runs" / "clothes"
    saved_run(run, dataset="fashion-mnist")  # an untrained model: it makes mistakes to show
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:  # synthetic test images stand in for clothes
        shutil.copy(data_dir / "MNIST" / "raw" / name, raw / name)
    drawn = keep_figures(monkeypatch)
    figures.make_figures(str(run.parent), "clothes", str(tmp_path / "out"), data_dir=str(tmp_path / "data"))
    texts = {name: [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_visible()]
             for name, fig in drawn.items()}
    clothes = DATASETS["fashion-mnist"].classes
    assert [t for t in texts["confusion_matrix"] if t in clothes] == [*clothes, *clothes]  # both axes, in order
    assert any(t.startswith(clothes) and "\ntrue " in t for t in texts["misclassified"])
    assert any(t.startswith("true: ") and t[6:] in clothes for t in texts["attention"])
