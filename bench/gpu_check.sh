#!/usr/bin/env bash
# The GPU check: one call of at most 540 s that prints PASS or FAIL for each GPU target, with its measured value, writes
# $OUT/summary.json, and exits non-zero if any target fails. One NVIDIA GPU (an H100), bf16, compiled (inductor):
#   step128   the training step (engine.train_step, through bench/flops.py) at batch 128: >= 50,000 samples/s; its
#             first compiled step, on an empty inductor cache, is the cold compile: <= its own budget (90 s)
#   stepgpu   the same at the `gpu` preset's batch (1,024, perceiver_mnist/config.py): >= 200,000 samples/s;
#             both count the host-device syncs of 20 more steps (torch's sync debug mode): 0 per step
#   accuracy  the `gpu` preset under accelerate_configs/bf16_compile.yaml (bench/time_to_accuracy.py, the MNIST files
#             shipped in data/, no download): launch to 99% test accuracy <= 60 s; >= 98% after epoch 3
#   launches  aten ops outside the compiled regions per step <= 20 (bench/launches.py; missing: FAIL, not measured)
#   gputests  python -m pytest -m gpu tests/ passes (none collected: FAIL "no gpu tests")
# Budget (each part runs under `timeout -k 10`, its limit counting the 10 s grace; printed first, at most 540 s):
#   imports 45 + step128 120 (cold compile 90 + 30) + stepgpu 90 + accuracy 95 (time box 65 + 30)
#   + max(launches 90, gputests 180) (these two count, not time: side by side) + judging 5 = 535 s
# First the imports: every module the parts need (PYTHONPATH=$PWD gives perceiver_mnist itself); if any is missing it
# stops with one line naming them all (exit 3). Nothing comes from the network: wheels carried in wheels/ are used.
#
# Through the GPU tool: run(command="bash bench/gpu_check.sh", timeout_s=600); the logs, the run's event file and
# summary.json come back from $OUT. Rehearse on the CPU first, every part with tiny sizes, dynamo's eager backends,
# two lanes side by side and rehearsal thresholds that check the plumbing, not speed (about a minute on 2 cores):
#   bash bench/gpu_check.sh --cpu-rehearsal [OUTDIR]
# Options: --only step128,stepgpu,accuracy,launches,gputests (a subset; the imports are always checked); OUTDIR
# (default $OUT, else /tmp/gpu_check). Environment: PYTHON (default python3, the lent machines' interpreter); the
# thresholds and limits below (GC_SPS128_MIN=..., GC_COMPILE_BUDGET=..., GC_BOX=...).
#
# Missing packages on the GPU machine (it has no package index): download wheels here, then carry the ignored folder:
#   python -m pip download --no-deps -d wheels perceiver-pytorch==0.11.0 einops     # pure Python: any interpreter
#   python -m pip download -d wheels pytest                                          # with its (pure Python) deps
#   python -m pip download --no-deps --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.12 \
#       -d wheels psutil                                                             # compiled: the GPU's Python
#   python -m pip wheel --no-deps -w wheels SOURCE_ONLY_PACKAGE                      # one the index has no wheel of
#   run(command="bash bench/gpu_check.sh", carry=["wheels"])                         # 64 MiB at most: never torch
# The script installs those of the missing modules that have a wheel there (pip install --no-index --find-links
# wheels/ NAME...), then checks the imports again.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=gpu only=all outdir=""
while [ $# -gt 0 ]; do
  case $1 in
    --cpu-rehearsal) mode=rehearsal ;;
    --only) only=${2:?--only needs a list}; shift ;;
    -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) outdir=$1 ;;
  esac
  shift
done
out=${outdir:-${OUT:-/tmp/gpu_check}}
py=${PYTHON:-python3}
mkdir -p "$out" && (cd "$out" && rm -f results.jsonl summary.json wheels.log step128.log stepgpu.log launches.log \
  accuracy.log accuracy.tfevents gputests.log gputests.xml)  # a file of an earlier call is never read as this one's
