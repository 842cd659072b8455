"""Launched by tests/test_distributed.py under `accelerate launch` with 2 processes; writes OUTDIR/rank_N.json.

Uses the training code's own accelerator, loader, learner and ``train_step``, so it checks what train.py does."""
import json
import sys

import torch

from perceiver_mnist.config import preset
from perceiver_mnist.data import DeviceBatches, InMemoryDataset, augment, epoch_order, to_float
from perceiver_mnist.engine import build_learner, make_accelerator, seed_process, train_step
from perceiver_mnist.errors import end_process

acc = make_accelerator(sys.argv[1])
n, batch = 40, 8
# Image i carries its own index in its first pixel, so each rank can report which samples it saw.
images = torch.zeros(n, 28, 28, dtype=torch.uint8)
images[:, 0, 0] = torch.arange(n, dtype=torch.uint8)
ds = InMemoryDataset(images, torch.arange(n) % 10)
recipe = preset("tiny")
seed_process(acc, 0)  # as train.py: a different init on each rank, which prepare() must make equal
loader = DeviceBatches(ds, batch, shuffle=True, seed=0, device=acc.device, num_processes=acc.num_processes,
                       process_index=acc.process_index)
unsharded = epoch_order(n, seed=0, epoch=0, shuffle=True)[:batch].tolist()
learner = build_learner(acc, recipe, len(loader))
loader.set_epoch(0)
seen = None
for step, (x, y) in enumerate(loader):
    if step == 0:
        seen = x[:, 0, 0].tolist()
    train_step(learner, x, y, step + 1)
checksum = sum(p.double().sum().item() for p in learner.module.parameters())
# The same pattern through the training augmentation: each rank must draw its own distortions.
pattern = (torch.arange(28 * 28) % 256).to(torch.uint8).reshape(1, 28, 28).repeat(4, 1, 1).to(acc.device)
augmented = augment(to_float(pattern), recipe).flatten().tolist()
with open(f"{sys.argv[1]}/rank_{acc.process_index}.json", "w") as f:
    json.dump({"rank": acc.process_index, "world": acc.num_processes, "backend": str(acc.distributed_type),
               "first_batch": seen, "global_first_batch": unsharded, "checksum": checksum,
               "augmented": augmented}, f)
acc.end_training()
end_process(0)  # as train.py ends (run_cli): torch's gloo teardown at exit can abort
