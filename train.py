#!/usr/bin/env python
"""Train a Perceiver IO classifier on MNIST.

    accelerate launch [--config_file accelerate_configs/X.yaml] train.py [--preset NAME] [flags]
    python train.py --help
"""
from perceiver_mnist.errors import run_cli


def main() -> int:
    from perceiver_mnist.config import parse_args
    args = parse_args()  # before the heavy imports: --help and bad flags answer instantly
    from perceiver_mnist.engine import train
    return train(args)


if __name__ == "__main__":
    run_cli(main, "train.py")
