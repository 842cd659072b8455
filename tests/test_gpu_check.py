"""bench/gpu_check.sh, the one call a lent GPU machine gets, rehearsed on the CPU: every part runs (tiny sizes,
dynamo's eager backends, rehearsal thresholds), prints one PASS/FAIL line per target, writes summary.json and says
PASS with exit status 0; a target it misses makes it exit non-zero."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, offline_env

# One line per target, in this order (bench/gpu_check.sh's header lists them).
TARGETS = [
    "cold compile (first compiled step)",
    "training step, batch 8, bf16, compiled",
    "training step, batch 16, bf16, compiled",
    "host syncs per non-logging step",
    "aten ops outside compiled regions per step",
    "launch to 50% test accuracy",
    "test accuracy after epoch 3",
    "pytest -m gpu tests/",
]


def gpu_check(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # PYTHON: the interpreter running the tests (the script's default is python3, the GPU machines' one)
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-rehearsal", *args, str(out)], cwd=ROOT,
                          env={**offline_env(), "PYTHON": sys.executable, **(env or {})}, capture_output=True,
                          text=True, timeout=420)


def verdicts(stdout: str) -> dict[str, str]:
    """target -> PASS or FAIL, from the script's lines `STATUS  TARGET  VALUE  target OP THRESHOLD ...`."""
    return {m[2]: m[1] for m in re.finditer(r"^(PASS|FAIL)  (.+?)\s{2,}.*target [<>]=", stdout, re.M)}


@pytest.mark.ci  # about 50 s: in CI after the README's suite (.ci/run)
def test_the_rehearsal_runs_every_part_and_passes_each_target(tmp_path: Path):
    result = gpu_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert re.match(r"gpu_check \(rehearsal.*budget \d+ s of 540", result.stdout)
    assert verdicts(result.stdout) == {target: "PASS" for target in TARGETS}, result.stdout
    assert result.stdout.count("[rehearsal]") == len(TARGETS)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] and summary["mode"] == "rehearsal" and summary["failed"] == []
    assert [t["target"] for t in summary["targets"]] == TARGETS
    assert all(t["value"] is not None for t in summary["targets"])
    assert "gpu_check: PASS (8 of 8 targets passed)" in result.stdout


def judge_py(tmp_path: Path) -> Path:
    """The script's judge (the Python between `cat >"$work/judge.py" <<'PY'` and `PY`), as a file."""
    script = (ROOT / "bench" / "gpu_check.sh").read_text()
    path = tmp_path / "judge.py"
    path.write_text(script.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0])
    return path


def test_the_gpu_mode_verdicts_on_recorded_outputs(tmp_path: Path):
    """What a GPU run prints, judged as on the GPU (the CPU cannot produce it): the thresholds of the gpu mode, a
    rate below its target, a sync, a failed test; each line PASS or FAIL as it should, and the summary, the
    script's last command (so its exit status), exits 1."""
    out = tmp_path / "out"
    out.mkdir()
    compiled = {"mode": "default", "compiled_step_s": 0.0021, "speedup": 3.1, "graphs": 3, "first_sync": None}
    (out / "step128.log").write_text("noise\n" + json.dumps(
        {**compiled, "batch_size": 128, "compiled_samples_per_s": 61000.0, "compile_s": 71.3, "host_syncs": 0}) + "\n")
    (out / "stepgpu.log").write_text(json.dumps(
        {**compiled, "batch_size": 1024, "compiled_samples_per_s": 150000.0, "compile_s": 40.0, "host_syncs": 2,
         "first_sync": "called a synchronizing CUDA operation"}) + "\n")
    report = {"wall_minutes": 1.1, "epochs": 9, "per_epoch": {
        "epoch": [1.0, 2.0, 3.0, 4.0], "accuracy": [96.1, 97.9, 98.4, 99.02], "s_from_launch": [20.0, 26, 32, 38.5]}}
    (out / "accuracy.log").write_text("epoch 1/80 | ...\n" + json.dumps(report, indent=1) + "\n")
    (out / "launches.log").write_text(json.dumps({"preset": "gpu", "compile": "inductor", "ops_per_step": 12.0,
                                                  "host_reads_per_step": 0.0}) + "\n")
    (out / "gputests.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.test_gpu" name="a"/><testcase classname="tests.test_gpu" '
        'name="b"><failure message="x">x</failure></testcase></testsuite></testsuites>')
    env = {**offline_env(), "GC_MODE": "gpu", "GC_OUT": str(out), "GC_ROOT": str(ROOT), "GC_START": "0",
           "GC_SPS128_MIN": "50000", "GC_SPSGPU_MIN": "200000", "GC_SYNCS_MAX": "0", "GC_TTA_ACC": "99",
           "GC_TTA_MAX_S": "60", "GC_EPOCH3_MIN": "98", "GC_OPS_MAX": "20", "GC_COMPILE_BUDGET": "90", "GC_BOX": "65",
           "GC_STOP_AT": "99", "GC_L_STEP128": "120", "GC_L_STEPGPU": "90", "GC_L_ACCURACY": "95",
           "GC_L_LAUNCHES": "90", "GC_L_GPUTESTS": "180"}
    judge, stdout = judge_py(tmp_path), ""
    for args in (["step", "step128", "128", "0"], ["step", "stepgpu", "1024", "0"], ["syncs", "20", "128", "1024"],
                 ["launches", "0", "gpu", "inductor"], ["accuracy", "0"], ["gputests", str(out / "gputests.xml"), "1"],
                 ["summary", "535"]):
        result = subprocess.run([sys.executable, str(judge), *args], env=env, capture_output=True, text=True)
        assert result.returncode == (1 if args[0] == "summary" else 0), result.stderr
        stdout += result.stdout
    assert verdicts(stdout) == {
        "cold compile (first compiled step)": "PASS", "training step, batch 128, bf16, compiled": "PASS",
        "training step, batch 1024, bf16, compiled": "FAIL", "host syncs per non-logging step": "FAIL",
        "aten ops outside compiled regions per step": "PASS", "launch to 99% test accuracy": "PASS",
        "test accuracy after epoch 3": "PASS", "pytest -m gpu tests/": "FAIL"}, stdout
    assert "[rehearsal]" not in stdout and "38.50 s" in stdout and "98.40 %" in stdout and "2 in 20 steps" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == ["training step, batch 1024, bf16, compiled", "host syncs per non-logging step",
                                 "pytest -m gpu tests/"]


def test_without_a_gpu_the_gpu_mode_stops_at_once_and_says_why(tmp_path: Path):
    """The gpu mode on this CPU: one FAIL line and summary.json's reason, exit 3, before any part starts."""
    import torch
    if torch.cuda.is_available():  # there it would run the whole check
        return
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path)], cwd=ROOT,
                            env={**offline_env(), "PYTHON": sys.executable}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "budget 535 s of 540" in result.stdout and "gpu_check: FAIL no CUDA device" in result.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["reason"].startswith("no CUDA device")
