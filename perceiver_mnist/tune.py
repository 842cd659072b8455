"""Recipe search on the validation split with Optuna: the logic behind ``tune.py``.

A study lives in one directory, ``LOGDIR/STUDY/``:

    study.journal     Optuna's journal file: the study's storage, unless --storage names a database
    trial-N/          one run directory per trial, like any train.py run (config.json, events, checkpoints, weights)
    report.md         the table of trials and the best trial's train.py command (also printed)
    history.png, importances.png, curves.png   Optuna's optimisation history and parameter importances, the
                      validation curves of the best trials

Each trial is ``engine.train`` in this process with the trial's recipe: the learner, step, schedule, weight
average and compilation (from the accelerate config) of train.py, untouched. It is a selection run
(``engine.train(selection=True)``): scored on the fixed validation split, with the test set never loaded. Its
validation accuracy goes to Optuna after every epoch; a trial the pruner stops ends there, evaluated and saved,
and is marked pruned.

Why ask-and-tell around ``engine.train`` instead of ``study.optimize``: with several processes (accelerate launch)
only rank 0 may talk to the study, and the others must train the same trial and stop at the same epoch, so the
trial's flags and each pruning decision are broadcast; and the journal storage has no heartbeat, so a trial whose
worker was killed is found here by its recorded process (``fail_dead_trials``).

An interrupted trial (Ctrl-C, SIGTERM, a killed worker) is queued again as a continuation: the next session resumes
its run directory from the newest complete checkpoint, with the epochs already reported copied into the new trial,
so that an hour-long trial stopped at the end of a session loses at most the epoch in progress. Optuna cannot
reopen a finished (failed) trial, hence a new trial that continues the old one's run.
"""
from __future__ import annotations

import math
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from typing import Any, Sequence

from .config import (OneLineParser, ParsedArgs, Recipe, _add_fields, _f, _flag, build_parser, parse_args,
                     resolve_recipe)
from .data import SELECTION_VAL_SIZE
from .errors import EXIT_INTERRUPTED, NonFiniteLoss, UserError, cpu_process_group, in_multi_process_run

JOURNAL_FILE = "study.journal"
REPORT_FILE = "report.md"
TRIAL_DIR = "trial-{number}"
PLOTS = {"history": "history.png", "importances": "importances.png", "curves": "curves.png"}
WORKER_ATTR = "worker"        # the trial's process, "host pid start-time": how a dead worker's trial is found
RETRY_ATTR = "retry_of"       # a trial queued again after an interruption: the number of the one it continues
RUN_ATTR = "run"              # the run directory a trial trains in (its own trial-N, or the one it continues)
CONTINUES_ATTR = "continues"  # a queued continuation: the run directory to resume from its newest checkpoint
INHERITED_ATTR = "inherited_epochs"  # a continuation: the epochs reported before it, copied from the trial it continues
SECONDS_BEFORE_ATTR = "seconds_before"  # a continuation: its run's training time before it (the checkpoint's clock)
STALLS_ATTR = "stalls"        # a queued continuation: how many trials of its recipe in a row died without an epoch
EPOCHS_ATTR = "epochs"        # the trial's planned epochs (how much time its pruning saved)
TRAIN_ARGS_ATTR = "train_args"  # the trial's train.py flags, as run
WORKER_VARIABLE = "PERCEIVER_MNIST_TUNE_WORKER"  # set by --workers: which worker a process is (its sampler's seed)

# Recipe fields a search may not vary, and why.
UNSEARCHABLE = {
    "dataset": "the study's dataset is fixed: give --dataset",
    "val_size": "the validation split is what trials are scored on: give --val-size",
    "test_batch_size": "it changes no trained weight, only evaluation's memory",
}
# train.py's flags that tune.py sets itself for each trial.
NOT_TRAIN_FLAGS = {"run": "each trial is named trial-N", "resume": "run the same tune.py command again to resume "
                   "a study"}


@dataclass
class TuneOptions:
    """What the search does; the trials' fixed recipe comes from train.py's own flags."""

    study: str = _f("", "Name of the study (required): its directory is LOGDIR/STUDY and its Optuna name STUDY. "
                    "Running the same command again resumes it.")
    trials: int = _f(20, "Finished (complete or pruned) trials the study should hold; a resumed study runs only the "
                     "missing ones. Failed trials do not count.", limits="(0, inf)")
    timeout: float = _f(0.0, "Start no new trial after this many seconds of this session (0: no limit).",
                        limits="[0, inf)", unit="seconds")
    storage: str = _f("", "Optuna storage URL shared by workers on several machines, e.g. "
                      "postgresql://user:pass@host/db or mysql://... (empty: the journal file LOGDIR/STUDY/"
                      f"{JOURNAL_FILE}).")
    pruner: str = _f("median", "Stop trials early: below the median of earlier trials at the same epoch; below "
                     "their median at the same fraction of each one's schedule (for a search over --epochs); "
                     "successive halving; or never.", ["median", "fraction", "halving", "none"])
    sampler: str = _f("tpe", "How trials are drawn: TPE (Bayesian), at random, or every combination of the "
                      "--search lists (grid).", ["tpe", "random", "grid"])
    workers: int = _f(1, "Trials side by side, each in its own process sharing the study (on one GPU; 1 on a "
                      "2-core CPU).", limits="(0, inf)")
    report: bool = _f(False, "Only print the study's report and redraw its figures; train nothing.")


