#!/usr/bin/env python
"""Draw a digit or a garment in your browser; watch a trained model classify it and its latents attend (Gradio).

    python demo.py --run NAME [--logdir runs] [--host 127.0.0.1] [--port 7860]
    python demo.py --model DIR                    # DIR: a run directory or a folder written by export.py
Needs the optional extra: pip install -e ".[demo]"
"""
from perceiver_mnist.errors import run_cli


def main() -> int:
    from perceiver_mnist.config import OneLineParser, add_logdir_argument
    parser = OneLineParser(prog="demo.py", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="Name of the run (a directory under --logdir) whose model to show.")
    source.add_argument("--model", metavar="DIR",
                        help="Instead of --run: a run directory, or a folder written by export.py --format hf.")
    add_logdir_argument(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to serve on (default: 127.0.0.1, this machine only; 0.0.0.0: every network "
                             "interface, so that others can open it).")
    parser.add_argument("--port", type=int, default=7860, help="Port to serve on (default: 7860).")
    args = parser.parse_args()
    if not 0 < args.port < 65536:
        parser.error(f"--port must be in 1..65535, got {args.port}")

    from perceiver_mnist.runs import find_run
    path = args.model or find_run(args.logdir, args.run)  # a mistyped run is told at once, before heavy imports

    from perceiver_mnist.demo import Demo, build_app, check_port, serve
    check_port(args.host, args.port)
    demo = Demo(path, run_name=args.run)  # then build_app imports Gradio, or says in one line what to install
    app = build_app(demo)
    url = serve(app, args.host, args.port)
    print(f"demo.py: {demo.about} Open {url} (Ctrl-C to stop)", flush=True)
    app.block_thread()
    return 0


if __name__ == "__main__":
    run_cli(main, "demo.py")
