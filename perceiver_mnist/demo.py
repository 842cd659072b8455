"""The demo page: draw a digit or a garment (or upload a picture) and see what the model answers and where its
latents look.

Everything the page shows is computed by ``Demo.update``, without Gradio: ``predict.preprocess`` (the one
preprocessing, as predict.py applies it), one forward pass that returns both the classes and the encoder's
cross-attention (``PerceiverClassifier.attend``), the maps averaged as figures.py averages them (``pixel_maps``),
drawn with numpy and PIL: a matplotlib figure per stroke would cost more than a whole update may.

Gradio is an optional extra (``pip install -e ".[demo]"``): only ``build_app`` and ``serve`` import it.
"""
from __future__ import annotations

import errno
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .config import preset_of
from .data import to_float
from .datasets import DATASETS
from .errors import UserError
from .model import count_parameters, load_model, pixel_maps
from .predict import NotAPicture, TOP, open_picture, preprocess
from .runs import read_config

DOCS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
SEEN_SIDE = 224        # the 28x28 input shown 8x, nearest-neighbour: one square per pixel the model reads
TILE = 112             # one attention map, 4x
MAX_LATENT_MAPS = 16   # more latents than this: the first ones are drawn
OVERLAY = 0.6          # weight of the heat map over the picture (figures.py's attention figure uses the same)
CANVAS = 336           # the sketchpad's side in pixels (12x the model's input)
BRUSH = 12             # the pen's radius on it: strokes about as thick, relative to the digit, as MNIST's


def prompt(item: str) -> str:
    """What the page asks for, for a model of ``item``s (``DatasetInfo.item``)."""
    return f"Draw a {item} on the canvas, or upload a picture of one."


def examples_dir(dataset: str) -> str:
    """The folder of example pictures the page offers for a model of ``dataset`` (in a checkout only)."""
    return os.path.join(DOCS_DIR, DATASETS[dataset].examples)


@dataclass
class Update:
    """What the page shows after one drawing or upload."""

    message: str                        # the answer in words, or why there is none
    probabilities: dict[str, float]     # class name -> probability, every class (empty: no answer)
    seen: Image.Image | None            # the 28x28 image the model read, enlarged
    attention: Image.Image | None       # where the latents look, over that image