# ----------------------------------------------------------------------------------------------------------
# The search space
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchSpec:
    """One ``--search FIELD=SPEC``: a log-uniform or uniform range, or a list of values."""

    field: str
    kind: str                     # "log", "uniform" or "choice"
    low: float = 0.0
    high: float = 0.0
    values: tuple[Any, ...] = ()
    integer: bool = False         # an int field: suggest_int

    def text(self) -> str:
        """The spec as given (normalised): how the study records its search space."""
        if self.kind == "choice":
            return ",".join(_format(v) for v in self.values)
        return f"{'log:' if self.kind == 'log' else ''}{_format(self.low)}..{_format(self.high)}"

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.field, list(self.values))
        if self.integer:
            return trial.suggest_int(self.field, int(self.low), int(self.high), log=self.kind == "log")
        return trial.suggest_float(self.field, self.low, self.high, log=self.kind == "log")


def _format(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _recipe_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(Recipe)}


def _value(name: str, text: str, kind: str, spec: str, flag: str = "--search") -> Any:
    """``text`` as a value of the recipe field ``name`` (of type ``kind``), or a ``UserError`` about ``flag spec``."""
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        return {"int": int, "float": float, "str": str}[kind](text)
    except ValueError:
        raise UserError(f"{flag} {spec}: {text!r} is not a value of --{_flag(name)} ({kind})") from None


def _field_name(text: str) -> str:
    """A recipe field's name as given to --search or --enqueue (``lr``, ``latent-dim``, ``--depth``)."""
    return text.strip().lstrip("-").replace("-", "_")


def parse_search(spec: str) -> SearchSpec:
    """``FIELD=SPEC`` checked against the recipe's fields and types (values are checked against the recipe by
    ``check_space``)."""
    field_text, eq, body = spec.partition("=")
    name = _field_name(field_text)
    types = _recipe_types()
    if not eq or not body.strip():
        raise UserError(f"--search {spec!r}: expected FIELD=SPEC, e.g. lr=log:1e-4..1e-2, depth=1..4 or "
                        f"adapter=patches,conv")
    if name not in types:
        raise UserError(f"--search {spec}: {field_text!r} is not a recipe field; searchable: "
                        f"{', '.join(n for n in types if n not in UNSEARCHABLE)}")
    if name in UNSEARCHABLE:
        raise UserError(f"--search {spec}: {name} cannot be searched ({UNSEARCHABLE[name]})")
    kind, body = types[name], body.strip()
    log = body.startswith("log:")
    if log or ".." in body:
        low_text, dots, high_text = body.removeprefix("log:").partition("..")
        if kind not in ("int", "float") or not dots:
            what = "a range LOW..HIGH" if dots else "log:LOW..HIGH"
            raise UserError(f"--search {spec}: {what} needs a numeric field, and --{_flag(name)} is {kind}; give "
                            f"a list of values instead (a,b,c)" if kind not in ("int", "float") else
                            f"--search {spec}: log: needs a range, log:LOW..HIGH")
        low, high = _value(name, low_text.strip(), kind, spec), _value(name, high_text.strip(), kind, spec)
        if not low < high:
            raise UserError(f"--search {spec}: the range is empty (LOW must be below HIGH; for one value give "
                            f"--{_flag(name)} instead)")
        if log and low <= 0:
            raise UserError(f"--search {spec}: a log range needs LOW > 0")
        return SearchSpec(name, "log" if log else "uniform", low=low, high=high, integer=kind == "int")
    values = tuple(_value(name, v.strip(), kind, spec) for v in body.split(","))
    if len(set(values)) < len(values):
        raise UserError(f"--search {spec}: a value is listed twice")
    if len(values) < 2:
        raise UserError(f"--search {spec}: one value is no search; give --{_flag(name)} {body} instead")
    return SearchSpec(name, "choice", values=values)


def check_space(specs: Sequence[SearchSpec], base_argv: list[str]) -> None:
    """Refuse a search space some of whose recipes train.py would refuse: every listed value and both ends of each
    range, each on top of the fixed flags (e.g. --hflip on MNIST, whose digits do not survive a mirror)."""
    seen = set()
    for spec in specs:
        if spec.field in seen:
            raise UserError(f"--search {spec.field} is given twice; give one spec per field")
        seen.add(spec.field)
        for value in spec.values if spec.kind == "choice" else (spec.low, spec.high):
            try:
                parse_args([*base_argv, *to_argv({spec.field: value})], prog="tune.py")
            except UserError as err:
                raise UserError(f"--search {spec.field}={spec.text()}: with {spec.field} = {_format(value)}, {err}") \
                    from None


def to_argv(values: dict[str, Any]) -> list[str]:
    """train.py flags for recipe or option values (booleans as --x / --no-x)."""
    argv = []
    for name, value in values.items():
        if isinstance(value, bool):
            argv.append(f"--{'' if value else 'no-'}{_flag(name)}")
        else:
            argv += [f"--{_flag(name)}", repr(value) if isinstance(value, float) else str(value)]
    return argv


# ----------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------

@dataclass
class TuneArgs:
    """A parsed tune.py command line."""

    options: TuneOptions
    specs: list[SearchSpec]
    base_argv: list[str]          # train.py flags every trial shares (with --val-size and --logdir LOGDIR/STUDY)
    base: ParsedArgs              # those flags parsed: the fixed recipe's preset and overrides, the run options
    logdir: str                   # LOGDIR (the study's parent)
    argv: list[str]               # the command line as given (--workers hands it on)
    enqueued: list[dict[str, Any]]  # --enqueue: trials to run first, in order

    @property
    def study_dir(self) -> str:
        return os.path.join(self.logdir, self.options.study)