work=$(mktemp -d /tmp/gpu_check.XXXXXX)  # inductor's cache (empty: the cold compile), runs, stand-ins
export GC_MODE=$mode GC_OUT=$out GC_ROOT=$root GC_START=$(date +%s)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export TORCHINDUCTOR_CACHE_DIR=$work/inductor TRITON_CACHE_DIR=$work/triton
judge() { "$py" "$work/judge.py" "$@"; }
cleanup() {  # the parts still running (killed by a signal), what their runs left behind, the work folder
  local running
  running=$(jobs -p) && [ -n "$running" ] && kill $running 2>/dev/null && sleep 1
  [ -f "$work/judge.py" ] && judge reap "$work" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
selected() { [ "$only" = all ] || [[ ",$only," == *",$1,"* ]]; }

# --- targets, limits (seconds, each with its 10 s kill grace) and commands of each mode ---
gpu_batch() { "$py" -c "from perceiver_mnist.config import preset; print(preset('$1').batch_size)" 2>/dev/null; }
if [ $mode = gpu ]; then
  : "${GC_SPS128_MIN:=50000}" "${GC_SPSGPU_MIN:=200000}" "${GC_SYNCS_MAX:=0}" "${GC_TTA_ACC:=99}" \
    "${GC_TTA_MAX_S:=60}" "${GC_EPOCH3_MIN:=98}" "${GC_OPS_MAX:=20}"
  : "${GC_COMPILE_BUDGET:=90}" "${GC_L_STEPGPU:=90}" "${GC_BOX:=65}" "${GC_L_LAUNCHES:=90}" "${GC_L_GPUTESTS:=180}"
  preset=gpu small=128 device=cuda steps=100 backend=inductor config=bf16_compile.yaml data=$root/data
  train_flags=(--preset gpu) stop_at=$GC_TTA_ACC launches_args=(--preset gpu --compile inductor --device cuda --steps 20 --precision bf16)
else  # rehearsal: the plumbing on a 2-core CPU; thresholds any working run passes, labelled "rehearsal"
  # (limits for a CPU that others share too: alone, a part takes a third of its limit or less)
  : "${GC_SPS128_MIN:=5}" "${GC_SPSGPU_MIN:=5}" "${GC_SYNCS_MAX:=0}" "${GC_TTA_ACC:=50}" \
    "${GC_TTA_MAX_S:=120}" "${GC_EPOCH3_MIN:=50}" "${GC_OPS_MAX:=200}"
  : "${GC_COMPILE_BUDGET:=60}" "${GC_L_STEPGPU:=90}" "${GC_L_LAUNCHES:=150}" "${GC_BOX:=120}" "${GC_L_GPUTESTS:=90}"
  preset=tiny small=8 device=cpu steps=3 backend=eager config=$work/cpu_bf16_eager.yaml data=$work/data
  # no augmentation and a higher rate: the synthetic digits are learnt within the 3 epochs
  train_flags=(--preset tiny --epochs 3 --lr 1e-2 --translate 0 --rotate 0 --scale 0 --grid-images 0)
  # launches.py's "eager" is no compilation at all: aot_eager traces the regions as inductor would, without codegen
  stop_at=95 launches_args=(--preset tiny --compile aot_eager --device cpu --steps 3 --precision bf16)
fi
# imports: find 5 + wheels 10 (only when some are missing) + find again 5 + nvidia-smi 5 + one full import 20;
# judging: the Python between the parts (each call a fraction of a second) and the copies
GC_L_IMPORTS=45 GC_JUDGING=5 GC_L_STEP128=$((GC_COMPILE_BUDGET + 30)) GC_L_ACCURACY=$((GC_BOX + 30))
export GC_SPS128_MIN GC_SPSGPU_MIN GC_SYNCS_MAX GC_TTA_ACC GC_TTA_MAX_S GC_EPOCH3_MIN GC_OPS_MAX GC_COMPILE_BUDGET \
  GC_BOX GC_L_IMPORTS GC_L_STEP128 GC_L_STEPGPU GC_L_LAUNCHES GC_L_ACCURACY GC_L_GPUTESTS GC_JUDGING
max() { echo $(($1 > $2 ? $1 : $2)); }
if [ $mode = gpu ]; then  # the timed parts one after the other, then the two counts side by side (see below)
  budget=$((GC_L_IMPORTS + GC_L_STEP128 + GC_L_STEPGPU + GC_L_ACCURACY + $(max $GC_L_LAUNCHES $GC_L_GPUTESTS)
    + GC_JUDGING))
else  # two lanes side by side, then the stand-in tests (35)
  budget=$((GC_L_IMPORTS + $(max $((GC_L_STEP128 + GC_L_STEPGPU + GC_L_ACCURACY)) $((GC_L_LAUNCHES + GC_L_GPUTESTS)))
    + GC_JUDGING + 35))
fi
echo "gpu_check ($mode$([ $mode = rehearsal ] && echo ': CPU, tiny sizes, rehearsal thresholds'))," \
  "budget $budget s of 540: imports $GC_L_IMPORTS, step128 $GC_L_STEP128 (cold compile $GC_COMPILE_BUDGET + 30)," \
  "stepgpu $GC_L_STEPGPU, accuracy $GC_L_ACCURACY (time box $GC_BOX), launches $GC_L_LAUNCHES, gputests" \
  "$GC_L_GPUTESTS, judging $GC_JUDGING; $([ $mode = gpu ] && echo "launches beside gputests" ||
  echo "lanes: step128 stepgpu accuracy | launches gputests")"