class Demo:
    """A trained model (a run directory or a folder written by ``export.py --format hf``) and what the page says
    about it."""

    def __init__(self, path: str, run_name: str | None = None):
        self.model = load_model(path)
        dataset = DATASETS[self.model.recipe.dataset]
        self.classes = dataset.classes
        self.item = dataset.item  # "digit", "garment": the page's words
        self.prompt = prompt(self.item)
        self.about = describe(path, run_name, count_parameters(self.model))
        # One token for the whole image (the seed's adapter): a latent can only look at all of it.
        self.has_maps = self.model.adapter.grid != (1, 1)
        import matplotlib  # its colour map once, as a table: nothing of matplotlib runs per update
        self._inferno = (matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
        # Gradio runs each event's handler in a thread of its own, and attend() hooks the model for one pass.
        self._lock = threading.Lock()

    def update(self, picture: Image.Image | None) -> Update:
        """Preprocess a picture, classify it and draw the attention maps; a blank or empty one gets a message."""
        if picture is None:
            return Update(self.prompt, {}, None, None)
        try:
            pixels = preprocess(picture, self.model.recipe.dataset)        # (28, 28) uint8, ink white on black
        except NotAPicture as err:
            return Update(f"No {self.item} found: the picture {err}. {self.prompt}", {}, None, None)
        images = to_float(torch.from_numpy(pixels)[None])                  # (1, 1, 28, 28)
        with self._lock:
            logits, maps = self.model.attend(images)                       # (1, 10), (1, heads, L, rows, cols)
        probs = logits.float().softmax(-1)[0].tolist()
        best = int(np.argmax(probs))
        message = f"**{self.classes[best]}** ({probs[best]:.1%})"
        paper = 255 - pixels                                               # ink dark on paper, as drawn
        if self.has_maps:
            attention = self._draw_attention(paper, *pixel_maps(maps))
        else:
            attention = None
            message += " - this model reads the whole image as one token, so there are no attention maps to draw"
        seen = Image.fromarray(paper).resize((SEEN_SIDE, SEEN_SIDE), Image.Resampling.NEAREST)
        return Update(message, dict(zip(self.classes, probs)), seen, attention)

    def update_from_file(self, path: str | None) -> Update:
        """``update`` of an uploaded file: an unreadable or non-image file gets a message, not an error."""
        if not path:
            return Update(self.prompt, {}, None, None)
        try:
            picture = open_picture(path)
        except NotAPicture as err:
            return Update(f"Cannot use {os.path.basename(path)}: {err}. Upload a PNG, JPEG or other picture of one "
                          f"{self.item}.", {}, None, None)
        return self.update(picture)

    def _heat(self, paper: np.ndarray, heat: torch.Tensor) -> np.ndarray:
        """RGB ``(28, 28, 3)``: a map scaled to its own maximum, in inferno, laid over the picture."""
        level = (heat / heat.max().clamp_min(1e-12) * 255).round().to(torch.uint8).numpy()
        grey = np.repeat(paper[..., None], 3, axis=-1).astype(np.float32)
        return ((1 - OVERLAY) * grey + OVERLAY * self._inferno[level]).round().astype(np.uint8)

    def _draw_attention(self, paper: np.ndarray, mean: torch.Tensor, per_latent: torch.Tensor) -> Image.Image:
        """One picture: all latents together (large, left), then each latent's map (a grid of tiles)."""
        n = min(per_latent.shape[1], MAX_LATENT_MAPS)
        cols = min(4, n)
        rows = (n + cols - 1) // cols
        label, gap, top = 16, 8, 30  # top: room for the badge with the component's name that Gradio lays over it
        big = 2 * TILE + label
        sheet = Image.new("RGB", (gap + big + gap + cols * (TILE + gap), top + max(big, rows * (TILE + label + gap))),
                          "white")
        draw = ImageDraw.Draw(sheet)
        font = ImageFont.load_default(size=12)

        def tile(rgb: np.ndarray, side: int, x: int, y: int, title: str) -> None:
            draw.text((x + side / 2, y + label / 2), title, fill="black", font=font, anchor="mm")
            sheet.paste(Image.fromarray(rgb).resize((side, side), Image.Resampling.NEAREST), (x, y + label))

        shown = f" (maps of the first {n})" if n < per_latent.shape[1] else ""
        tile(self._heat(paper, mean[0]), 2 * TILE, gap, top, f"all {per_latent.shape[1]} latents{shown}")
        left = gap + big + gap
        for k in range(n):
            x, y = left + (k % cols) * (TILE + gap), top + (k // cols) * (TILE + label + gap)
            tile(self._heat(paper, per_latent[0, k]), TILE, x, y, f"latent {k}")
        return sheet


def describe(path: str, run_name: str | None, parameters: int) -> str:
    """One line on the model: its run or folder, preset, parameters and, from the run's events, test accuracy."""
    from .hub import training_summary

    config = read_config(path)
    what = f"run `{run_name}`" if run_name else f"`{os.path.basename(os.path.normpath(path))}`"
    # A run's config.json names its preset (None, in runs older than the datasets' own presets: the default); an
    # exported folder's holds the recipe alone.
    preset = [f"preset `{preset_of(config)}`"] if "preset" in config else []
    parts = [f"Model: {what}", *preset, f"{parameters:,} parameters"]
    summary = training_summary(path)  # None without event files (an exported folder)
    if summary:
        images = f" of {int(summary['test_images']):,} test images" if summary["test_images"] else ""
        epochs = summary["epochs"]
        # A run that --max-steps stopped mid-epoch is at a fraction of an epoch: its steps say where, plainly.
        when = (f"epoch {epochs:g}" if float(epochs).is_integer()
                else f"{summary['steps']:,} steps ({epochs:.2f} epochs)")
        parts.append(f"test accuracy {summary['final']:.2f}%{images} after {when}")
    return ", ".join(parts) + "."


# ----------------------------------------------------------------------------------------------------------
# The page (Gradio)
# ----------------------------------------------------------------------------------------------------------

ABOUT_MAPS = """**Where the latents look.** A Perceiver does not read the image pixel by pixel: a few *latent*
vectors read it through cross-attention, each giving a weight to every patch of the input, and everything after that
works on the latents alone. Each small map is one latent's weights over the patches (averaged over its attention
heads), brightest where it looks most, laid over the 28x28 image the model read; the large map is all latents
together. The maps are scaled each to its own maximum."""


def blank_page() -> dict:
    """The sketchpad's value for a white page: with a background, the pen is the tool selected from the start."""
    return {"background": Image.new("L", (CANVAS, CANVAS), 255), "layers": [], "composite": None}


def require_gradio() -> Any:
    """The gradio module, or a ``UserError`` that says how to install it."""
    # Gradio would report usage to its makers on every launch: a local demo has no business doing so.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ModuleNotFoundError as err:
        if err.name != "gradio":
            raise
        raise UserError('the demo needs Gradio, an optional extra: pip install -e ".[demo]"') from None
    return gradio


def build_app(demo: Demo) -> Any:
    """The Gradio page for ``demo``: a sketchpad and an upload in, the answer and the maps out."""
    gr = require_gradio()

    def outputs(update: Update) -> tuple:
        return update.message, update.probabilities or None, update.seen, update.attention

    def on_draw(value: dict | None) -> tuple:
        # The sketchpad's value: background, layers and their composite (None or blank when cleared).
        picture = value.get("composite") if isinstance(value, dict) else value
        return outputs(demo.update(picture))

    def on_upload(path: str | None) -> tuple:
        return outputs(demo.update_from_file(path))

    with gr.Blocks(title="perceiver-mnist demo") as app:
        gr.Markdown(f"## Draw a {demo.item}, see the Perceiver think\n{demo.about}")
        with gr.Row():
            with gr.Column(scale=1):
                pad = gr.Sketchpad(blank_page(), label="Draw here", type="pil", image_mode="L", format="png",
                                   canvas_size=(CANVAS, CANVAS), fixed_canvas=True, layers=False, transforms=(),
                                   brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=BRUSH),
                                   elem_id="sketchpad")
                # Any file: a non-image gets our message on the page, not an error from Gradio.
                upload = gr.File(label="... or upload a picture", type="filepath",
                                 elem_id="upload")
                examples = examples_dir(demo.model.recipe.dataset)
                if os.path.isdir(examples):  # in a checkout; an installed package has no docs/
                    gr.Examples([[os.path.join(examples, n)] for n in sorted(os.listdir(examples))],
                                inputs=[upload], label="Example pictures")
            with gr.Column(scale=1):
                message = gr.Markdown(demo.prompt, elem_id="message")
                with gr.Row():
                    label = gr.Label(num_top_classes=TOP, label="Top classes", elem_id="label", scale=3)
                    seen = gr.Image(label="What the model read (28x28)", type="pil", format="png", height=240,
                                    interactive=False, buttons=[], elem_id="seen", scale=2)
                attention = gr.Image(label="Where the latents look", type="pil", format="png", interactive=False,
                                     buttons=["fullscreen"], elem_id="attention")
                gr.Markdown(ABOUT_MAPS)
        results = [message, label, seen, attention]
        # input: after every stroke. Two strokes in quick succession can hand over their drawings out of order
        # (the older last), and change then follows with the final one: listening to both, the page ends on what is
        # on the canvas. always_last: a burst of strokes sends only the latest drawing.
        quietly = dict(show_progress="hidden", trigger_mode="always_last")
        pad.input(on_draw, pad, results, api_name="draw", **quietly)
        pad.change(on_draw, pad, results, api_name=False, **quietly)
        # Clearing also removes the white page, and with it the pen: give both back, so the next stroke draws.
        pad.clear(lambda: (blank_page(), *outputs(demo.update(None))), None, [pad, *results], show_progress="hidden")
        upload.change(on_upload, upload, results, api_name="classify", show_progress="hidden")
    return app


def check_port(host: str, port: int) -> None:
    """A ``UserError`` naming the port when it cannot be served (in use, or not ours to take)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server will bind: a port left in TIME_WAIT by a demo that just stopped is free to take again.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror:
            raise UserError(f"--host {host} is not an address this machine can serve on; try 127.0.0.1 or "
                            f"0.0.0.0") from None
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:
                raise UserError(f"--host {host} is not an address of this machine; try 127.0.0.1 or 0.0.0.0") \
                    from None
            why = "is in use" if err.errno == errno.EADDRINUSE else f"cannot be used ({err.strerror})"
            raise UserError(f"port {port} on {host} {why}; choose another with --port") from None


def serve(app: Any, host: str, port: int) -> str:
    """Start the page on ``host:port`` (checked first) in a background thread; returns its URL. ``app.close()``
    stops it; ``app.block_thread()`` waits for Ctrl-C."""
    gr = require_gradio()
    check_port(host, port)
    # System fonts: the default theme would fetch its fonts from the internet.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    app.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, theme=theme,
               allowed_paths=[examples_dir(name) for name in DATASETS], max_file_size="20mb")
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"