def build_tune_parser() -> OneLineParser:
    parser = build_parser("tune.py")
    parser.description = (
        "Search a recipe on the validation split with Optuna. Every trial is a train.py run (same learner, step, "
        "schedule, weight average; hardware, precision and compilation from the accelerate config: `accelerate "
        "launch [--config_file X] tune.py ...`), scored on --val-size images held out of training (5000 unless "
        "given), never on the test set. train.py's flags below fix that part of every trial's recipe (not --run or "
        "--resume). Example: tune.py --study lr --trials 20 --preset fast --epochs 3 --search lr=log:1e-3..1e-2")
    group = parser.add_argument_group("search")
    _add_fields(group, TuneOptions, recipe_fields=False)
    group.add_argument("--search", action="append", default=[], metavar="FIELD=SPEC",
                       help="A recipe field to search (a flag's name without dashes) and its range: log:LOW..HIGH "
                            "(log-uniform), LOW..HIGH (uniform; whole numbers for an integer field) or a,b,c (one "
                            "of these). Repeat for several fields.")
    group.add_argument("--enqueue", action="append", default=[], metavar="FIELD=VALUE,...",
                       help="A trial to run before any the sampler draws, e.g. today's recipe as the baseline: a "
                            "value for some of the searched fields (the others are drawn), comma-separated. Repeat "
                            "for several trials. Used when the study is created; ignored when it is resumed.")
    return parser  # type: ignore[return-value]


def parse_tune_args(argv: Sequence[str] | None = None) -> TuneArgs:
    """Parse and check the whole command line (nothing is written, nothing heavy imported)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    given = vars(build_tune_parser().parse_args(argv))
    tune_names = {f.name for f in fields(TuneOptions)}
    options = TuneOptions(**{k: v for k, v in given.items() if k in tune_names})
    from .config import _check_limits
    _check_limits(options)
    if not options.study:
        raise UserError("--study NAME is required (the study's directory is LOGDIR/NAME)")
    if options.study in (".", "..") or "/" in options.study or "\\" in options.study:
        raise UserError(f"--study must be a plain directory name, got {options.study!r}")
    for name, why in NOT_TRAIN_FLAGS.items():
        if name in given:
            raise UserError(f"--{name} is not a tune.py flag ({why})")
    if not given["search"] and not options.report:
        raise UserError("give at least one --search FIELD=SPEC (e.g. --search lr=log:1e-4..1e-2)")
    specs = [parse_search(s) for s in given["search"]]
    train_values = {k: v for k, v in given.items() if k not in tune_names and k not in ("search", "enqueue", "preset")}
    for spec in specs:
        if spec.field in train_values:
            raise UserError(f"--{_flag(spec.field)} fixes what --search {spec.field}=... varies; give one of them")
    train_values.setdefault("val_size", SELECTION_VAL_SIZE)
    if not train_values["val_size"]:
        raise UserError("--val-size 0 leaves no validation split to score trials on; give --val-size N (N > 0)")
    logdir = train_values.pop("logdir", parse_args([]).options.logdir)
    if options.sampler == "grid" and any(s.kind != "choice" for s in specs):
        raise UserError("--sampler grid needs every --search to be a list of values (a,b,c)")
    preset = ["--preset", given["preset"]] if "preset" in given else []
    base_argv = [*preset, *to_argv(train_values), "--logdir", os.path.join(logdir, options.study)]
    base = parse_args(base_argv, prog="tune.py")  # the fixed part alone, as train.py would check it
    check_space(specs, base_argv)
    if options.workers > 1 and in_multi_process_run():
        raise UserError("--workers N runs N single-process workers; under a multi-process accelerate launch use "
                        "--workers 1")
    if given["enqueue"] and options.sampler == "grid":
        raise UserError("--enqueue does not go with --sampler grid: the grid runs each combination once already")
    enqueued = [parse_enqueue(text, specs) for text in given["enqueue"]]
    return TuneArgs(options, specs, base_argv, base, logdir, argv, enqueued)


def parse_enqueue(text: str, specs: Sequence[SearchSpec]) -> dict[str, Any]:
    """``--enqueue FIELD=VALUE,...``: values of searched fields, each inside its ``--search`` range or list."""
    searched = {s.field: s for s in specs}
    types = _recipe_types()
    params = {}
    for item in text.split(","):
        field_text, eq, value_text = item.partition("=")
        name = _field_name(field_text)
        if not eq or not value_text.strip():
            raise UserError(f"--enqueue {text}: expected FIELD=VALUE,FIELD=VALUE, e.g. epochs=60,mixup=0.0")
        if name not in searched:
            raise UserError(f"--enqueue {text}: {name!r} is not searched; give values of the --search fields "
                            f"({', '.join(searched)}) only")
        spec = searched[name]
        value = _value(name, value_text.strip(), types[name], text, flag="--enqueue")
        inside = value in spec.values if spec.kind == "choice" else spec.low <= value <= spec.high
        if not inside:
            raise UserError(f"--enqueue {text}: {name} = {_format(value)} is outside --search {name}={spec.text()}")
        params[name] = value
    return params


def trial_argv(args: TuneArgs, params: dict[str, Any], run: str) -> list[str]:
    return [*args.base_argv, *to_argv(params), "--run", run]


def without_flags(argv: Sequence[str], *flags: str) -> list[str]:
    """``argv`` less each of ``flags`` (given as ``--flag VALUE`` or ``--flag=VALUE``) and its value."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token in flags:
            skip = True
        elif not token.startswith(tuple(f"{flag}=" for flag in flags)):
            out.append(token)
    return out


