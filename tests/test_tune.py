"""tune.py: a recipe search whose trials are real train.py runs, scored on the validation split only, that prunes,
survives a kill -9, shares one storage between workers and refuses bad input in one line."""
from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="tune.py's tests need the [tune] extra (Optuna)")

from perceiver_mnist import tracking, tune  # noqa: E402
from perceiver_mnist.config import parse_args, recipe_from_dict, recipe_to_dict, resolve_recipe  # noqa: E402
from perceiver_mnist.errors import UserError  # noqa: E402
from perceiver_mnist.events import read_events  # noqa: E402
from perceiver_mnist.faults import VARIABLE  # noqa: E402

from .conftest import NO_NETWORK, ROOT, make_dataset, offline_env, run_python  # noqa: E402

EPOCHS = 3
STEPS_PER_EPOCH = 9  # 192 synthetic training images less the 48 of the validation split, in batches of 16


def study_argv(data: Path, logdir: Path, study: str, *extra: str) -> list[str]:
    return ["--study", study, "--preset", "tiny", "--data-dir", str(data), "--logdir", str(logdir),
            "--val-size", "48", "--epochs", str(EPOCHS), "--grid-images", "0",
            "--search", "lr=log:1e-3..1e-2", "--search", "depth=1,2", *extra]


def tune_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tune.py"), *args], cwd=ROOT,
                          env={**offline_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout)


def load(logdir: Path, study: str):
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    storage = JournalStorage(JournalFileBackend(str(logdir / study / tune.JOURNAL_FILE)))
    return optuna.load_study(study_name=study, storage=storage)


