"""export.py: the Hugging Face Hub format (save_pretrained / from_pretrained, model card, upload errors) and ONNX
(onnxruntime against PyTorch), on the tiny run."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from perceiver_mnist import PerceiverMNIST, load_model, preset, tracking
from perceiver_mnist.config import recipe_to_dict
from perceiver_mnist.data import to_float
from perceiver_mnist.errors import UserError
from perceiver_mnist.events import read_events
from perceiver_mnist.hub import export_hf, model_card, push_to_hub
from perceiver_mnist.onnx_export import (INSTALL, MIN_TORCH, check_images, compare_onnx, random_images,
                                         require_export_extra)
from perceiver_mnist.predict import open_picture, preprocess

from .conftest import NO_NETWORK, ROOT, run_python

PNG = b"\x89PNG\r\n\x1a\n a summary figure"


export = partial(run_python, "export.py", timeout=240)


def says(message: str, *words: str) -> None:
    """A message for the user is one line that names what is wrong and what to do: checked by those words (any
    case), not by its wording."""
    assert "\n" not in message.strip() and all(w.lower() in message.lower() for w in words), (message, words)


@pytest.fixture(scope="module")
def run_with_figure(tiny_run: Path, tmp_path_factory) -> Path:
    """A copy of the tiny run whose figures/summary.png has been drawn."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    shutil.copytree(tiny_run, run)
    (run / "figures").mkdir(exist_ok=True)
    (run / "figures" / "summary.png").write_bytes(PNG)
    return run