def train_command(train_args: list[str]) -> str:
    """The train.py command line that trains a trial's recipe again (its run options less --logdir and --run)."""
    return shlex.join(["accelerate", "launch", "train.py", *without_flags(train_args, "--logdir", "--run")])


# ----------------------------------------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------------------------------------

def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError('tune.py needs Optuna: python -m pip install -e ".[tune]"') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(args: TuneArgs, create: bool) -> Any:
    """The study's storage: --storage's database, else the journal file in the study's directory (created only
    when ``create``)."""
    optuna = _optuna()
    url = args.options.storage
    if url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as err:  # any driver's connection error, a missing driver, a malformed URL
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot open the storage {url} ({detail[:200]}); check that the database is running "
                            f"and reachable, and that its Python driver is installed") from None
    path = os.path.join(args.study_dir, JOURNAL_FILE)
    if not create and not os.path.isfile(path):
        raise UserError(f"no study in {args.study_dir} ({JOURNAL_FILE} not found); start it with tune.py --study "
                        f"{args.options.study} --search ...")
    if create:
        os.makedirs(args.study_dir, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    return JournalStorage(JournalFileBackend(path))


def _sampler(args: TuneArgs, seed: int) -> Any:
    """The sampler, seeded from --seed: a fresh single-worker study draws the same trials every time."""
    optuna = _optuna()
    if args.options.sampler == "grid":
        return optuna.samplers.GridSampler({s.field: list(s.values) for s in args.specs}, seed=seed)
    if args.options.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(name: str) -> Any:
    """Median: a trial below the median of earlier trials at the same epoch stops (after 3 trials, so that there is
    a median to judge by). Fraction: the same, at the same fraction of each trial's schedule
    (``matched_fraction_pruner``). Halving: successive halving, judged at epochs 1, 3, 9, ...: only the best third of
    the trials reaching a rung goes on."""
    optuna = _optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "fraction":
        return matched_fraction_pruner()
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def matched_fraction_pruner(n_startup_trials: int = 3, min_fraction: float = 0.1) -> Any:
    """The median rule at matched fractions of each trial's own schedule.

    Optuna's pruners compare trials at the same step, here the same epoch. When a search varies --epochs, that
    compares epoch 30 of a 150-epoch schedule, still at a high learning rate, with epoch 30 of a 60-epoch one,
    half-way down its decay, and prunes long schedules for being long. This one judges a trial at epoch e of its E
    planned epochs (``EPOCHS_ATTR``) by its best accuracy so far against the median, over the complete trials, of
    each one's accuracy at its first epoch at or past the fraction e / E of its own schedule; from a tenth of the
    schedule on, once ``n_startup_trials`` trials are complete. Intermediate values stay keyed by epoch, so reports
    and curves read them as for the other pruners."""
    optuna = _optuna()

    class MatchedFractionPruner(optuna.pruners.BasePruner):
        def prune(self, study: Any, trial: Any) -> bool:
            step, planned = trial.last_step, trial.user_attrs.get(EPOCHS_ATTR)
            if step is None or not planned or step / planned < min_fraction:
                return False
            complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                        if t.user_attrs.get(EPOCHS_ATTR)]
            if len(complete) < n_startup_trials:
                return False
            # the first epoch at or past the same fraction (less a rounding error, so that 6/60 matches 15/150)
            at = [math.ceil(step / planned * t.user_attrs[EPOCHS_ATTR] - 1e-9) for t in complete]
            values = [t.intermediate_values[e] for t, e in zip(complete, at) if e in t.intermediate_values]
            # the study maximises validation accuracy
            return bool(values) and max(trial.intermediate_values.values()) < statistics.median(values)

    return MatchedFractionPruner()


def load_or_create_study(args: TuneArgs, pruner: Any = None) -> Any:
    """The study named --study: created with the search space recorded, or loaded after checking that it was
    created with the same search space and fixed flags."""
    optuna = _optuna()
    seed = args.base.options.seed
    space = {s.field: s.text() for s in args.specs}
    fixed = list(args.base_argv)
    no_journal = not args.options.storage and not os.path.isfile(os.path.join(args.study_dir, JOURNAL_FILE))
    if no_journal and os.path.isdir(args.study_dir) and any(n.startswith("trial-") for n in os.listdir(args.study_dir)):
        raise UserError(f"{args.study_dir} holds trials but no {JOURNAL_FILE}; pick another --study name")
    storage = open_storage(args, create=not args.options.report)
    pruner = pruner if pruner is not None else make_pruner(args.options.pruner)
    try:
        study = optuna.load_study(study_name=args.options.study, storage=storage, pruner=pruner)
    except KeyError:
        study = None
    if study is None and args.options.report:
        raise UserError(f"no study named {args.options.study!r} in {args.options.storage or args.study_dir}")
    if study is None:
        study = optuna.create_study(study_name=args.options.study, storage=storage, direction="maximize",
                                    sampler=_sampler(args, seed), pruner=pruner)
        study.set_user_attr("search", space)
        study.set_user_attr("fixed", fixed)
        for params in args.enqueued:
            study.enqueue_trial(params)
        return study
    if args.options.report and not args.specs:  # --report alone: the study's own space
        args.specs[:] = [parse_search(f"{k}={v}") for k, v in study.user_attrs.get("search", {}).items()]
        return study
    if study.user_attrs.get("search") != space or study.user_attrs.get("fixed") != fixed:
        was = " ".join(f"--search {k}={v}" for k, v in (study.user_attrs.get("search") or {}).items())
        raise UserError(f"study {args.options.study!r} exists with another search space or fixed flags ({was} "
                        f"{shlex.join(study.user_attrs.get('fixed') or [])}); repeat those to resume it, or pick "
                        f"another --study name")
    # A resumed session (or another worker) draws other numbers than the first: seeded by the trials so far too.
    import numpy as np
    worker = int(os.environ.get(WORKER_VARIABLE, "0"))
    study.sampler = _sampler(args, int(np.random.SeedSequence([seed, worker, len(study.trials)]).generate_state(1)[0]))
    return study


