#!/usr/bin/env python
"""Export a trained run: Hugging Face Hub format with a model card (optionally uploaded), or one ONNX file.

    python export.py --run NAME [--logdir runs] --format hf --out DIR [--push-to-hub USER/REPO]
    python export.py --run NAME [--logdir runs] --format onnx --out FILE.onnx [--data-dir DIR]
"""
from perceiver_mnist.errors import run_cli


def main() -> int:
    from perceiver_mnist.config import OneLineParser, add_logdir_argument
    parser = OneLineParser(prog="export.py", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="Name of the run (a directory under --logdir).")
    add_logdir_argument(parser)
    parser.add_argument("--format", required=True, choices=["hf", "onnx"],
                        help="hf: a folder for the Hugging Face Hub (config.json, model.safetensors, README.md); "
                             "onnx: one .onnx file, checked with onnxruntime against PyTorch.")
    parser.add_argument("--out", required=True, help="The folder (hf) or file (onnx) to write.")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                        help="With --format hf: also upload the folder to this Hub model repository (created if "
                             "needed; needs a token: `hf auth login` or HF_TOKEN).")
    parser.add_argument("--data-dir", default=None, help="With --format onnx: where the test set to check on is "
                                                         "(default: the run's own --data-dir).")
    args = parser.parse_args()
    if args.push_to_hub and args.format != "hf":
        parser.error("--push-to-hub goes with --format hf")

    from perceiver_mnist.runs import find_run, read_config
    run_dir = find_run(args.logdir, args.run)
    if args.format == "hf":
        from perceiver_mnist.hub import export_hf, push_to_hub
        written = export_hf(run_dir, args.out, args.push_to_hub)
        print(f"wrote {len(written)} files to {args.out}: {', '.join(p.rsplit('/', 1)[-1] for p in written)}")
        if args.push_to_hub:
            print(f"uploaded to {push_to_hub(args.out, args.push_to_hub)}")
        return 0

    from perceiver_mnist.model import load_model
    from perceiver_mnist.onnx_export import check_images, compare_onnx, export_onnx, require_export_extra
    require_export_extra()  # before loading anything
    model = load_model(run_dir)
    export_onnx(model, args.out)
    print(f"wrote {args.out}")
    images, what = check_images(read_config(run_dir), args.data_dir)
    print(compare_onnx(args.out, model, images, what))
    return 0


if __name__ == "__main__":
    run_cli(main, "export.py")