if [ $budget -gt 540 ]; then echo "gpu_check: FAIL the limits add up to $budget s, over 540 s"; exit 2; fi

# --- the judge: small Python that reads each part's JSON and prints its PASS/FAIL lines (stdlib only) ---
cat >"$work/judge.py" <<'PY'
import json, os, re, sys, xml.etree.ElementTree as ET
E = os.environ
REHEARSAL = E["GC_MODE"] == "rehearsal"
RESULTS = os.path.join(E["GC_OUT"], "results.jsonl")
PIP_NAMES = {"PIL": "pillow", "perceiver_pytorch": "perceiver-pytorch", "yaml": "pyyaml"}


def show(v, unit):
    if v is None:
        return "not measured"
    text = f"{v:,.0f}" if abs(v) >= 1000 else f"{int(v)}" if v == int(v) else f"{v:.2f}" if abs(v) >= 1 else \
        f"{v:.3g}"
    return f"{text} {unit}".strip()


def line(target, value, op, threshold, unit="", note="", ok=None, shown=None, stand_in=False):
    """One target: PASS when value meets the threshold (or `ok`), FAIL when not or when not measured (None)."""
    if ok is None:
        ok = value is not None and (value <= threshold if op == "<=" else value >= threshold)
    status = "PASS" if ok else "FAIL"
    tag = " [rehearsal]" if REHEARSAL else ""
    print(f"{status}  {target:<46} {shown or show(value, unit):>24}   target {op} {show(threshold, unit)}{tag}"
          + (f"  ({note})" if note else ""), flush=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps({"target": target, "status": status, "value": value, "op": op, "threshold": threshold,
                            "unit": unit, "note": note, "stand_in": stand_in, "rehearsal": REHEARSAL}) + "\n")


def why(log, rc, limit):
    """Why a part gave no number: its time limit, its exit status and last error line, or not run."""
    rc = int(rc)
    if rc in (124, 137):
        return f"timed out at its {limit} s limit"
    if not os.path.exists(log):
        return "not run"
    lines = [l.strip() for l in open(log, errors="replace") if l.strip()]
    errors = [l for l in lines if "Error" in l or "error:" in l] or lines or ["no output"]
    return f"exit {rc}: {errors[-1][:140]}"