def _this_worker() -> str:
    import psutil
    return f"{socket.gethostname()} {os.getpid()} {psutil.Process().create_time():.3f}"


def _alive(worker: str) -> bool | None:
    """Whether the worker "host pid start-time" still runs; None when it ran on another machine (unknowable)."""
    import psutil
    host, pid, started = worker.rsplit(" ", 2)
    if host != socket.gethostname():
        return None
    try:
        return abs(psutil.Process(int(pid)).create_time() - float(started)) < 0.01
    except (psutil.Error, ValueError):
        return False


def fail_dead_trials(study: Any) -> list[tuple[int, bool]]:
    """Mark failed the running trials whose worker on this machine has died (killed, or the machine rebooted), and
    queue each one's continuation (``fail_and_queue_again``). Returns each failed trial's number and whether its
    continuation was queued."""
    optuna = _optuna()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if worker is None or _alive(worker) is not False:
            continue
        progressed = len(trial.intermediate_values) > trial.user_attrs.get(INHERITED_ATTR, 0)
        failed.append((trial.number, fail_and_queue_again(study, trial.number, trial.params, trial.user_attrs,
                                                          progressed)))
    return failed


def tell(study: Any, trial: Any, *args: Any, **kwargs: Any) -> None:
    """``study.tell``, except that a grid sampler's ``study.stop()`` after its last combination is the grid's end, not
    an error: Optuna allows that call only inside ``study.optimize``, which tune.py does not use (it asks and tells),
    and it stores the trial before the sampler's hook runs, so nothing is lost."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as err:
        if not (isinstance(study.sampler, _optuna().samplers.GridSampler) and "Study.stop" in str(err)):
            raise


def fail_and_queue_again(study: Any, number: int, params: dict[str, Any], user_attrs: dict[str, Any],
                         progressed: bool) -> bool:
    """Mark an unfinished trial failed (it never counts) and queue its continuation, which resumes the trial's run
    from its newest checkpoint (or trains the recipe afresh where there is none). ``progressed``: whether the trial
    finished an epoch (or was stopped by its user); a recipe whose trials die twice in a row without finishing one
    kills its worker, and is not queued a third time. Returns whether a continuation was queued."""
    tell(study, number, state=_optuna().trial.TrialState.FAIL)
    stalls = 0 if progressed else user_attrs.get(STALLS_ATTR, 0) + 1
    if stalls >= 2:
        return False
    run = user_attrs.get(RUN_ATTR) or user_attrs.get(CONTINUES_ATTR) or TRIAL_DIR.format(number=number)
    study.enqueue_trial(params, user_attrs={RETRY_ATTR: number, CONTINUES_ATTR: run, STALLS_ATTR: stalls})
    return True


@dataclass
class TrialStart:
    """How a trial begins: afresh in its own ``trial-N``, or as a continuation of a stopped trial's run."""

    argv: list[str]               # its train.py flags (with --resume for a continuation)
    searched: list[str]           # the flags of the searched fields alone (for the log)
    inherited: dict[int, float]   # epoch -> validation accuracy the continued run reached before (already reported)
    note: str = ""                # what it continues, for the log


def start_trial(args: TuneArgs, study: Any, trial: Any) -> TrialStart:
    """A fresh trial, or the continuation of a stopped one: it resumes that run from its newest complete
    checkpoint and starts with the validation accuracy of every epoch up to the checkpoint reported, so that
    the pruner judges its whole curve."""
    from .checkpoints import complete_checkpoints
    params = {s.field: s.suggest(trial) for s in args.specs}
    run = trial.user_attrs.get(CONTINUES_ATTR)
    saved = complete_checkpoints(os.path.join(args.study_dir, run)) if run else []
    if not saved:
        run = TRIAL_DIR.format(number=trial.number)
    argv = trial_argv(args, params, run)
    trial.set_user_attr(RUN_ATTR, run)
    trial.set_user_attr(TRAIN_ARGS_ATTR, argv)
    if not saved:
        return TrialStart(argv, to_argv(params), {})
    position = saved[-1][1]
    previous = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.user_attrs[RETRY_ATTR])
    # The run's own log fills what the stopped trial never reported (a stop on an epoch's last step saves the
    # evaluated epoch's checkpoint but returns before the report); what it did report wins (the log is float32).
    inherited = logged_val_accuracy(os.path.join(args.study_dir, run), position.step)
    inherited.update({e: v for e, v in previous.intermediate_values.items() if e <= position.epoch})
    trial.set_user_attr(INHERITED_ATTR, len(inherited))  # first: a death while reporting is no progress
    trial.set_user_attr(SECONDS_BEFORE_ATTR, position.elapsed_s)
    for epoch, value in sorted(inherited.items()):
        trial.report(value, epoch)
    return TrialStart([*argv, "--resume"], to_argv(params), inherited,
                      f"continues trial {previous.number} ({run}/, {len(inherited)} epochs) from its checkpoint at "
                      f"step {position.step}")


