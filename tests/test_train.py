"""End to end: real `accelerate launch` runs of train.py on tiny synthetic data (1 and 2 processes), resume,
the model API on a trained run, the accelerate configs, and bad inputs."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from perceiver_mnist import build_model, load_model, preset
from perceiver_mnist import tracking
from perceiver_mnist.config import Recipe, recipe_to_dict
from perceiver_mnist.data import load_datasets, to_float
from perceiver_mnist.events import read_events

from .conftest import ACCELERATE, N_TEST, N_TRAIN, ROOT, launch, make_dataset, resume_args, tiny_args

TINY = preset("tiny")
STEPS_PER_EPOCH = math.ceil(N_TRAIN / TINY.batch_size)


def accuracy_of(model: torch.nn.Module, data_dir: Path) -> float:
    """A plain 1-process evaluation of a model on the whole synthetic test set."""
    test = load_datasets(str(data_dir), "mnist").test
    with torch.no_grad():
        preds = model(to_float(test.images)).argmax(-1)
    return 100.0 * (preds == test.labels).float().mean().item()


def raw_steps(run_dir: Path, tag: str) -> list[int]:
    """The steps of a tag as TensorBoard shows them (after purging), duplicates NOT removed."""
    acc = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_tiny_run_writes_everything(tiny_run: Path):
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["recipe"] == recipe_to_dict(TINY) and config["num_processes"] == 1
    assert sorted(p.name for p in (tiny_run / "checkpoints").iterdir()) == ["epoch_1", "epoch_2"]
    assert (tiny_run / "checkpoints" / "epoch_2" / "trainer_state.json").exists()
    assert (tiny_run / "model.safetensors").exists()

    events = read_events(str(tiny_run))
    for tag in tracking.EPOCH_SCALARS:
        assert events.scalars[tag].steps == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH], tag
    assert events.scalars[tracking.EPOCH].values == [1.0, 2.0]
    assert events.scalars[tracking.TEST_SAMPLES].values == [N_TEST, N_TEST]  # the full test set, once
    assert events.scalars[tracking.TRAIN_LOSS_STEP].steps == list(range(2, 2 * STEPS_PER_EPOCH + 1, 2))
    grids = events.images[tracking.PREDICTIONS]
    assert [step for step, _ in grids] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert grids[0][1].startswith(b"\x89PNG")


def test_load_model_returns_the_trained_model(tiny_run: Path, data_dir: Path):
    model = load_model(str(tiny_run))
    assert not model.training
    reference = build_model(TINY)
    reference.load_state_dict(load_file(tiny_run / "checkpoints" / "epoch_2" / "model.safetensors"))
    x = torch.rand(5, 1, 28, 28)
    assert torch.allclose(model(x), reference.eval()(x))
    logged = read_events(str(tiny_run)).scalars[tracking.TEST_ACCURACY].values[-1]
    assert accuracy_of(model, data_dir) == pytest.approx(logged)


def test_resume_continues_the_run_and_its_curves(tiny_run: Path, data_dir: Path, tmp_path: Path):
    logdir = tmp_path / "runs"
    shutil.copytree(tiny_run, logdir / "tiny")
    result = launch(resume_args(data_dir, logdir, "tiny", "--epochs", "3", "--log-every", "2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed" in result.stdout and "epochs: 2 -> 3" in result.stdout
    run = logdir / "tiny"
    steps = raw_steps(run, tracking.TEST_ACCURACY)
    assert steps == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH]
    loss_steps = raw_steps(run, tracking.TRAIN_LOSS_STEP)
    assert loss_steps == sorted(set(loss_steps)) and loss_steps[-1] == 3 * STEPS_PER_EPOCH
    assert json.loads((run / "config.json").read_text())["recipe"]["epochs"] == 3
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_1", "epoch_2", "epoch_3"]


def test_stale_events_after_the_last_checkpoint_are_purged_on_resume(data_dir: Path, tmp_path: Path):
    logdir = tmp_path / "runs"
    args = tiny_args(data_dir, logdir, "r", "--max-steps", "8", "--checkpoint-every", "4", "--log-every", "1")
    assert launch(args, config=None).returncode == 0
    # Pretend the process died after logging step 8 but before its checkpoint was written.
    shutil.rmtree(logdir / "r" / "checkpoints" / "step_8")
    result = launch(resume_args(data_dir, logdir, "r", "--max-steps", "10", "--log-every", "1"), config=None)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at epoch 0, step 4 (4 batches into epoch 1)" in result.stdout
    assert raw_steps(logdir / "r", tracking.TRAIN_LOSS_STEP) == list(range(1, 11))


def test_two_processes_shard_training_and_count_each_test_image_once(data_dir: Path, tmp_path: Path):
    logdir = tmp_path / "runs"
    result = launch(tiny_args(data_dir, logdir, "ddp", "--epochs", "1"), config="multi_cpu.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    run = logdir / "ddp"
    assert json.loads((run / "config.json").read_text())["num_processes"] == 2
    assert "2 process(es)" in result.stdout
    events = read_events(str(run))
    # 90 test images in batches of 32 over 2 processes: the last batch's 26 split 13/13, each image counted once.
    assert events.scalars[tracking.TEST_SAMPLES].values == [N_TEST]
    # The global batch is split, so an epoch has as many steps as with one process.
    assert events.scalars[tracking.EPOCH].steps == [STEPS_PER_EPOCH]
    logged = events.scalars[tracking.TEST_ACCURACY].values[-1]
    assert accuracy_of(load_model(str(run)), data_dir) == pytest.approx(logged)
    # Only rank 0 writes logs and the checkpoint's model/optimizer; each rank adds its own RNG state.
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (run / "checkpoints" / "epoch_1").iterdir()) == [
        "model.safetensors", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl", "scheduler.bin",
        "trainer_state.json"]


def test_a_run_moves_between_one_and_two_processes_mid_epoch_and_its_epoch_loss_stays_the_mean(data_dir: Path,
                                                                                             tmp_path: Path):
    """Steps 1-5 on 2 processes, 6-8 on 1, the rest of the epoch on 2 again: each resume goes on from the same
    position, and the epoch's train/loss is still the mean of its steps' losses (each the mean over processes)."""
    logdir, extra = tmp_path / "runs", ("--log-every", "1", "--epochs", "1")
    sessions = [(tiny_args(data_dir, logdir, "moved", *extra, "--max-steps", "5"), "multi_cpu.yaml"),
                (resume_args(data_dir, logdir, "moved", *extra, "--max-steps", "8"), "cpu.yaml"),
                (resume_args(data_dir, logdir, "moved", *extra), "multi_cpu.yaml")]
    for args, config in sessions:
        result = launch(args, config=config)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "was saved by 1 process(es) and this session has 2" in result.stdout
    events = read_events(str(logdir / "moved"))
    steps = events.scalars[tracking.TRAIN_LOSS_STEP]
    assert steps.steps == list(range(1, STEPS_PER_EPOCH + 1))
    epoch = events.scalars[tracking.TRAIN_LOSS]
    assert epoch.steps[-1] == STEPS_PER_EPOCH
    assert epoch.values[-1] == pytest.approx(sum(steps.values) / STEPS_PER_EPOCH, rel=1e-5)


@pytest.mark.parametrize("config, distributed, processes, precision", [
    ("cpu.yaml", "NO", 1, "no"), ("multi_cpu.yaml", "MULTI_GPU", 2, "no"), ("single_gpu.yaml", "NO", 1, "no"),
    ("multi_gpu.yaml", "MULTI_GPU", 2, "no"), ("fp16.yaml", "NO", 1, "fp16"), ("bf16.yaml", "NO", 1, "bf16"),
    ("multi_node.yaml", "MULTI_GPU", 16, "no"), ("bf16_compile.yaml", "NO", 1, "bf16"),
    ("cpu_compile.yaml", "NO", 1, "no"),
])
def test_accelerate_configs_parse_with_accelerates_loader(config, distributed, processes, precision):
    from accelerate.commands.config.config_args import load_config_from_file
    cfg = load_config_from_file(str(ROOT / "accelerate_configs" / config))
    assert str(cfg.distributed_type).split(".")[-1] == distributed
    assert (cfg.num_processes, str(cfg.mixed_precision).split(".")[-1].lower()) == (processes, precision)
    assert cfg.use_cpu == ("cpu" in config)
    assert sorted(p.name for p in (ROOT / "accelerate_configs").glob("*.yaml")) == sorted(
        ["cpu.yaml", "multi_cpu.yaml", "single_gpu.yaml", "multi_gpu.yaml", "fp16.yaml", "bf16.yaml",
         "multi_node.yaml", "bf16_compile.yaml", "cpu_compile.yaml"])
    # Compilation comes from the config too: only the config named for it asks for it.
    backend = (cfg.dynamo_config or {}).get("dynamo_backend", "NO")
    assert backend == ("INDUCTOR" if config.endswith("_compile.yaml") else "NO")


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_run(tiny_run: Path, tmp_path: Path) -> Path:
    logdir = tmp_path / "runs"
    shutil.copytree(tiny_run, logdir / "done")
    return logdir / "done"


def _bad_input(case: str, data_dir: Path, run: Path, tmp_path: Path) -> tuple[list[str], str]:
    logdir = str(run.parent)
    common = ["--preset", "tiny", "--logdir", logdir, "--data-dir", str(data_dir)]
    if case == "missing_data":
        return [*common[:-1], str(tmp_path / "empty"), "--run", "new"], "download failed"
    if case == "corrupt_idx":
        broken = make_dataset(tmp_path / "broken")
        (broken / "MNIST/raw/t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
        return [*common[:-1], str(broken), "--run", "new"], "t10k-images-idx3-ubyte is not a valid IDX file"
    if case == "existing_run":
        return [*common, "--run", run.name], "already holds a run; continue it with --resume"
    if case == "resume_unknown":
        return [*common, "--run", "ghost", "--resume"], f"no run named 'ghost' (runs in {logdir}: {run.name})"
    if case == "resume_other_model":
        return [*common, "--run", run.name, "--resume", "--latent-dim", "32"], "latent_dim: 16 -> 32"
    if case == "unwritable_logdir":
        blocker = tmp_path / "a_file"
        blocker.write_text("not a directory")
        return ["--preset", "tiny", "--logdir", str(blocker / "runs"), "--data-dir", str(data_dir), "--run", "x"], \
            "choose a writable --logdir"
    if case == "truncated_idx":
        broken = make_dataset(tmp_path / "broken")
        path = broken / "MNIST/raw/train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-100])
        return [*common[:-1], str(broken), "--run", "new"], "train-images-idx3-ubyte is not a valid IDX file"
    if case == "length_mismatch":
        broken = make_dataset(tmp_path / "broken")
        shutil.copy(make_dataset(tmp_path / "other", n_train=50) / "MNIST/raw/train-labels-idx1-ubyte",
                    broken / "MNIST/raw/train-labels-idx1-ubyte")
        return [*common[:-1], str(broken), "--run", "new"], f"has {N_TRAIN} images but"
    if case == "unreadable_checkpoints":
        for weights in run.glob("checkpoints/*/model.safetensors"):
            weights.write_bytes(b"truncated")
        return [*common, "--run", run.name, "--resume"], "every checkpoint in"
    if case == "resume_without_run":
        return [*common, "--resume"], "--resume needs --run NAME"
    if case == "unknown_preset":
        return ["--preset", "huge", "--run", "new"], "invalid choice: 'huge'"
    if case == "zero_epochs":
        return [*common, "--run", "new", "--epochs", "0"], "--epochs must be positive"
    if case == "negative_batch_size":
        return [*common, "--run", "new", "--batch-size", "-8"], "--batch-size must be positive"
    if case == "zero_lr":
        return [*common, "--run", "new", "--lr", "0"], "--lr must be a positive number"
    if case == "run_is_a_file":
        (run.parent / "a_file").write_text("not a run")
        return [*common, "--run", "a_file"], "is a file, not a run directory"
    if case == "config_without_recipe":
        (run / "config.json").write_text("[1, 2]")
        return [*common, "--run", run.name, "--resume"], "holds no recipe"
    if case == "config_missing_field":  # e.g. written before a field existed
        config = json.loads((run / "config.json").read_text())
        del config["recipe"]["ema_decay"]
        (run / "config.json").write_text(json.dumps(config))
        return [*common, "--run", run.name, "--resume"], "missing recipe fields ['ema_decay']"
    if case == "fewer_epochs_than_done":
        return [*common, "--run", run.name, "--resume", "--epochs", "1"], "--epochs must be at least 2"
    if case == "max_steps_already_passed":
        return [*common, "--run", run.name, "--resume", "--max-steps", "1"], "give a larger --max-steps"
    raise AssertionError(case)


BAD_INPUTS = ["missing_data", "corrupt_idx", "truncated_idx", "length_mismatch", "existing_run", "resume_unknown",
              "resume_without_run", "resume_other_model", "unreadable_checkpoints", "unwritable_logdir",
              "unknown_preset", "zero_epochs", "negative_batch_size", "zero_lr", "run_is_a_file",
              "config_without_recipe", "config_missing_field",
              "fewer_epochs_than_done", "max_steps_already_passed"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_get_one_line_and_nothing_is_lost(case, data_dir: Path, finished_run: Path, tmp_path: Path):
    args, message = _bad_input(case, data_dir, finished_run, tmp_path)
    before = tree_digest(finished_run.parent)
    result = launch(args, config=None)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert tree_digest(finished_run.parent) == before  # nothing written before is touched


def test_a_mid_epoch_checkpoint_refuses_another_epoch_length(data_dir: Path, tmp_path: Path):
    """Its position counts batches of the epoch as it was; resumed with a larger batch, the epoch used to end
    before that position and never finished (it re-evaluated and re-saved forever)."""
    logdir = tmp_path / "runs"
    assert launch(tiny_args(data_dir, logdir, "m", "--max-steps", "3"), config=None).returncode == 0
    before = tree_digest(logdir)
    result = launch(resume_args(data_dir, logdir, "m", "--batch-size", "64"), config=None, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip() == ("train.py: error: the checkpoint is 3 batches into epoch 1, trained with "
                                     "--batch-size 16 --val-size 0: resume with those and the same data until the "
                                     "epoch ends (--max-steps can stop it there), then change them")
    assert tree_digest(logdir) == before


def test_resuming_a_finished_run_changes_nothing_and_says_how_to_train_longer(data_dir: Path, finished_run: Path):
    before = tree_digest(finished_run.parent)
    result = launch(["--run", finished_run.name, "--logdir", str(finished_run.parent), "--data-dir", str(data_dir),
                     "--resume"], config=None)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "has already finished its 2 epochs" in result.stdout and "--epochs N (N > 2)" in result.stdout
    assert tree_digest(finished_run.parent) == before


def test_a_missing_accelerate_config_is_reported_by_accelerate(tmp_path):
    """accelerate's own CLI answers before train.py runs: it names the file and exits non-zero (its message comes
    with a traceback of accelerate's, which this project cannot change)."""
    result = subprocess.run([ACCELERATE, "launch", "--config_file", str(tmp_path / "nope.yaml"),
                             str(ROOT / "train.py")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "nope.yaml" in result.stderr and "does not exist" in result.stderr


def test_ema_weights_are_what_is_evaluated_and_saved(data_dir: Path, tmp_path: Path):
    logdir = tmp_path / "runs"
    result = launch(tiny_args(data_dir, logdir, "ema", "--epochs", "1", "--ema-decay", "0.9"), config=None)
    assert result.returncode == 0, result.stderr[-3000:]
    run = logdir / "ema"
    checkpoint = run / "checkpoints" / "epoch_1"
    averaged = torch.load(checkpoint / "custom_checkpoint_0.pkl", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in averaged.items() if k.startswith("module.")}
    final, raw = load_file(run / "model.safetensors"), load_file(checkpoint / "model.safetensors")
    assert final.keys() == ema.keys() == raw.keys()
    assert all(torch.equal(final[k], ema[k]) for k in final)           # the average is what gets saved
    assert not all(torch.equal(final[k], raw[k]) for k in final)       # and it is not the raw weights
    logged = read_events(str(run)).scalars[tracking.TEST_ACCURACY].values[-1]
    assert accuracy_of(load_model(str(run)), data_dir) == pytest.approx(logged)  # and what gets evaluated


def test_ema_decay_ramps_up_from_a_copy_to_the_configured_decay():
    """The first update copies the weights; one after n earlier updates moves the average by
    1 - min(decay, (1+n)/(10+n)) towards them, so early averages do not keep the random initialisation
    (0.999**469 = 63% of it after one epoch)."""
    import dataclasses

    from perceiver_mnist.engine import build_ema

    assert build_ema(torch.nn.Linear(3, 1), TINY) is None  # --ema-decay 0: no average, the raw weights
    net = torch.nn.Linear(3, 1)
    ema = build_ema(net, dataclasses.replace(TINY, ema_decay=0.99))
    expected = None
    for n in range(2000):
        with torch.no_grad():
            net.weight.fill_(float(n))
        ema.update_parameters(net)
        decay = min(0.99, (1 + n) / (10 + n))  # n updates came before this one
        expected = float(n) if expected is None else decay * expected + (1 - decay) * n
        assert ema.module.weight[0, 0].item() == pytest.approx(expected, rel=1e-5)
    assert 1999 - 110 < expected < 1999 - 90  # capped at 0.99 from n = 890: lags 1 / (1 - 0.99) = 100 updates


@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_cosine_schedule_warms_up_then_decays_to_its_floor(floor):
    from perceiver_mnist.engine import lr_factor

    recipe = Recipe(epochs=5, warmup_epochs=1.0, scheduler="cosine", lr_floor=floor)
    factors = [lr_factor(step, recipe, steps_per_epoch=10) for step in range(50)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear warm-up over epoch 1
    assert factors[10] == pytest.approx(1.0)
    assert factors[30] == pytest.approx(floor + (1 - floor) * 0.5)  # half-way through the decay
    assert all(a > b for a, b in zip(factors[10:], factors[11:]))
    assert factors[49] == pytest.approx(floor, abs=0.002) and lr_factor(60, recipe, 10) == pytest.approx(floor)


def test_exponential_schedule_steps_once_per_epoch_as_in_the_seed():
    from perceiver_mnist.engine import lr_factor

    recipe = preset("seed")
    assert [lr_factor(s, recipe, 10) for s in (0, 9, 10, 25)] == pytest.approx([1.0, 1.0, 0.9, 0.81])