def json_lines(log):
    found = []
    for l in open(log, errors="replace") if os.path.exists(log) else []:
        l = l.strip()
        if l.startswith("{") and l.endswith("}"):
            try:
                found.append(json.loads(l))
            except ValueError:
                pass
    return found


def find(*modules):
    """Which modules are not installed (found without importing them), and the pip names of those with a wheel in
    wheels/: "names|pip names"."""
    import glob, importlib.util
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    norm = lambda name: name.lower().replace("-", "_")  # noqa: E731  (a wheel's file name has underscores)
    wheels = {norm(os.path.basename(w).split("-")[0]) for w in glob.glob(os.path.join(E["GC_ROOT"], "wheels", "*.whl"))}
    pip = [PIP_NAMES.get(m, m) for m in missing]
    print(" ".join(missing) + "|" + " ".join(n for n in pip if norm(n) in wheels))


def env(*modules):
    """Import every module (and what they import); one FAIL line naming all missing or broken ones, exit 3. Then
    the machine in one line; exit 3 in gpu mode without a CUDA device."""
    import importlib
    missing, broken = [], []
    for m in modules:
        if m.split(".")[0] in missing:
            continue
        try:
            importlib.import_module(m)
        except ModuleNotFoundError as e:
            name = (e.name or m).split(".")[0]
            if name == m.split(".")[0] and m != name:  # a module of the package itself is missing
                broken.append(f"{m} ({e})")
            elif name not in missing:
                missing.append(name)
        except Exception as e:  # there, but does not import
            broken.append(f"{m} ({type(e).__name__}: {str(e)[:120]})")
    if missing or broken:
        stop("imports:" + (f" missing modules: {', '.join(missing)}" if missing else "")
             + (f"; broken: {'; '.join(broken)}" if broken else ""))
    import torch, accelerate
    cuda = torch.cuda.is_available()
    print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda, "|",
          torch.cuda.get_device_name(0) if cuda else "no CUDA device", "| accelerate", accelerate.__version__,
          "| cpus", os.cpu_count())
    if not cuda and not REHEARSAL:
        stop("no CUDA device (gpu mode; --cpu-rehearsal is the CPU's)")


def step(part, batch, rc):
    """bench/flops.py's compiled line at `batch`: the cold compile (step128 only) and samples/s."""
    batch, log = int(batch), os.path.join(E["GC_OUT"], f"{part}.log")
    limit = E[f"GC_L_{part.upper()}"]
    c = next((l for l in json_lines(log) if l.get("mode") == "default" and l.get("batch_size") == batch), None)
    reason = why(log, rc, limit) if c is None else ""
    if c is not None and c.get("graphs") == 0:  # dynamo captured nothing: the "compiled" rate is an eager one
        c, reason = None, "dynamo captured no graph: the step ran eager"
    if part == "step128":
        note = "rehearsal: dynamo's eager backend, tracing only" if REHEARSAL else \
            f"inductor, empty cache; limit {E['GC_COMPILE_BUDGET']} s"
        line("cold compile (first compiled step)", c and c["compile_s"], "<=", float(E["GC_COMPILE_BUDGET"]), "s",
             reason or note)
    minimum = float(E["GC_SPS128_MIN" if part == "step128" else "GC_SPSGPU_MIN"])
    line(f"training step, batch {batch}, bf16, compiled", c and c["compiled_samples_per_s"], ">=", minimum,
         "samples/s", reason or f"{c['compiled_step_s'] * 1e3:.3g} ms a step, {c['speedup']}x eager")