def logged_val_accuracy(run_dir: str, up_to_step: int) -> dict[int, float]:
    """Epoch -> validation accuracy logged by the run at its epoch ends up to ``up_to_step`` (none without events)."""
    from . import tracking
    from .events import read_events
    from .figures import per_epoch
    try:
        events = read_events(run_dir)
    except UserError:
        return {}
    if tracking.VAL_ACCURACY not in events.scalars or tracking.EPOCH not in events.scalars:
        return {}
    epochs, values = per_epoch(events, tracking.VAL_ACCURACY)
    steps = events.scalars[tracking.VAL_ACCURACY].steps
    return {int(e): float(v) for step, e, v in zip(steps, epochs, values) if step <= up_to_step and e.is_integer()}


def _counts(study: Any) -> tuple[int, int]:
    """(finished: complete or pruned, running) trials of the study."""
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    return sum(s in ("COMPLETE", "PRUNED") for s in states), states.count("RUNNING")


@dataclass
class TrialResult:
    state: str                   # "COMPLETE", "PRUNED", "FAIL" or "INTERRUPTED"
    value: float | None = None
    message: str = ""


def run_trial(args: TuneArgs, study: Any | None, acc_state: Any) -> TrialResult | None:
    """Ask for one trial (rank 0), train it on every process, tell the study what came of it (rank 0). Returns
    None on rank 0 when the study already holds --trials trials (on every process, alike)."""
    from accelerate.utils import broadcast_object_list

    from .engine import train
    optuna = _optuna() if study is not None else None
    main = acc_state.is_main_process
    plan: list[Any] = [None]
    trial = None
    if main:
        finished, running = _counts(study)
        if finished + running < args.options.trials:
            trial = study.ask()
            trial.set_user_attr(WORKER_ATTR, _this_worker())
            start = start_trial(args, study, trial)
            plan = [(trial.number, start.argv)]
    if acc_state.num_processes > 1:
        plan = broadcast_object_list(plan)
    if plan[0] is None:
        return None
    number, argv = plan[0]
    parsed = parse_args(argv, prog="tune.py")
    recipe = resolve_recipe(parsed)
    if trial is not None:
        trial.set_user_attr(EPOCHS_ATTR, recipe.epochs)
        finished, _ = _counts(study)
        print(f"tune.py: trial {number} ({finished} of {args.options.trials} finished): "
              f"{shlex.join(start.searched)}{'; ' + start.note if start.note else ''}", flush=True)
    # A continuation's inherited epochs are reported already (its run retrains one only after an unreadable checkpoint).
    inherited = start.inherited if trial is not None else {}
    pruned, last, new_epochs = [False], [None], [0]

    def on_epoch(summary: dict[str, Any]) -> bool:
        stop = [False]
        last[0] = summary["val_accuracy"]
        if trial is not None:
            epoch = int(summary["epoch"])
            if epoch not in inherited:
                trial.report(summary["val_accuracy"], epoch)
                new_epochs[0] += 1
            # A trial at the end of its schedule is complete, whatever the pruner says: pruning saves no time there.
            stop = [epoch < recipe.epochs and trial.should_prune()]
        if acc_state.num_processes > 1:
            stop = broadcast_object_list(stop)
        if stop[0]:
            pruned[0] = True
            if main:
                print(f"tune.py: trial {number} pruned after epoch {int(summary['epoch'])} (validation accuracy "
                      f"{summary['val_accuracy']:.2f}%)", flush=True)
        return bool(stop[0])

    try:
        code = train(parsed, on_epoch=on_epoch, selection=True, last_in_process=False)
    except NonFiniteLoss as err:  # the recipe diverged: a result of the search, not worth repeating
        if trial is not None:
            tell(study, trial, state=optuna.trial.TrialState.FAIL)
            print(f"tune.py: trial {number} failed: {err}", flush=True)
        return TrialResult("FAIL", message=str(err))
    except BaseException:  # a second Ctrl-C, or a problem every trial would have: not a result of the recipe
        if trial is not None:
            fail_and_queue_again(study, trial.number, trial.params, trial.user_attrs, new_epochs[0] > 0)
        raise
    if code == EXIT_INTERRUPTED:
        if trial is not None:  # stopped by its user, not by its recipe: always continued
            fail_and_queue_again(study, trial.number, trial.params, trial.user_attrs, progressed=True)
        return TrialResult("INTERRUPTED")
    if trial is None:
        return TrialResult("PRUNED" if pruned[0] else "COMPLETE")
    if pruned[0]:
        tell(study, trial, state=optuna.trial.TrialState.PRUNED)  # its value: the last one reported
        return TrialResult("PRUNED", last[0])
    if last[0] is None and inherited and max(inherited) >= recipe.epochs:
        # a continuation of a run that had finished (weights saved) when its worker died: nothing left to train
        last[0] = inherited[max(inherited)]
    if last[0] is None:  # no epoch was evaluated (cannot happen with --epochs >= 1, but never tell a made-up value)
        tell(study, trial, state=optuna.trial.TrialState.FAIL)
        return TrialResult("FAIL", message="no epoch was evaluated")
    tell(study, trial, last[0])  # the objective: the validation accuracy of the finished recipe, at its last epoch
    return TrialResult("COMPLETE", last[0])


