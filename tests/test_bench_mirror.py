"""bench/mirror_average.py: averaging a model's logits over an image and its mirror, on tiny synthetic data."""
from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file
from torch import nn

from .conftest import ROOT, make_dataset, run_python, saved_run

sys.path.insert(0, str(ROOT / "bench"))

import mirror_average  # noqa: E402
from mirror_average import mcnemar_p, mirror_counts  # noqa: E402


def test_mcnemars_exact_p_value():
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(10, 0) == mcnemar_p(0, 10) == 2 / 2 ** 10
    assert abs(mcnemar_p(46, 28) - 0.0474) < 1e-3  # the usual table's value for 46 against 28


class LeftHalf(nn.Module):
    """A classifier that reads only the left half of the image: its mirror sees the other half."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(28 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[..., :14].flatten(1))


def test_the_mirror_average_of_a_symmetric_model_changes_nothing_and_of_a_one_sided_one_does():
    torch.manual_seed(0)
    images, labels = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (300,))
    one_sided = LeftHalf()
    symmetric = lambda x: one_sided(x) + one_sided(x.flip(-1))  # noqa: E731: the same for an image and its mirror
    same = mirror_counts(symmetric, images, labels, batch=128)
    assert same["plain"] == same["mirror"] == same["mean"] and same["gained"] == same["lost"] == 0
    counts = mirror_counts(one_sided, images, labels, batch=128)
    assert counts["images"] == 300 and counts["gained"] + counts["lost"] > 0
    assert counts["mean"] - counts["plain"] == counts["gained"] - counts["lost"]
    # The mean of the logits is the symmetric model's answer: half its logits.
    assert counts["mean"] == same["plain"]


def test_the_bench_reports_a_garment_model_and_refuses_a_digit_model_in_one_line(tmp_path):
    data = make_dataset(tmp_path / "data", folder="FashionMNIST")
    saved_run(tmp_path / "clothes", "tiny", dataset="fashion-mnist")
    result = run_python("bench/mirror_average.py", "--data-dir", str(data), "--split", "test",
                        str(tmp_path / "clothes"))
    assert result.returncode == 0, result.stderr
    row = [line for line in result.stdout.splitlines() if "clothes" in line]
    assert len(row) == 1 and row[0].split("|")[2].strip() == "90"  # every test image of the synthetic set
    # The validation split must be one the model was trained without.
    refused = run_python("bench/mirror_average.py", "--data-dir", str(data), str(tmp_path / "clothes"))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "trained with --val-size 0" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    saved_run(tmp_path / "digits", "tiny")
    refused = run_python("bench/mirror_average.py", "--data-dir", str(data), str(tmp_path / "digits"))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "whose classes do not survive a mirror" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_the_validation_split_scored_is_the_one_held_out_of_the_models_training(tmp_path, monkeypatch, capsys):
    """The selection split (5,000 images; 40 of the 192 synthetic ones here) is scored for a model trained without
    it, also when its --val-size held out more: the split is the tail of one fixed permutation."""
    data = make_dataset(tmp_path / "data", folder="FashionMNIST")
    monkeypatch.setattr(mirror_average, "SELECTION_VAL_SIZE", 40)
    for name, val_size in (("held", 40), ("held-more", 60)):
        saved_run(tmp_path / name, "tiny", dataset="fashion-mnist", val_size=val_size)
    monkeypatch.setattr(sys, "argv", ["mirror_average.py", "--data-dir", str(data),
                                      str(tmp_path / "held"), str(tmp_path / "held-more")])
    assert mirror_average.main() == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if "held" in line]
    assert [row[2].strip() for row in rows] == ["40", "40"]


def test_against_a_baseline_counts_the_images_each_model_alone_gets_right_that_the_other_does_not(
        tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", folder="FashionMNIST")
    torch.manual_seed(0)
    saved_run(tmp_path / "base", "tiny", dataset="fashion-mnist")
    model = saved_run(tmp_path / "other", "tiny", dataset="fashion-mnist")
    with torch.no_grad():  # a freshly initialised model answers one class for any image: shake it into varying
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    save_file(model.state_dict(), tmp_path / "other" / "model.safetensors")
    base, other = str(tmp_path / "base"), str(tmp_path / "other")
    monkeypatch.setattr(sys, "argv", ["mirror_average.py", "--data-dir", str(data), "--split", "test",
                                      base, other, "--against", base])
    assert mirror_average.main() == 0
    rows = {row[1].strip(): row for row in (line.split("|") for line in capsys.readouterr().out.splitlines())
            if row[1].strip() in (base, other)}
    assert rows[base][8].strip() == "0 / 0, p 1"  # a model against itself: nothing changes
    gained, lost = map(int, rows[other][8].split(",")[0].split("/"))
    right = {path: round(float(rows[path][3]) * 90 / 100) for path in (base, other)}  # 90 synthetic test images
    assert gained - lost == right[other] - right[base] and gained + lost > 0