def syncs(counted, *batches):
    """Host-device syncs per step of the compiled step, from both step parts' compiled lines (the worst)."""
    per_step, notes = [], []
    for part, batch in zip(("step128", "stepgpu"), batches):
        c = next((l for l in json_lines(os.path.join(E["GC_OUT"], f"{part}.log"))
                  if l.get("mode") == "default" and l.get("batch_size") == int(batch)), None)
        if c is None:
            continue
        n = c["host_syncs"]
        if n is None and REHEARSAL:  # no CUDA: the sync debug mode counts nothing on a CPU
            n, notes = 0, notes + [f"batch {batch}: 0 by construction (no CUDA)"]
        elif n is None:
            notes.append(f"batch {batch}: not counted (host_syncs null)")
            per_step.append(None)
            continue
        else:
            notes.append(f"batch {batch}: {n} in {counted} steps" + (f", first: {c['first_sync']}" if n else ""))
        per_step.append(n / int(counted))
    value = None if not per_step or None in per_step else max(per_step)
    line("host syncs per non-logging step", value, "<=", float(E["GC_SYNCS_MAX"]), "",
         "; ".join(notes) or "no compiled step line from step128 or stepgpu")


def accuracy(rc):
    """bench/time_to_accuracy.py's report: launch to GC_TTA_ACC%, and the accuracy after epoch 3."""
    log = os.path.join(E["GC_OUT"], "accuracy.log")
    text = open(log, errors="replace").read() if os.path.exists(log) else ""
    report = None
    for start in reversed([m.start() + 1 for m in re.finditer(r"\n\{", text)]):
        try:
            report = json.JSONDecoder().raw_decode(text[start:])[0]
            break
        except ValueError:
            continue
    per = (report or {}).get("per_epoch")
    reason = why(log, rc, E["GC_L_ACCURACY"]) if report is None else "no evaluation finished" if not per else ""
    target, box = float(E["GC_TTA_ACC"]), E["GC_BOX"]
    hit = None if not per else next((t for a, t in zip(per["accuracy"], per["s_from_launch"]) if a >= target), None)
    best = per and max(per["accuracy"])
    line(f"launch to {target:g}% test accuracy", hit, "<=", float(E["GC_TTA_MAX_S"]), "s",
         reason or (f"{len(per['accuracy'])} epochs in {report['wall_minutes'] * 60:.0f} s" if hit is not None else
                    f"not reached: best {best:.2f}% in {len(per['accuracy'])} epochs, time box {box} s"),
         shown=None if hit is not None or reason else "not reached")
    at3 = None if not per else next((a for e, a in zip(per["epoch"], per["accuracy"]) if e is not None and
                                     round(e) == 3), None)
    note = reason or ("" if at3 is not None else f"epoch 3 not reached: {len(per['epoch'])} epochs in the box")
    if at3 is None and per and best >= float(E["GC_STOP_AT"]):  # stopped at --stop-at before epoch 3
        at3, note = per["accuracy"][-1], f"stopped at {E['GC_STOP_AT']}% after epoch {per['epoch'][-1]}"
    line("test accuracy after epoch 3", at3, ">=", float(E["GC_EPOCH3_MIN"]), "%", note)


def launches(rc, preset, compile, stand_in=""):
    """bench/launches.py's JSON lines for (preset, compile): ops outside compiled regions per step (the worst)."""
    log = os.path.join(E["GC_OUT"], "launches.log")
    rows = [l for l in json_lines(log) if "ops_per_step" in l]
    match = [l for l in rows if str(l.get("preset")) == preset and str(l.get("compile")) == compile]
    if stand_in:
        reason = ""
    elif not os.path.exists(os.path.join(E["GC_ROOT"], "bench", "launches.py")):
        reason = "not measured: bench/launches.py missing"
    elif not match:
        seen = sorted({(str(l.get("preset")), str(l.get("compile"))) for l in rows})
        reason = f"no line for preset {preset}, compile {compile}" + (f" (saw {seen})" if seen else "") \
            + ("" if rows else f"; {why(log, rc, E['GC_L_LAUNCHES'])}")
    else:
        reason = ""
    value = None if reason else max(l["ops_per_step"] for l in match)
    reads = sorted({l.get("host_reads_per_step") for l in match}, key=str)
    note = reason or (f"{len(match)} line(s), host reads per step {', '.join(map(str, reads))}" + stand_in)
    line("aten ops outside compiled regions per step", value, "<=", float(E["GC_OPS_MAX"]), "", note,
         stand_in=bool(stand_in))