def run_study(args: TuneArgs, pruner: Any = None) -> int:
    """Run trials until the study holds --trials finished ones (or --timeout passes); then report. Returns the
    exit code."""
    from accelerate import PartialState

    if args.options.workers > 1:
        return run_workers(args)
    acc_state = PartialState(cpu=cpu_process_group())  # as engine.make_accelerator will make each trial's
    study = None
    if acc_state.is_main_process:
        from .data import load_datasets
        recipe = resolve_recipe(args.base)
        # Before anything is written: the data is there and leaves room for the validation split.
        load_datasets(args.base.options.data_dir, recipe.dataset, recipe.val_size, test=False)
        study = load_or_create_study(args, pruner)
        for number, queued in fail_dead_trials(study):
            then = ("a trial that continues its run is queued" if queued else "not queued again: it died twice "
                    "without finishing an epoch")
            print(f"tune.py: trial {number} was running in a process that has died; marked failed, {then}",
                  flush=True)
    if args.options.sampler == "grid":
        args.options.trials = min(args.options.trials, math.prod(len(s.values) for s in args.specs))
    started, failures = time.monotonic(), 0
    while True:
        over = [bool(args.options.timeout) and time.monotonic() - started > args.options.timeout]
        if acc_state.num_processes > 1:
            from accelerate.utils import broadcast_object_list
            over = broadcast_object_list(over)
        if over[0]:
            if acc_state.is_main_process:
                print(f"tune.py: --timeout {args.options.timeout:g} s passed; starting no new trial", flush=True)
            break
        result = run_trial(args, study, acc_state)
        if result is None:
            break
        if result.state == "INTERRUPTED":
            if acc_state.is_main_process:
                print("tune.py: interrupted; the unfinished trial is queued to continue. Resume with the same command",
                      flush=True)
            return EXIT_INTERRUPTED
        failures += result.state == "FAIL"
        if failures > args.options.trials:
            raise UserError(f"{failures} trials failed in this session (their losses diverged); narrow the search, "
                            f"e.g. a lower --search lr range")
    if acc_state.is_main_process:
        print(report(args, study))
    acc_state.destroy_process_group()  # what the last trial's end_training would have done
    return 0


def run_workers(args: TuneArgs) -> int:
    """--workers N: N processes of tune.py, each a single-process worker of the same study, side by side (on one
    GPU, several small trials fill it better than one). Each writes its output to LOGDIR/STUDY/worker-K.log."""
    load_or_create_study(args)  # created once, before the workers race to create it
    argv = without_flags(args.argv, "--workers")
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tune.py")
    procs = []
    for k in range(args.options.workers):
        log = open(os.path.join(args.study_dir, f"worker-{k}.log"), "w")
        env = {**os.environ, WORKER_VARIABLE: str(k)}
        procs.append((subprocess.Popen([sys.executable, script, *argv, "--workers", "1"], stdout=log,
                                       stderr=subprocess.STDOUT, env=env), log))
    print(f"tune.py: {len(procs)} workers; their output is in {args.study_dir}/worker-*.log", flush=True)
    codes = []
    try:
        for proc, log in procs:
            codes.append(proc.wait())
            log.close()
    except KeyboardInterrupt:
        for proc, _ in procs:
            proc.wait()  # each got the Ctrl-C too, and checkpoints its trial
        return EXIT_INTERRUPTED
    bad = [k for k, code in enumerate(codes) if code]
    if bad:
        raise UserError(f"worker(s) {', '.join(map(str, bad))} failed; see {args.study_dir}/worker-K.log")
    print(report(args, load_or_create_study(args)))
    return 0


# ----------------------------------------------------------------------------------------------------------
# The answer
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Savings:
    """What pruning saved the finished trials: in epochs (exact) and in seconds (from each pruned trial's own time
    per epoch, start-up included, so an estimate)."""

    epochs_run: int = 0
    epochs_planned: int = 0       # had every finished trial run its whole schedule
    seconds_run: float = 0.0
    seconds_saved: float = 0.0


def trained_seconds(trial: Any) -> float:
    """A finished trial's time, with its run's training time before it for a continuation."""
    return trial.duration.total_seconds() + trial.user_attrs.get(SECONDS_BEFORE_ATTR, 0.0)


def pruning_savings(trials: Sequence[Any]) -> Savings:
    saved = Savings()
    for t in trials:
        if t.state.name not in ("COMPLETE", "PRUNED") or t.duration is None:
            continue
        seconds = trained_seconds(t)
        done, planned = len(t.intermediate_values), t.user_attrs.get(EPOCHS_ATTR, 0)
        saved.epochs_run += done
        saved.epochs_planned += max(planned, done)
        saved.seconds_run += seconds
        if t.state.name == "PRUNED" and done and planned > done:
            saved.seconds_saved += seconds / done * (planned - done)
    return saved