def states(study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


@pytest.fixture(scope="module")
def no_test_data(tmp_path_factory) -> Path:
    """Synthetic training files and no test files at all: a trial that read the test set would fail."""
    root = make_dataset(tmp_path_factory.mktemp("trainonly"))
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (root / "MNIST" / "raw" / name).unlink()
    return root


# A pruner that stops every odd-numbered trial at its first report (the pruning path, for certain), and would stop
# the even ones at their last epoch, where a trial is complete and must not be pruned.
PRUNE_ODD = f"""
import sys, optuna
from perceiver_mnist import tune
class PruneOdd(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return trial.number % 2 == 1 or trial.last_step == {EPOCHS}
sys.exit(tune.run_study(tune.parse_tune_args(sys.argv[1:]), pruner=PruneOdd()))
"""


@pytest.fixture(scope="module")
def pruned_study(no_test_data: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    logdir = tmp_path_factory.mktemp("tune")
    result = run_python("-c", PRUNE_ODD, *study_argv(no_test_data, logdir, "s", "--trials", "4"), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return logdir, result


def test_trials_are_runs_scored_on_validation_and_pruned(pruned_study) -> None:
    logdir, result = pruned_study
    study = load(logdir, "s")
    assert states(study) == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]
    for trial in study.get_trials():
        run = logdir / "s" / f"trial-{trial.number}"
        epochs = EPOCHS if trial.state.name == "COMPLETE" else 1  # pruned at its first epoch, at once
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
        events = read_events(str(run))
        # Each epoch's validation accuracy went to Optuna as TensorBoard logged it, at the same epochs.
        assert events.scalars[tracking.VAL_ACCURACY].values == pytest.approx(
            [trial.intermediate_values[e] for e in range(1, epochs + 1)])
        assert events.scalars[tracking.VAL_ACCURACY].steps == [STEPS_PER_EPOCH * e for e in range(1, epochs + 1)]
        assert not events.has(tracking.TEST_ACCURACY)  # the test set is never scored (its files do not even exist)
        config = json.loads((run / "config.json").read_text())
        recipe = recipe_from_dict(config["recipe"], "config.json")
        assert recipe.val_size == 48 and recipe.depth == trial.params["depth"]
        assert recipe.lr == pytest.approx(trial.params["lr"])
        assert (run / "model.safetensors").is_file()  # a pruned trial is evaluated and saved where it stopped
        if trial.state.name == "COMPLETE":
            assert trial.value == trial.intermediate_values[EPOCHS]
    assert "pruned after epoch 1" in result.stdout
    report = (logdir / "s" / tune.REPORT_FILE).read_text()
    assert "4 finished trials (2 pruned, 0 failed)" in report
    assert "ran 8 of their 12 epochs (33% saved)" in report  # two trials of 3 epochs, two pruned after 1
    for png in ("history.png", "importances.png", "curves.png"):
        assert (logdir / "s" / png).stat().st_size > 5000, png


def test_best_command_trains_the_best_recipe(pruned_study) -> None:
    logdir, result = pruned_study
    study = load(logdir, "s")
    best = max((t for t in study.get_trials() if t.state.name == "COMPLETE"), key=lambda t: t.value)
    line = next(line for line in result.stdout.splitlines() if "accelerate launch train.py" in line)
    argv = shlex.split(line)[3:]
    saved = json.loads((logdir / "s" / f"trial-{best.number}" / "config.json").read_text())["recipe"]
    assert recipe_to_dict(resolve_recipe(parse_args(argv))) == saved
    assert f"Best: trial {best.number}, validation accuracy {best.value:.2f}%" in result.stdout


def test_a_trial_is_a_run_like_any_other(pruned_study, tmp_path: Path, monkeypatch) -> None:
    """figures.py compares trials on the validation split; predict.py, export.py and the demo use a trial's model."""
    from PIL import Image

    from perceiver_mnist import figures
    from perceiver_mnist.demo import describe

    from .conftest import synthetic_digits
    from .test_figures import keep_figures

    logdir, _ = pruned_study
    study_dir = logdir / "s"
    drawn = keep_figures(monkeypatch)
    figures.make_figures(str(study_dir), "trial-0", compare=["trial-1"], model_figures=False, fmt="svg")
    ax_acc, _ = drawn["compare"].axes
    assert ax_acc.get_title() == "Validation accuracy"
    for name in ("trial-0", "trial-1"):  # each line is its own trial's validation curve
        values = read_events(str(study_dir / name)).scalars[tracking.VAL_ACCURACY].values
        [line] = [ln for ln in ax_acc.get_lines() if ln.get_label().startswith(f"{name} (best")]
        assert list(line.get_ydata()) == values
    image, _ = synthetic_digits(1, seed=5)
    Image.fromarray(image[0]).save(tmp_path / "digit.png")
    predicted = run_python("predict.py", "--logdir", str(study_dir), "--run", "trial-0", str(tmp_path / "digit.png"))
    assert predicted.returncode == 0 and "digit.png" in predicted.stdout, predicted.stderr
    exported = run_python("export.py", "--logdir", str(study_dir), "--run", "trial-0", "--format", "hf", "--out",
                          str(tmp_path / "hf"))
    assert exported.returncode == 0 and (tmp_path / "hf" / "model.safetensors").is_file(), exported.stderr
    line = describe(str(study_dir / "trial-0"), "trial-0", 123)
    assert line.startswith("Model: run `trial-0`") and "test accuracy" not in line  # it scored no test set


def test_report_alone_reads_the_study(pruned_study) -> None:
    logdir, _ = pruned_study
    before = {p.name: p.stat().st_mtime_ns for p in (logdir / "s").glob("trial-*/model.safetensors")}
    result = tune_cli("--study", "s", "--logdir", str(logdir), "--report")
    assert result.returncode == 0, result.stderr
    assert "4 finished trials (2 pruned, 0 failed)" in result.stdout and "| lr | depth |" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (logdir / "s").glob("trial-*/model.safetensors")} == before


def test_killed_study_resumes_with_the_right_count(data_dir: Path, tmp_path: Path) -> None:
    argv = study_argv(data_dir, tmp_path, "k", "--trials", "3", "--pruner", "none")
    # SIGKILL after step 20 of the first trial: in its third epoch, with two epochs reported and checkpointed.
    killed = tune_cli(*argv, env={VARIABLE: "step:20"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert states(load(tmp_path, "k")) == ["RUNNING"]
    resumed = tune_cli(*argv)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ("trial 0 was running in a process that has died; marked failed, a trial that continues its run is "
            "queued") in resumed.stdout
    study = load(tmp_path, "k")
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    first, retry = study.trials[0], study.trials[1]
    assert retry.params == first.params and retry.user_attrs[tune.RETRY_ATTR] == 0
    # The continuation resumed trial 0's run at its epoch-2 checkpoint instead of training it again from the start.
    step = 2 * STEPS_PER_EPOCH
    assert f"continues trial 0 (trial-0/, 2 epochs) from its checkpoint at step {step}" in resumed.stdout
    assert f"trial-0 at epoch 2, step {step}" in resumed.stdout
    assert retry.user_attrs[tune.RUN_ATTR] == "trial-0" and not (tmp_path / "k" / "trial-1").exists()
    assert sorted(retry.intermediate_values) == [1, 2, 3]
    assert {e: retry.intermediate_values[e] for e in (1, 2)} == first.intermediate_values
    logged = read_events(str(tmp_path / "k" / "trial-0")).scalars[tracking.VAL_ACCURACY]
    assert logged.values[-1] == pytest.approx(retry.value)  # the run directory holds the whole 3-epoch run
    assert retry.user_attrs[tune.SECONDS_BEFORE_ATTR] > 0
    assert "(trial-1/)" not in tune_cli("--study", "k", "--logdir", str(tmp_path), "--report").stdout
    # Nothing more to do: the same command again trains nothing.
    again = tune_cli(*argv)
    assert again.returncode == 0 and "tune.py: trial" not in again.stdout
    assert states(load(tmp_path, "k")) == states(study)


def test_ctrl_c_stops_a_study_that_resumes(data_dir: Path, tmp_path: Path) -> None:
    argv = study_argv(data_dir, tmp_path, "c", "--trials", "2", "--pruner", "none")
    # SIGINT, as Ctrl-C sends it, on the last step of epoch 2: the epoch is evaluated, logged and checkpointed,
    # and the run stops before the study hears of it.
    step = 2 * STEPS_PER_EPOCH
    stopped = tune_cli(*argv, env={VARIABLE: f"interrupt:{step}"})
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert f"interrupted at step {step}" in stopped.stdout and "Resume with the same command" in stopped.stdout
    assert states(load(tmp_path, "c")) == ["FAIL", "WAITING"]  # the trial queued to continue, not counted
    assert sorted(load(tmp_path, "c").trials[0].intermediate_values) == [1]
    resumed = tune_cli(*argv)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = load(tmp_path, "c")
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE"]
    first, retry = study.trials[0], study.trials[1]
    assert retry.params == first.params
    # The continuation takes epoch 2's accuracy from the run's log and trains only epoch 3.
    assert f"continues trial 0 (trial-0/, 2 epochs) from its checkpoint at step {step}" in resumed.stdout
    logged = read_events(str(tmp_path / "c" / "trial-0")).scalars[tracking.VAL_ACCURACY]
    assert [retry.intermediate_values[e] for e in (1, 2, 3)] == pytest.approx(logged.values)
    assert retry.intermediate_values[1] == first.intermediate_values[1]
    assert sorted(p.name for p in (tmp_path / "c").glob("trial-*")) == ["trial-0", "trial-2"]


def test_a_recipe_whose_trials_die_twice_without_an_epoch_is_not_queued_again() -> None:
    study = optuna.create_study(direction="maximize")
    # a fresh trial that died in its first epoch: queued as a continuation of its run
    first = study.ask()
    first.set_user_attr(tune.RUN_ATTR, "trial-0")
    assert tune.fail_and_queue_again(study, first.number, {}, study.trials[0].user_attrs, progressed=False)
    assert states(study) == ["FAIL", "WAITING"]
    assert study.trials[1].user_attrs == {tune.RETRY_ATTR: 0, tune.CONTINUES_ATTR: "trial-0", tune.STALLS_ATTR: 1}
    # its continuation finishes an epoch, then dies: queued again, still in trial-0, its count of stalls reset
    second = study.ask()
    second.set_user_attr(tune.RUN_ATTR, "trial-0")
    second.set_user_attr(tune.INHERITED_ATTR, 0)
    second.set_user_attr(tune.WORKER_ATTR, f"{socket.gethostname()} 999999999 0.0")  # no such process
    second.report(90.0, 1)
    assert tune.fail_dead_trials(study) == [(second.number, True)]
    assert states(study) == ["FAIL", "FAIL", "WAITING"]
    assert study.trials[2].user_attrs[tune.CONTINUES_ATTR] == "trial-0"
    assert study.trials[2].user_attrs[tune.STALLS_ATTR] == 0
    # two deaths in a row without an epoch: a recipe that kills its worker is not tried a third time
    third = study.ask()  # trial 2, the queued continuation
    assert tune.fail_and_queue_again(study, third.number, {}, study.trials[2].user_attrs, progressed=False)
    fourth = study.ask()
    assert not tune.fail_and_queue_again(study, fourth.number, {}, study.trials[3].user_attrs, progressed=False)
    assert states(study) == ["FAIL"] * 4


def test_two_workers_fill_one_study(data_dir: Path, tmp_path: Path) -> None:
    result = tune_cli(*study_argv(data_dir, tmp_path, "w", "--trials", "4", "--pruner", "none", "--workers", "2"),
                      timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    study = load(tmp_path, "w")
    assert states(study).count("COMPLETE") == 4 and len(study.trials) == 4
    workers = {t.user_attrs[tune.WORKER_ATTR] for t in study.trials}
    assert len(workers) == 2  # both processes trained trials of the one study
    logs = [(tmp_path / "w" / f"worker-{k}.log").read_text() for k in range(2)]
    assert all("tune.py: trial" in log for log in logs)
    assert sorted(int(p.name.split("-")[1]) for p in (tmp_path / "w").glob("trial-*")) == [0, 1, 2, 3]


SEARCH = ["--search", "lr=log:1e-3..1e-2"]


def test_a_grid_runs_each_combination_once_and_reports(data_dir: Path, tmp_path: Path) -> None:
    result = tune_cli("--study", "g", "--preset", "tiny", "--data-dir", str(data_dir), "--logdir", str(tmp_path),
                      "--val-size", "48", "--epochs", "1", "--grid-images", "0", "--sampler", "grid", "--trials", "9",
                      "--search", "depth=1,2", "--search", "latent_dim=8,16")
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(tmp_path, "g")
    assert states(study) == ["COMPLETE"] * 4  # --trials 9 capped at the grid's 4 combinations
    assert sorted((t.params["depth"], t.params["latent_dim"]) for t in study.trials) == [(1, 8), (1, 16), (2, 8),
                                                                                          (2, 16)]
    assert "4 finished trials" in result.stdout


def test_a_study_on_two_processes(data_dir: Path, tmp_path: Path) -> None:
    """accelerate launch tune.py: rank 0 asks Optuna and tells the others each trial's flags and each pruning
    decision; every trial trains on both processes."""
    from .conftest import ACCELERATE

    cmd = [ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / "multi_cpu.yaml"),
           str(ROOT / "tune.py"), *study_argv(data_dir, tmp_path, "d", "--trials", "2", "--pruner", "none")]
    result = subprocess.run(cmd, cwd=ROOT, env=offline_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(tmp_path, "d")
    assert states(study) == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        config = json.loads((tmp_path / "d" / f"trial-{trial.number}" / "config.json").read_text())
        assert config["num_processes"] == 2
    assert result.stdout.count("tune.py: trial 1 ") == 1  # one process speaks for the study
    assert result.stdout.count("# Study d") == 1


@pytest.mark.parametrize("args, words", [
    (["--search", "lrr=1..2"], ["'lrr' is not a recipe field", "searchable"]),
    (["--search", "dataset=mnist,fashion-mnist"], ["dataset cannot be searched", "--dataset"]),
    (["--search", "val_size=100..200"], ["val_size cannot be searched"]),
    (["--search", "epochs=4..2"], ["range is empty"]),
    (["--search", "epochs=1.5..3"], ["'1.5' is not a value of --epochs"]),
    (["--search", "lr=log:0..1"], ["log range needs LOW > 0"]),
    (["--search", "adapter=1..2"], ["needs a numeric field"]),
    (["--search", "hflip=0..0.5"], ["hflip = 0.5", "mirror"]),
    (["--search", "batch_size=16,16"], ["listed twice"]),
    (["--search", "depth=1,2", "--search", "depth=3,4"], ["given twice"]),
    ([*SEARCH, "--lr", "0.01"], ["--lr fixes what --search lr"]),
    ([*SEARCH, "--val-size", "0"], ["--val-size 0", "validation"]),
    ([*SEARCH, "--run", "x"], ["--run is not a tune.py flag"]),
    ([*SEARCH, "--sampler", "grid"], ["--sampler grid needs every --search to be a list"]),
    ([*SEARCH, "--storage", "sqlite:////nonexistent-dir/x/study.db"], ["cannot open the storage", "reachable"]),
    ([*SEARCH, "--data-dir", "/nonexistent"], ["/nonexistent"]),
    (["--search", "lr=log:1e-3..1e-2", "--trials", "0"], ["--trials must be positive"]),
    (["--report"], ["no study in", "--search"]),
    ([*SEARCH, "--enqueue", "lr=0.002,depth=2"], ["'depth' is not searched"]),
    ([*SEARCH, "--enqueue", "lr=0.5"], ["lr = 0.5 is outside --search lr=log:0.001..0.01"]),
    ([*SEARCH, "--enqueue", "lr"], ["expected FIELD=VALUE"]),
    ([*SEARCH, "--enqueue", "lr=abc"], ["--enqueue lr=abc: 'abc' is not a value of --lr"]),
    (["--search", "depth=1,2", "--sampler", "grid", "--enqueue", "depth=1"], ["does not go with --sampler grid"]),
])
def test_bad_input_is_one_line_and_writes_nothing(data_dir: Path, tmp_path: Path, monkeypatch, args, words) -> None:
    for name, value in NO_NETWORK.items():  # a missing dataset's download fails at once
        monkeypatch.setenv(name, value)
    argv = ["--study", "bad", "--preset", "tiny", "--data-dir", str(data_dir), "--logdir", str(tmp_path / "runs"),
            "--val-size", "48", *args]
    with pytest.raises(UserError) as err:
        tune.main(argv)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert not (tmp_path / "runs").exists()


def test_bad_input_on_the_command_line(data_dir: Path, tmp_path: Path) -> None:
    result = tune_cli(*study_argv(data_dir, tmp_path, "bad"), "--search", "lrr=1..2")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("tune.py: error:")
    assert "'lrr' is not a recipe field" in result.stderr and "Traceback" not in result.stderr


def test_a_study_with_another_space_is_refused(pruned_study, no_test_data: Path) -> None:
    logdir, _ = pruned_study
    journal = (logdir / "s" / tune.JOURNAL_FILE).read_bytes()
    argv = study_argv(no_test_data, logdir, "s", "--trials", "5")
    argv[argv.index("depth=1,2")] = "depth=1,2,3"
    with pytest.raises(UserError, match="exists with another search space"):
        tune.main(argv)
    assert (logdir / "s" / tune.JOURNAL_FILE).read_bytes() == journal


def test_without_optuna_says_what_to_install(tmp_path: Path) -> None:
    code = ("import sys, runpy; sys.modules['optuna'] = None; "
            f"sys.argv = ['tune.py', '--study', 'x', '--logdir', {str(tmp_path)!r}, '--search', 'lr=log:1e-3..1e-2']; "
            "runpy.run_path('tune.py', run_name='__main__')")
    result = run_python("-c", code)
    assert result.returncode == 2 and 'pip install -e ".[tune]"' in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_enqueued_trials_run_first_and_only_when_the_study_is_created(data_dir: Path, tmp_path: Path) -> None:
    argv = ["--study", "q", "--preset", "tiny", "--data-dir", str(data_dir), "--logdir", str(tmp_path),
            "--val-size", "48", "--search", "lr=log:1e-3..1e-2", "--search", "depth=1,2,3"]
    args = tune.parse_tune_args([*argv, "--enqueue", "depth=3,lr=0.002", "--enqueue", "depth=2"])
    assert args.enqueued == [{"depth": 3, "lr": 0.002}, {"depth": 2}]
    study = tune.load_or_create_study(args)
    first, second = study.ask(), study.ask()
    assert {s.field: s.suggest(first) for s in args.specs} == {"lr": 0.002, "depth": 3}
    assert second.suggest_categorical("depth", [1, 2, 3]) == 2  # the rest of it drawn
    assert 1e-3 <= second.suggest_float("lr", 1e-3, 1e-2, log=True) <= 1e-2
    # resumed (the study exists): its queue is not filled again
    resumed = tune.load_or_create_study(tune.parse_tune_args([*argv, "--enqueue", "depth=1"]))
    assert [t.state.name for t in resumed.get_trials()] == ["RUNNING", "RUNNING"]


def test_search_specs() -> None:
    assert tune.parse_search("lr=log:1e-4..1e-2") == tune.SearchSpec("lr", "log", 1e-4, 1e-2)
    assert tune.parse_search("depth=1..4") == tune.SearchSpec("depth", "uniform", 1, 4, integer=True)
    assert tune.parse_search("rotate=0..20").integer is False  # a float field stays continuous
    assert tune.parse_search("adapter=patches,conv").values == ("patches", "conv")
    assert tune.parse_search("decoder-ff=true,false").values == (True, False)
    assert tune.to_argv({"lr": 0.003, "decoder_ff": False, "depth": 2}) == ["--lr", "0.003", "--no-decoder-ff",
                                                                           "--depth", "2"]


def test_the_fraction_pruner_compares_schedules_of_different_lengths_at_the_same_fraction():
    """Three complete 60-epoch trials, and a 150-epoch one at epoch 30 (a fifth of its schedule) whose accuracy lies
    between theirs at a fifth of their schedule (epoch 12) and at epoch 30: judged at matched fractions it goes on,
    where Optuna's median pruner (same epoch) would stop it; below their median at epoch 12 it stops."""
    def curve(epochs: int, rise: float) -> dict[int, float]:  # accuracy climbing with the fraction of the schedule
        return {e: 80 + rise * e / epochs for e in range(1, epochs + 1)}

    def judged(pruner, accuracy: float) -> bool:
        study = optuna.create_study(direction="maximize", pruner=pruner)
        for rise in (10.0, 11.0, 12.0):  # at epoch 12 of 60: 82.0, 82.2, 82.4; at epoch 30: 85.0, 85.5, 86.0
            values = curve(60, rise)
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=values[60],
                                                      intermediate_values=values,
                                                      user_attrs={tune.EPOCHS_ATTR: 60}))
        trial = study.ask()
        trial.set_user_attr(tune.EPOCHS_ATTR, 150)
        for epoch in range(1, 31):
            trial.report(min(accuracy, 80 + 0.1 * epoch), epoch)
        return trial.should_prune()

    assert judged(tune.make_pruner("median"), 83.0)  # Optuna's median pruner: epoch 30 against epoch 30
    assert not judged(tune.make_pruner("fraction"), 83.0)  # 83.0 >= 82.2, their median at a fifth of 60 epochs
    assert judged(tune.make_pruner("fraction"), 82.1)      # below it