def gputests(xml, rc, stand_in=""):
    """pytest's JUnit XML: gpu mode passes with at least one test passed and none failed or in error; the
    rehearsal (a CPU: the tests skip) with at least one collected and none failed or in error."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    other_modules = []  # modules outside the gpu tests that failed to collect (e.g. a missing test extra)
    if os.path.exists(xml):
        for case in ET.parse(xml).getroot().iter("testcase"):
            error = case.find("error")
            if case.get("classname") == "" and error is not None and error.get("message") == "collection failure":
                path = os.path.join(E["GC_ROOT"], *case.get("name", "").split(".")) + ".py"
                text = open(path, errors="replace").read() if os.path.exists(path) else "mark.gpu"
                if "mark.gpu" not in text:  # a module with no gpu test in it: noted, not counted
                    other_modules.append(case.get("name"))
                    continue
            kind = "failed" if case.find("failure") is not None else "errors" if error is not None else \
                "skipped" if case.find("skipped") is not None else "passed"
            counts[kind] += 1
    collected = sum(counts.values())
    shown = ", ".join(f"{v} {k}" for k, v in counts.items() if v or k in ("passed", "failed"))
    if not os.path.exists(xml):
        note, ok, shown = why(os.path.join(E["GC_OUT"], "gputests.log"), rc, E["GC_L_GPUTESTS"]), False, None
    elif collected == 0:
        note, ok = "no gpu tests", False
    else:
        ok = counts["failed"] + counts["errors"] == 0 and (counts["passed"] >= 1 or REHEARSAL)
        note = "rehearsal: on a CPU the gpu tests may skip" if REHEARSAL else \
            ("" if counts["passed"] else "none passed")
    if other_modules:
        note += f"; {len(other_modules)} other module(s) failed to collect: {', '.join(other_modules)}"
    line("pytest -m gpu tests/", counts["failed"] + counts["errors"] if collected else None, "<=", 0, "",
         (note + stand_in).strip("; "), ok=ok, shown=shown, stand_in=bool(stand_in))


def reap(path):
    """Kill what is left of a training run under `path` (a bench killed by its time limit leaves it behind: it
    runs in a session of its own)."""
    import psutil
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.info["pid"] != me and any(path in a for a in p.info["cmdline"] or []):
                p.kill()
        except psutil.Error:
            pass


def stop(reason):
    """An early FAIL (imports, no CUDA device): its one line, summary.json with the reason, exit 3."""
    print(f"gpu_check: FAIL {reason}")
    json.dump({"mode": E["GC_MODE"], "passed": False, "failed": ["setup"], "reason": reason, "targets": []},
              open(os.path.join(E["GC_OUT"], "summary.json"), "w"), indent=1)
    sys.exit(3)


def summary(budget):
    rows = [json.loads(l) for l in open(RESULTS)] if os.path.exists(RESULTS) else []
    failed = [r["target"] for r in rows if r["status"] != "PASS"]
    stand_ins = [r["target"] for r in rows if r["stand_in"]]
    wall = int(__import__("time").time()) - int(E["GC_START"])
    json.dump({"mode": E["GC_MODE"], "passed": bool(rows) and not failed, "failed": failed, "stand_ins": stand_ins,
               "wall_s": wall, "budget_s": int(budget), "targets": rows}, open(os.path.join(E["GC_OUT"],
                                                                                           "summary.json"), "w"),
              indent=1)
    if stand_ins:
        print(f"rehearsal used stand-ins for: {', '.join(stand_ins)} (what produces them is missing; on the GPU "
              f"those lines FAIL until it exists)")
    verdict = "FAIL" if failed or not rows else "PASS"
    print(f"gpu_check: {verdict} ({len(rows) - len(failed)} of {len(rows)} targets passed"
          + (f"; failed: {', '.join(failed)}" if failed else "") + f") in {wall} s; {E['GC_OUT']}/summary.json")
    sys.exit(1 if verdict == "FAIL" else 0)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
PY

# --- imports: every module the parts need; only if some are missing, carried wheels; then one full import ---
modules=(torch accelerate perceiver_pytorch einops tensorboard filelock psutil safetensors tqdm matplotlib PIL
  huggingface_hub numpy pytest perceiver_mnist)
find_missing() {
  IFS='|' read -r missing pip_names < <(timeout -k 2 3 "$py" "$work/judge.py" find "${modules[@]}" || echo "(the-check-itself-failed:$py)|")
}
find_missing
if [ -n "$pip_names" ]; then
  echo "installing from wheels/ (no index): $pip_names"
  # shellcheck disable=SC2086  # one argument per name
  timeout -k 2 8 "$py" -m pip install -q --no-index --find-links wheels $pip_names \
    >"$out/wheels.log" 2>&1 || echo "   pip failed: $(tail -1 "$out/wheels.log")"
  find_missing
fi
if [ -n "$missing" ]; then
  judge stop "imports: missing modules: ${missing// /, }$(compgen -G "wheels/*.whl" >/dev/null ||
    echo " (no wheels/ to install them from: see this script's header)")"
  exit 3
fi
[ $mode = gpu ] && command -v nvidia-smi >/dev/null && timeout -k 1 4 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# what the modules import too (perceiver_mnist's engine and events: a train run's and the benches' imports)
timeout -k 5 15 "$py" "$work/judge.py" env "${modules[@]}" perceiver_mnist.engine \
  perceiver_mnist.events || exit 3

# --- the parts: on a GPU one after the other; in the rehearsal side by side (its speed is not judged) ---
part() {  # part NAME COMMAND...: COMMAND under its limit (GC_L_NAME, the 10 s kill grace included) -> OUT/NAME.log
  local limit_var="GC_L_${1^^}"
  [ $mode = gpu ] && echo "== $1 (limit ${!limit_var} s)"
  timed "$1" "${!limit_var}" "${@:2}"
}
timed() {  # timed NAME LIMIT COMMAND...: its exit status -> WORK/NAME.rc
  local t0=$SECONDS code
  timeout -k 10 $(($2 - 10)) "${@:3}" >"$out/$1.log" 2>&1
  code=$?
  echo $code >"$work/$1.rc"
  echo "   $1: exit $code after $((SECONDS - t0)) s of its $2 s$([ $code -ge 124 ] && echo ': its time limit')"
}
rc() { cat "$work/$1.rc" 2>/dev/null || echo 255; }
flops_cmd() {  # flops_cmd BATCH STEPS: cmd=bench/flops.py for the compiled step at BATCH (and eager beside it)
  cmd=("$py" bench/flops.py --preset "$preset" --batch-sizes "$1" --steps "$2" --compile default --device "$device"
    --precision bf16 --backend "$backend" --sync-debug)
  [ $mode = gpu ] || cmd+=(--no-peak)  # the matmul peaks: seconds of a CPU, not judged
}
pytest_cmd() {  # pytest_cmd DIR XML [options]: cmd=the gpu-marked tests of DIR in one process (no xdist)
  cmd=("$py" -m pytest -o addopts= -p no:cacheprovider -q -rA -m gpu --continue-on-collection-errors
    --junitxml="$2" "${@:3}" "$1")
}
big=$(gpu_batch $preset) gpu_steps=$((steps / 2 > 3 ? steps / 2 : 3))
export GC_STOP_AT=$stop_at

p_step128() {  # first: its compile is the cold one (inductor's cache, $work/inductor, starts empty)
  selected step128 && { flops_cmd "$small" "$steps"; part step128 "${cmd[@]}"; }
}
p_stepgpu() { selected stepgpu && { flops_cmd "$big" $gpu_steps; part stepgpu "${cmd[@]}"; }; }
p_launches() { selected launches && [ -f bench/launches.py ] && part launches "$py" bench/launches.py "${launches_args[@]}"; }
p_accuracy() {
  selected accuracy || return
  if [ $mode = rehearsal ]; then  # the tests' synthetic digits, and bf16_compile.yaml's CPU twin with dynamo eager
    "$py" -c "import sys; from pathlib import Path; from tests.conftest import make_dataset
make_dataset(Path(sys.argv[1]), n_train=384, n_test=90)" "$data"
    sed -e 's/^gpu_ids.*/use_cpu: true/' -e 's/INDUCTOR/EAGER/' accelerate_configs/bf16_compile.yaml >"$config"
  fi
  part accuracy "$py" bench/time_to_accuracy.py --config "$config" --data-dir "$data" --logdir "$work/runs" \
    --run accuracy --time-box "$GC_BOX" --stop-at "$stop_at" -- "${train_flags[@]}"
  judge reap "$work/runs"  # what the run left behind if its bench was killed by the limit: not beside the next parts
  for f in "$work"/runs/accuracy/events.out.tfevents.*; do [ -e "$f" ] && cp "$f" "$out/accuracy.tfevents"; done
}
p_gputests() { selected gputests && { pytest_cmd tests "$out/gputests.xml"; part gputests "${cmd[@]}"; }; }
if [ $mode = gpu ]; then  # timed: one at a time; then two counts (not timed) side by side, as the budget has it
  p_step128; p_stepgpu; p_accuracy
  p_launches & p_gputests & wait
else  # two lanes side by side, one a core, one thread a process: the rehearsal's speed is not judged
  export OMP_NUM_THREADS=1
  { p_step128; p_stepgpu; p_accuracy; } &
  { p_launches; p_gputests; } &
  wait
fi

# --- the verdicts: one PASS/FAIL line per target ---
echo "== targets"
selected step128 && judge step step128 "$small" "$(rc step128)"
selected stepgpu && judge step stepgpu "$big" "$(rc stepgpu)"
if selected step128 || selected stepgpu; then  # syncs of the compiled steps after the timed ones (20 at most)
  judge syncs $((steps < 20 ? steps : 20)) "$(selected step128 && echo "$small" || echo 0)" \
    "$(selected stepgpu && echo "$big" || echo 0)"
fi
if selected launches; then
  if [ -f bench/launches.py ]; then
    judge launches "$(rc launches)" "${launches_args[1]}" "${launches_args[3]}"
  elif [ $mode = rehearsal ]; then  # the parser on a line of the promised format
    echo "{\"preset\": \"${launches_args[1]}\", \"compile\": \"${launches_args[3]}\", \"ops_per_step\": 7," \
      "\"host_reads_per_step\": 0}" >"$out/launches.log"
    judge launches 0 "${launches_args[1]}" "${launches_args[3]}" "; stand-in line: bench/launches.py missing"
  else
    judge launches 0 "${launches_args[1]}" "${launches_args[3]}"  # FAIL: not measured
  fi
fi
selected accuracy && judge accuracy "$(rc accuracy)"
if selected gputests; then
  if [ "$(rc gputests)" = 5 ] && [ $mode = rehearsal ]; then  # none collected: the parser on stand-in gpu tests
    mkdir -p "$work/standin" && printf '%s\n' 'import pytest' '' '@pytest.mark.gpu' 'def test_passes():' '    pass' \
      '' '@pytest.mark.gpu' '@pytest.mark.skipif(True, reason="needs CUDA")' 'def test_skips():' '    pass' \
      >"$work/standin/test_standin_gpu.py"
    pytest_cmd "$work/standin" "$work/standin.xml" -c /dev/null
    timeout -k 5 30 "${cmd[@]}" >>"$out/gputests.log" 2>&1
    judge gputests "$work/standin.xml" "$?" "; stand-in: no tests marked gpu in tests/ yet"
  else
    judge gputests "$out/gputests.xml" "$(rc gputests)"
  fi
fi
[ "$only" = all ] || echo "(only: $only)"
judge summary "$budget"