@pytest.fixture(scope="module")
def exported(run_with_figure: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny-hf"
    written = export_hf(str(run_with_figure), str(out), repo_id="someone/tiny")
    assert sorted(Path(p).name for p in written) == ["README.md", "config.json", "model.safetensors",
                                                     "summary.png"]
    return out


def test_the_exported_folder_gives_the_runs_logits(exported, tiny_run):
    x = torch.rand(6, 1, 28, 28)
    expected = load_model(str(tiny_run))(x)
    assert torch.equal(load_model(str(exported))(x), expected)
    hub = PerceiverMNIST.from_pretrained(str(exported))
    assert isinstance(hub, PerceiverMNIST) and not hub.training
    assert torch.equal(hub(x), expected)
    config = json.loads((exported / "config.json").read_text())
    assert config == {"recipe": recipe_to_dict(load_model(str(tiny_run)).recipe)}


def test_the_model_card_says_what_how_well_where_and_how_to_use_it(exported, run_with_figure):
    card = ModelCard.load(exported / "README.md")
    assert card.data.license == "mit" and card.data.pipeline_tag == "image-classification"
    assert "pytorch_model_hub_mixin" in card.data.tags and card.data.datasets == ["ylecun/mnist"]
    accuracy = read_events(str(run_with_figure)).scalars[tracking.TEST_ACCURACY].values
    text = card.text
    assert "# tiny: a Perceiver IO classifier of MNIST" in text
    assert "(7x7 image patches as tokens, with Fourier position features) and a learned output query:" in text
    assert f"| **{accuracy[-1]:.2f}%** | {max(accuracy):.2f}% (" in text  # final, best
    assert re.search(r"\| 2 \| \d+\.\d min \| 1 process, CPU \(.+\), \d+ CPU cores, fp32 \| \d{4}-\d\d-\d\d \|", text)
    assert "on all 90 MNIST test images" in text  # the synthetic test set's size, as logged
    assert "![training loss, test loss and test accuracy per epoch](summary.png)" in text
    assert (exported / "summary.png").read_bytes() == PNG
    assert 'PerceiverMNIST.from_pretrained("someone/tiny")' in text and "The `tiny` preset." in text


def test_the_model_card_describes_the_seeds_architecture_as_it_is():
    card = model_card(PerceiverMNIST(recipe_to_dict(preset("seed"))), {"preset": "seed"}, "colab", None, None, False)
    assert ("(the whole image as one token of 784 features) and a fixed all-zero output query:" in card.text
            and "The `seed` preset." in card.text)


def test_the_model_card_describes_the_fast_presets_conv_stem_and_a_garment_models_data():
    card = model_card(PerceiverMNIST(recipe_to_dict(preset("fast"))), {"preset": "fast"}, "quick", None, None, False)
    assert ("(a two-layer convolutional stem whose features over each 4x4-pixel square are a token, with Fourier "
            "position features)" in card.text and "The `fast` preset." in card.text)
    card = model_card(PerceiverMNIST(recipe_to_dict(preset("fashion"))), {"preset": "fashion"}, "clothes", None, None,
                      False)
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"] and "Ankle boot" in card.text
    deeper = dataclasses.replace(preset("fast"), stem_depth=1)
    card = model_card(PerceiverMNIST(recipe_to_dict(deeper)), {"preset": "fast"}, "deeper", None, None, False)
    assert "(a three-layer convolutional stem whose features" in card.text


def test_exporting_again_replaces_an_earlier_export_but_never_a_run(exported, run_with_figure, tiny_run):
    export_hf(str(tiny_run), str(exported))  # no summary figure drawn for this one: the earlier one goes
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    with pytest.raises(UserError) as err:
        export_hf(str(tiny_run), str(run_with_figure))
    says(str(err.value), str(run_with_figure), "already holds other files", ".lock, checkpoints, events.out.tfevents",
         "an empty or new folder")


def test_export_py_writes_the_folder_then_says_in_one_line_why_it_cannot_push(tiny_run, tmp_path):
    out = tmp_path / "hf"
    result = export("--run", "tiny", "--logdir", str(tiny_run.parent), "--format", "hf", "--out", str(out),
                    "--push-to-hub", "someone/tiny", env={"HF_TOKEN": "hf_not_a_real_token"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stdout.startswith(f"wrote 3 files to {out}")
    assert result.stderr.startswith("export.py: error: ")
    says(result.stderr, "cannot push to the Hub", "offline", "HF_HUB_OFFLINE=1", f"{out} holds the export",
         "push it again")
    assert torch.equal(load_model(str(out))(torch.ones(1, 1, 28, 28)),
                       load_model(str(tiny_run))(torch.ones(1, 1, 28, 28)))


def test_push_needs_a_token_and_a_network(exported, monkeypatch):
    import huggingface_hub
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HTTPError

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(UserError) as err:
        push_to_hub(str(exported), "someone/tiny")
    says(str(err.value), "cannot push to the Hub", "no Hugging Face token", "hf auth login", "HF_TOKEN",
         str(exported))

    def no_network(*args, **kwargs):
        raise HTTPError("[Errno 111] Connection refused")  # the base of httpx's and the Hub's own errors

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_not_a_real_token")
    monkeypatch.setattr(HfApi, "create_repo", no_network)
    with pytest.raises(UserError) as err:
        push_to_hub(str(exported), "someone/tiny")
    says(str(err.value), "cannot push to the Hub", "Connection refused", f"{exported} holds the export",
         "push it again")


def test_onnx_matches_pytorch_with_any_batch_size(tiny_run, data_dir, tmp_path):
    import onnxruntime

    out = tmp_path / "tiny.onnx"
    result = export("--run", "tiny", "--logdir", str(tiny_run.parent), "--format", "onnx", "--out", str(out),
                    "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"wrote {out}"
    assert re.fullmatch(r"onnxruntime vs PyTorch on 90 test images: largest logit difference \S+, the same "
                        r"prediction for 100\.00%", lines[1]), lines
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]  # one file: the weights are inside

    model = load_model(str(tiny_run))
    check = compare_onnx(str(out), model, random_images(300), batch_size=128)  # batches of 128 and 44
    assert check.max_logit_difference <= 1e-4 and check.agreement == 1.0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (images,), (logits,) = session.get_inputs(), session.get_outputs()
    assert (images.name, images.shape[1:], logits.name, logits.shape[1:]) == ("images", [1, 28, 28], "logits", [10])
    assert isinstance(images.shape[0], str)  # the batch axis is dynamic
    one = torch.rand(1, 1, 28, 28)
    got = session.run(None, {"images": one.numpy()})[0]
    assert got.shape == (1, 10) and torch.allclose(torch.from_numpy(got), model(one), atol=1e-4)

    # Serving needs no torch: the README's snippet, on a picture, in a process that never imports it.
    picture = ROOT / "docs" / "pictures" / "photo_7.jpg"
    code = ("import sys; import numpy as np; import onnxruntime; "
            "from perceiver_mnist.predict import open_picture, preprocess; "
            f"session = onnxruntime.InferenceSession({str(out)!r}); "
            f"images = preprocess(open_picture({str(picture)!r}), 'mnist')[None, None].astype(np.float32) / 255; "
            "print(session.run(None, {'images': images})[0].tolist()); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    served = run_python("-c", code)
    assert served.returncode == 0, served.stderr[-2000:]
    expected = model(to_float(torch.from_numpy(preprocess(open_picture(str(picture))))[None]))
    assert torch.allclose(torch.tensor(json.loads(served.stdout)), expected, atol=1e-4)


def test_the_conv_stem_exports_to_onnx_with_a_dynamic_batch(tmp_path):
    from perceiver_mnist import build_model
    from perceiver_mnist.onnx_export import export_onnx

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(preset("tiny"), adapter="conv", patch_size=4)).eval()
    export_onnx(model, str(tmp_path / "conv.onnx"))
    check = compare_onnx(str(tmp_path / "conv.onnx"), model, random_images(40), batch_size=32)  # 32, then 8
    assert check.max_logit_difference <= 1e-4 and check.agreement == 1.0


@pytest.mark.parametrize("package", ["onnx", "onnxscript", "onnxruntime"])
def test_onnx_without_the_export_extra_says_how_to_install_it(package, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # what an import of a package that is not installed does
    with pytest.raises(UserError) as err:
        require_export_extra()
    says(str(err.value), "ONNX export", f"{package} is not installed", 'pip install -e ".[export]"')
    assert INSTALL == 'pip install -e ".[export]"'


def test_onnx_export_on_too_old_a_torch_says_which_it_needs(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    with pytest.raises(UserError) as err:
        require_export_extra()
    says(str(err.value), "ONNX export", f"torch >= {MIN_TORCH}", "2.5.1", "upgrade torch")


@pytest.mark.parametrize("case", ["hf_into_a_file", "hf_under_a_file", "onnx_into_a_folder", "onnx_under_a_file"])
def test_an_out_that_cannot_be_written_is_one_line_that_says_what_to_give(case, tiny_run, tmp_path):
    from perceiver_mnist import build_model
    from perceiver_mnist.onnx_export import export_onnx

    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    out = {"hf_into_a_file": a_file, "hf_under_a_file": a_file / "hf", "onnx_into_a_folder": tmp_path,
           "onnx_under_a_file": a_file / "model.onnx"}[case]
    with pytest.raises(UserError) as err:
        if case.startswith("hf"):
            export_hf(str(tiny_run), str(out))
        else:
            export_onnx(build_model(preset("tiny")), str(out))
    words = {"hf_into_a_file": ["is a file", "give a folder", "--format hf"],
             "hf_under_a_file": ["cannot write", "Not a directory", "a writable --out"],
             "onnx_into_a_folder": ["is a folder", "give a file name", "--format onnx", "model.onnx"],
             "onnx_under_a_file": ["cannot write", "File exists", "a writable --out"]}[case]
    says(str(err.value), f"--out {out}" if "_into_" in case else str(out), *words)
    assert a_file.read_text() == "not a folder"  # nothing written over it


def test_push_to_hub_goes_with_the_hf_format(tmp_path):
    result = export("--run", "tiny", "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--push-to-hub", "a/b")
    assert result.returncode == 2 and result.stdout == "" and not (tmp_path / "m.onnx").exists()
    says(result.stderr, "export.py: error: ", "--push-to-hub", "--format hf", "--help")


def test_the_onnx_check_without_a_test_set_says_it_used_random_images_and_why(tmp_path, monkeypatch):
    for var, value in NO_NETWORK.items():
        monkeypatch.setenv(var, value)
    images, what = check_images({"recipe": {"dataset": "mnist"}, "options": {}}, str(tmp_path / "nowhere"))
    assert images.shape == (1000, 28, 28)
    says(what, "random images", "no test set", "mnist data missing", str(tmp_path / "nowhere"), "download failed")
