#!/usr/bin/env python
"""Search a recipe on the validation split with Optuna; every trial is a train.py run.

    [accelerate launch [--config_file accelerate_configs/X.yaml]] tune.py --study NAME --trials N \
        --search FIELD=SPEC [--search ...] [train.py flags]
    python tune.py --help
"""
from perceiver_mnist.errors import run_cli


def main() -> int:
    from perceiver_mnist.tune import main as tune
    return tune()


if __name__ == "__main__":
    run_cli(main, "tune.py")