def report(args: TuneArgs, study: Any) -> str:
    """The study's answer as text (also written to report.md), with its figures drawn beside it."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    lines = [f"# Study {args.options.study}", "",
             f"{len(finished)} finished trials ({sum(t.state.name == 'PRUNED' for t in trials)} pruned, "
             f"{sum(t.state.name == 'FAIL' for t in trials)} failed), scored on the validation split. Search: "
             f"{' '.join(f'--search {s.field}={s.text()}' for s in args.specs)}; fixed: "
             f"{shlex.join(args.base_argv[:-2])}", ""]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if complete:
        best = max(complete, key=lambda t: t.value)
        run = best.user_attrs.get(RUN_ATTR, TRIAL_DIR.format(number=best.number))
        lines += [f"Best: trial {best.number}, validation accuracy {best.value:.2f}% after "
                  f"{len(best.intermediate_values)} epochs ({run}/). Its recipe:",
                  "", "    " + train_command(best.user_attrs[TRAIN_ARGS_ATTR]), "",
                  "(without --val-size it trains on every training image and is scored on the test set)", ""]
    saved = pruning_savings(trials)
    if saved.epochs_planned:
        unpruned = saved.seconds_run + saved.seconds_saved
        lines += [f"Pruning: the finished trials ran {saved.epochs_run} of their {saved.epochs_planned} epochs "
                  f"({100 * (1 - saved.epochs_run / saved.epochs_planned):.0f}% saved); they took "
                  f"{saved.seconds_run / 60:.1f} min, about {unpruned / 60:.1f} min unpruned (from each pruned "
                  f"trial's own time per epoch).", ""]
    names = [s.field for s in args.specs]
    lines += ["| trial | state | " + " | ".join(names) + " | epochs run | validation % | minutes |",
              "|---|---|" + "---|" * len(names) + "---|---|---|"]
    for t in sorted(trials, key=lambda t: (t.value is None, -(t.value or 0), t.number)):
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        value = t.value if t.value is not None else last
        minutes = f"{trained_seconds(t) / 60:.2f}" if t.duration else ""
        lines.append(f"| {t.number} | {t.state.name.lower()} | "
                     + " | ".join(_format(_round(t.params.get(n, ""))) for n in names)
                     + f" | {len(t.intermediate_values)}/{t.user_attrs.get(EPOCHS_ATTR, '')} | "
                     f"{'' if value is None else f'{value:.2f}'} | {minutes} |")
    drawn = draw_figures(args, study)
    if drawn:
        lines += ["", "Figures: " + ", ".join(os.path.join(args.study_dir, p) for p in drawn)]
    text = "\n".join(lines) + "\n"
    from .runs import write_atomic
    write_atomic(os.path.join(args.study_dir, REPORT_FILE), text)
    return text


def _round(value: Any) -> Any:
    return float(f"{value:.4g}") if isinstance(value, float) else value


def draw_figures(args: TuneArgs, study: Any, top: int = 5) -> list[str]:
    """Optuna's optimisation history and parameter importances, and the validation curves of the ``top`` best
    trials (pruned ones too, faint); returns the files drawn. Importances need two complete trials."""
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    optuna = _optuna()
    from optuna.visualization import matplotlib as ovm

    drawn = []
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # PED-ANOVA's "importances will be equal" on a small study
        plots = [("history", lambda: ovm.plot_optimization_history(study, target_name="validation accuracy %"))]
        if len(complete) >= 2 and any(len({t.params.get(s.field) for t in complete}) > 1 for s in args.specs):
            # PED-ANOVA (Optuna's default since 5.0) needs no scikit-learn, unlike fANOVA (the default before).
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            plots.append(("importances", lambda: ovm.plot_param_importances(study, evaluator=evaluator)))
        for name, plot in plots:
            ax = plot()
            ax.figure.set_size_inches(7, 4.5)
            ax.figure.tight_layout()
            ax.figure.savefig(os.path.join(args.study_dir, PLOTS[name]), dpi=110)
            plt.close(ax.figure)
            drawn.append(PLOTS[name])
    curves = sorted((t for t in study.get_trials(deepcopy=False) if t.intermediate_values),
                    key=lambda t: -max(t.intermediate_values.values()))
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        best = {t.number for t in sorted(complete, key=lambda t: -t.value)[:top]}
        for t in curves:
            steps = sorted(t.intermediate_values)
            mine = t.number in best
            # a marker on the others too: a trial pruned at its first epoch has one point and no line
            ax.plot(steps, [t.intermediate_values[s] for s in steps], marker="o" if mine else ".",
                    alpha=1.0 if mine else 0.25, lw=1.8 if mine else 1.0, color=None if mine else "grey",
                    label=f"trial {t.number}" if mine else None)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel("validation accuracy (%)")
        values = [v for t in curves for v in t.intermediate_values.values()]
        ax.set_ylim(max(min(values), max(values) - 10), max(values) + 0.3)
        ax.set_title(f"{args.options.study}: the {len(best)} best trials (grey: the others, pruned or not)")
        if best:
            ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(args.study_dir, PLOTS["curves"]), dpi=110)
        plt.close(fig)
        drawn.append(PLOTS["curves"])
    return drawn


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_tune_args(argv)
    _optuna()  # the missing extra is told before anything is written
    if args.options.report:
        print(report(args, load_or_create_study(args)))
        return 0
    return run_study(args)
