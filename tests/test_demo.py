"""demo.py: the page's answers without Gradio, the real app over HTTP (gradio_client), the script's errors, and the
page in a real headless Chromium. One app and one browser serve the tests that can share them."""
from __future__ import annotations

import io
import shutil
import socket
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceiver_mnist import tracking
from perceiver_mnist.demo import SEEN_SIDE, Demo, describe
from perceiver_mnist.pictures import write_picture
from perceiver_mnist.predict import open_picture, predict_paths

from .conftest import ROOT, run_python, saved_run
from .test_predict import blank_page, shipped_test_digits

demo_py = partial(run_python, "demo.py")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A `default`-shaped run (its model, fresh weights): the answers are compared with predict.py's, not with the
    true labels, which a model trained in seconds could not give."""
    path = tmp_path_factory.mktemp("runs") / "demo"
    saved_run(path, "default")
    return path


@pytest.fixture(scope="module")
def demo(model_dir) -> Demo:
    return Demo(str(model_dir), run_name="demo")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    """Real MNIST test digits (shipped with the repository) drawn as users' pictures, and pictures with no digit."""
    folder = tmp_path_factory.mktemp("pictures")
    digits = shipped_test_digits(2)
    paths = {"seven": Path(write_picture(digits[0], "inverted", str(folder / "seven"))),
             "two": Path(write_picture(digits[1], "photo", str(folder / "two")))}
    blank_page("white").save(folder / "blank.png")
    paths["blank"] = folder / "blank.png"
    paths["text"] = folder / "notes.png"
    paths["text"].write_text("a text file named like a picture")
    png = paths["seven"].read_bytes()
    paths["truncated"] = folder / "truncated.png"
    paths["truncated"].write_bytes(png[:len(png) // 2])
    return paths


# ----------------------------------------------------------------------------------------------------------
# What the page shows, without Gradio
# ----------------------------------------------------------------------------------------------------------

def test_an_update_is_what_predict_py_says_with_the_image_it_read_and_the_maps(demo, pictures):
    for name in ("seven", "two"):
        update = demo.update(open_picture(str(pictures[name])))
        [expected] = predict_paths(demo.model, [str(pictures[name])])  # predict.py's preprocessing and model
        assert sum(update.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        top = sorted(update.probabilities.items(), key=lambda kv: -kv[1])[:3]
        assert [demo.classes.index(c) for c, _ in top] == [k for k, _ in expected.top]
        assert [p for _, p in top] == pytest.approx([p for _, p in expected.top], abs=1e-6)
        assert update.message == f"**{top[0][0]}** ({top[0][1]:.1%})"
        # The image the model read, enlarged 8x by whole pixels, ink dark on paper.
        assert update.seen.size == (SEEN_SIDE, SEEN_SIDE)
        read = np.asarray(update.seen)[::SEEN_SIDE // 28, ::SEEN_SIDE // 28]
        assert np.array_equal(read, 255 - expected.pixels)
        # The maps: all latents large, then one tile per latent (the default has 8), in colour.
        attention = np.asarray(update.attention)
        assert attention.ndim == 3 and attention.shape[1] > attention.shape[0] > 224
        assert (attention.std(axis=-1) > 20).mean() > 0.2  # inferno over grey: much of the sheet is coloured


def test_pictures_with_no_digit_get_words_not_errors(demo, pictures):
    blank = demo.update(open_picture(str(pictures["blank"])))
    assert blank.message.startswith("No digit found: the picture holds no ink") and blank.message.endswith(demo.prompt)
    assert blank.probabilities == {} and blank.seen is None and blank.attention is None
    assert demo.update(None).message == demo.prompt == "Draw a digit on the canvas, or upload a picture of one."
    assert demo.update(Image.new("L", (336, 336), 255)).message.startswith("No digit found")  # a cleared canvas
    text = demo.update_from_file(str(pictures["text"]))
    assert text.message.startswith("Cannot use notes.png: not an image Pillow can read") and text.probabilities == {}
    truncated = demo.update_from_file(str(pictures["truncated"]))
    assert truncated.message.startswith("Cannot use truncated.png: image file is truncated")
    assert demo.update(open_picture(str(pictures["seven"]))).probabilities  # and the next picture works


def test_a_model_of_clothes_asks_for_a_garment_and_names_its_classes(tmp_path, pictures):
    saved_run(tmp_path / "clothes", "tiny", dataset="fashion-mnist")
    clothes = Demo(str(tmp_path / "clothes"))
    assert clothes.update(None).message == "Draw a garment on the canvas, or upload a picture of one."
    assert clothes.update(open_picture(str(pictures["blank"]))).message.startswith("No garment found")
    assert clothes.update_from_file(str(pictures["text"])).message.endswith("picture of one garment.")
    answer = clothes.update(open_picture(str(ROOT / "docs" / "garments" / "photo_sneaker.jpg")))
    assert set(answer.probabilities) == {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                         "Sneaker", "Bag", "Ankle boot"}


def test_a_model_that_reads_one_token_says_it_has_no_maps(tmp_path, pictures):
    saved_run(tmp_path / "seed", "tiny", adapter="image", token_dim=0, token_depth=0)
    update = Demo(str(tmp_path / "seed")).update(open_picture(str(pictures["seven"])))
    assert update.attention is None and "one token" in update.message and update.probabilities


def test_the_line_on_the_run_gives_preset_parameters_and_logged_test_accuracy(tiny_run, demo):
    about = Demo(str(tiny_run), run_name="tiny").about
    assert about.startswith("Model: run `tiny`, preset `tiny`, 12,") and "test accuracy " in about
    assert "after epoch 2" in about and "of 90 test images" in about
    # saved_run writes an exported folder's config.json (the recipe alone): no preset to name; no events, no accuracy
    assert demo.about == "Model: run `demo`, 1,390,474 parameters."


def test_a_run_stopped_mid_epoch_is_placed_by_its_steps(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    saved_run(tmp_path / "short", "tiny")
    # Evaluated where --max-steps 400 stopped, in an epoch of 469 steps.
    logged = {tracking.TEST_ACCURACY: 94.0, tracking.TEST_SAMPLES: 10_000, tracking.EPOCH: 400 / 469}
    with SummaryWriter(str(tmp_path / "short")) as writer:
        for tag, value in logged.items():
            writer.add_scalar(tag, value, 400)
    about = describe(str(tmp_path / "short"), "short", 12_442)
    assert "test accuracy 94.00% of 10,000 test images after 400 steps (0.85 epochs)." in about
    assert "epoch 0.8" not in about


# ----------------------------------------------------------------------------------------------------------
# demo.py's errors: one line, exit 2, before any server starts
# ----------------------------------------------------------------------------------------------------------

def test_demo_py_refuses_what_it_cannot_serve_in_one_line(tmp_path, model_dir):
    def refused(result, message: str) -> None:
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == f"demo.py: error: {message}" and result.stdout == ""

    runs = tmp_path / "runs"
    saved_run(runs / "done", "tiny")
    (runs / "training").mkdir()
    shutil.copy(runs / "done" / "config.json", runs / "training")  # started, no model.safetensors yet
    refused(demo_py("--run", "nope", "--logdir", str(runs)), f"no run named 'nope' (runs in {runs}: done, training)")
    refused(demo_py("--run", "training", "--logdir", str(runs)),
            f"{runs / 'training' / 'model.safetensors'} not found: the run is still training or did not finish; "
            "wait for it, or resume it to completion")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused(demo_py("--model", str(model_dir), "--port", str(port)),
                f"port {port} on 127.0.0.1 is in use; choose another with --port")
    without_gradio = run_python("-c", "import runpy, sys; sys.modules['gradio'] = None; "
                                      f"sys.argv = ['demo.py', '--model', {str(model_dir)!r}]; "
                                      "runpy.run_path('demo.py', run_name='__main__')")
    refused(without_gradio, 'the demo needs Gradio, an optional extra: pip install -e ".[demo]"')
    help_text = demo_py("--help").stdout
    assert all(flag in help_text for flag in ("--run", "--model", "--logdir", "--host", "--port"))


def test_without_a_run_the_newest_finished_one_is_shown(tmp_path):
    import os

    from perceiver_mnist.runs import newest_finished_run

    runs = tmp_path / "runs"
    assert newest_finished_run(str(runs)) is None
    for age, name in ((300, "older"), (100, "newer"), (200, "middle")):
        saved_run(runs / name, "tiny")
        os.utime(runs / name / "model.safetensors", (1e9 - age, 1e9 - age))
    (runs / "training").mkdir()
    shutil.copy(runs / "older" / "config.json", runs / "training")  # started, not finished: never chosen
    assert newest_finished_run(str(runs)) == "newer"


def test_a_first_demo_trains_a_model_then_serves_it(data_dir, tmp_path):
    import subprocess
    import sys
    import time

    from .conftest import offline_env

    runs = tmp_path / "runs"
    with socket.socket() as taken:  # a port in use is told before a minute of training, not after
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = demo_py("--logdir", str(runs), "--data-dir", str(data_dir), "--preset", "tiny", "--port",
                       str(taken.getsockname()[1]))
    assert busy.returncode == 2 and "is in use" in busy.stderr and not runs.exists()
    proc = subprocess.Popen([sys.executable, "demo.py", "--logdir", str(runs), "--data-dir", str(data_dir),
                             "--preset", "tiny", "--port", str(free_port())], cwd=ROOT,
                            # Gradio checks its own page over HTTP: loopback past the dead proxy of the offline env
                            env={**offline_env(), "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Open http" in line or not line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out = "".join(lines)
    assert "no finished run under" in out and "--preset tiny" in out, out
    [name] = [p.name for p in runs.iterdir()]
    assert name.startswith("tiny-") and (runs / name / "model.safetensors").is_file()
    assert f"run `{name}`" in out and "Open http://127.0.0.1:" in out, out


# ----------------------------------------------------------------------------------------------------------
# The real app, over HTTP and in a browser
# ----------------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo):
    pytest.importorskip("gradio", reason='the demo is an optional extra: pip install -e ".[test]" installs it')
    from perceiver_mnist.demo import build_app, serve

    app = build_app(demo)
    url = serve(app, "127.0.0.1", free_port())
    yield url
    app.close()


def test_the_app_answers_over_http_and_keeps_serving_after_bad_files(server, demo, pictures):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    classify = partial(client.predict, api_name="/classify")
    message, label, seen, attention = classify(handle_file(str(pictures["seven"])))
    expected = demo.update(open_picture(str(pictures["seven"])))
    assert message == expected.message
    top = sorted(expected.probabilities.items(), key=lambda kv: -kv[1])[:3]
    assert label["label"] == top[0][0]
    assert [(c["label"], c["confidence"]) for c in label["confidences"]] == \
        [(c, pytest.approx(p, abs=1e-6)) for c, p in top]
    assert np.array_equal(np.asarray(Image.open(seen).convert("L")), np.asarray(expected.seen))
    assert Image.open(attention).size == expected.attention.size
    for bad, start in (("blank", "No digit found"), ("text", "Cannot use notes.png"), ("truncated", "Cannot use")):
        message, label, seen, attention = classify(handle_file(str(pictures[bad])))
        assert message.startswith(start) and not label and seen is None and attention is None
    # The sketchpad's endpoint reads the composite of the drawing; the server still serves.
    drawing = io.BytesIO()
    Image.open(pictures["seven"]).convert("L").save(drawing, "PNG")
    (pictures["seven"].parent / "drawing.png").write_bytes(drawing.getvalue())
    composite = handle_file(str(pictures["seven"].parent / "drawing.png"))
    message, label, _, _ = client.predict({"background": None, "layers": [], "composite": composite},
                                          api_name="/draw")
    assert message == expected.message and label["label"] == top[0][0]


def chromium() -> tuple[str, str]:
    """Debian's chromium and its driver, or a skip that says so (.ci/run installs both)."""
    pytest.importorskip("selenium", reason='selenium drives the browser: pip install -e ".[test]"')
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("no headless Chromium here: apt-get install chromium chromium-driver (as .ci/run does)")
    return browser, driver


def test_in_a_browser_drawing_a_digit_and_an_example_show_the_answer(server, demo, tmp_path):
    browser, driver = chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    page = webdriver.Chrome(service=Service(driver), options=options)
    try:
        page.get(server)
        wait = WebDriverWait(page, 60, poll_frequency=0.1)
        message = lambda: page.find_element(By.ID, "message").text  # noqa: E731
        canvas = wait.until(lambda p: p.find_elements(By.CSS_SELECTOR, "#sketchpad canvas"))[0]
        assert message() == demo.prompt

        def draw_seven() -> None:
            # 50 ms a move, not selenium's 250: a quick hand, and seconds less of the suite
            strokes = ActionChains(page, duration=50).move_to_element_with_offset(canvas, -60, -80).click_and_hold()
            for _ in range(6):
                strokes.move_by_offset(20, 0)          # the bar
            for _ in range(8):
                strokes.move_by_offset(-8, 20)         # the stem
            strokes.release().perform()

        draw_seven()
        wait.until(lambda p: "%" in message())
        predicted = message().split(" (")[0]
        assert predicted in demo.classes
        assert page.find_element(By.ID, "label").text.split("\n")[:2] == ["Top classes", predicted]
        assert page.find_elements(By.CSS_SELECTOR, "#seen img")
        assert page.find_elements(By.CSS_SELECTOR, "#attention img")
        page.save_screenshot(str(tmp_path / "drawn.png"))

        page.find_element(By.CSS_SELECTOR, "#sketchpad button[aria-label='Clear canvas']").click()
        wait.until(lambda p: message() == demo.prompt)
        draw_seven()                                   # the next drawing works
        wait.until(lambda p: "%" in message())

        example = next(b for b in page.find_elements(By.CSS_SELECTOR, "button") if b.text == "photo_7.jpg")
        example.click()
        expected = demo.update_from_file(str(ROOT / "docs" / "pictures" / "photo_7.jpg")).message
        wait.until(lambda p: message() == expected.replace("**", ""))
        page.save_screenshot(str(tmp_path / "example.png"))
        assert (tmp_path / "example.png").stat().st_size > 10_000
    finally:
        page.quit()
