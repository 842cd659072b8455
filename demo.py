#!/usr/bin/env python
"""Draw a digit or a garment in your browser; watch a trained model classify it and its latents attend (Gradio).

    python demo.py                                # the newest finished run under --logdir, or train one first
    python demo.py --run NAME [--logdir runs] [--host 127.0.0.1] [--port 7860]
    python demo.py --model DIR                    # DIR: a run directory or a folder written by export.py
Needs the optional extra: pip install -e ".[demo]"
"""
from perceiver_mnist.errors import run_cli

FIRST_RUN_PRESET = "sprint"  # what a first demo trains when there is no finished run: about 1.3 minutes on 2 cores


def main() -> int:
    from perceiver_mnist.config import PRESETS, OneLineParser, RunOptions, add_logdir_argument
    parser = OneLineParser(prog="demo.py", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", help="Name of the run (a directory under --logdir) whose model to show (default: the "
                                      "newest finished run; with none, one is trained first, see --preset).")
    source.add_argument("--model", metavar="DIR",
                        help="Instead of --run: a run directory, or a folder written by export.py --format hf.")
    add_logdir_argument(parser)
    parser.add_argument("--preset", choices=list(PRESETS), default=FIRST_RUN_PRESET,
                        help=f"When --logdir holds no finished run and neither --run nor --model is given: the "
                             f"preset to train first, on the CPU (default: {FIRST_RUN_PRESET}).")
    parser.add_argument("--data-dir", default=RunOptions().data_dir,
                        help=f"Where that first run's dataset is (default: {RunOptions().data_dir}).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to serve on (default: 127.0.0.1, this machine only; 0.0.0.0: every network "
                             "interface, so that others can open it).")
    parser.add_argument("--port", type=int, default=7860, help="Port to serve on (default: 7860).")
    args = parser.parse_args()
    if not 0 < args.port < 65536:
        parser.error(f"--port must be in 1..65535, got {args.port}")

    from perceiver_mnist.runs import find_run, newest_finished_run
    run = args.run  # --run and --model exclude each other
    if args.run:
        find_run(args.logdir, args.run)  # a mistyped run is told at once, before heavy imports
    elif not args.model:
        run = newest_finished_run(args.logdir)
        if run:
            print(f"demo.py: showing {run}, the newest finished run under {args.logdir} (--run NAME shows another)",
                  flush=True)

    from perceiver_mnist.demo import Demo, build_app, check_port, serve
    check_port(args.host, args.port)  # before any training: a port in use is told at once
    if not run and not args.model:
        run = train_first_run(args.preset, args.logdir, args.data_dir)
    path = args.model or find_run(args.logdir, run)
    demo = Demo(path, run_name=run)  # then build_app imports Gradio, or says in one line what to install
    app = build_app(demo)
    url = serve(app, args.host, args.port)
    print(f"demo.py: {demo.about} Open {url} (Ctrl-C to stop)", flush=True)
    app.block_thread()
    return 0


def train_first_run(preset: str, logdir: str, data_dir: str) -> str:
    """Train ``preset`` into a new run under ``logdir`` (train.py's own loop, with its progress bar); its name."""
    from perceiver_mnist.config import default_run_name, parse_args
    from perceiver_mnist.engine import train
    from perceiver_mnist.errors import UserError

    name = default_run_name(preset)
    print(f"demo.py: no finished run under {logdir}: training one first, --preset {preset} (train.py's "
          f"`--preset {preset} --run {name}`), then the page opens", flush=True)
    if train(parse_args(["--preset", preset, "--logdir", logdir, "--data-dir", data_dir, "--run", name])):
        raise UserError(f"the first run {name} did not finish; resume it with train.py --run {name} --resume, "
                        f"or start demo.py again")
    return name


if __name__ == "__main__":
    run_cli(main, "demo.py")
