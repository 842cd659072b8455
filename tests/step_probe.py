"""Run by tests/test_gpu.py and tests/test_step.py in a process of its own (accelerate's state is one per process):
training steps of a preset on the device (a GPU when there is one), as train.py takes them, in the precision and
compilation that accelerate's environment variables ask for (``ACCELERATE_MIXED_PRECISION``,
``ACCELERATE_DYNAMO_*``). Prints one JSON line.

    python tests/step_probe.py PRESET STEPS [FIELD=VALUE ...]     (recipe fields changed from the preset's)

1. warm-up (compilation, the optimizer's state, CUDA graph recording);
2. on a GPU, STEPS steps under ``torch.cuda.set_sync_debug_mode("error")``: a host-device synchronisation raises,
   and the script fails, naming the op;
3. STEPS steps under the profiler: operations outside compiled regions and host reads per step, counted as
   bench/launches.py counts them, and the CUDA profiler's kernel and graph launches per step.
"""
import dataclasses
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))

from launches import count  # noqa: E402

from perceiver_mnist.config import preset  # noqa: E402
from perceiver_mnist.data import DeviceBatches, InMemoryDataset  # noqa: E402
from perceiver_mnist.engine import build_learner, compile_options, make_accelerator, train_step  # noqa: E402

name, steps = sys.argv[1], int(sys.argv[2])
acc = make_accelerator()
recipe = dataclasses.replace(preset(name), **{k: type(getattr(preset(name), k))(v)
                                              for k, v in (arg.split("=", 1) for arg in sys.argv[3:])})
torch.manual_seed(0)
n = recipe.batch_size * (2 * steps + 6)
data = InMemoryDataset(torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (n,)))
batches = DeviceBatches(data, recipe.batch_size, shuffle=True, seed=0, device=acc.device)
learner = build_learner(acc, recipe, len(batches), compile=compile_options())
stream = enumerate(batches.batches(), 1)  # one epoch: its order is drawn (and copied to the device) here, once


def take(k: int) -> None:
    for _ in range(k):
        step, (images, labels) = next(stream)
        train_step(learner, images, labels, step)


cuda = acc.device.type == "cuda"
take(5)
if cuda:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    take(steps)
    torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
    take(steps)
    if cuda:
        torch.cuda.synchronize()
counts = count(prof.events())
print(json.dumps({"preset": name, "device": acc.device.type, "compiled": learner.compiled,
                  "precision": acc.mixed_precision,
                  "ops_per_step": sum(counts["ops"].values()) / steps,
                  "host_reads_per_step": counts["host_reads"] / steps,
                  "cuda_launches_per_step": counts["launches"] / steps, "ops": counts["ops"],
                  "float32_matmul_precision": torch.get_float32_matmul_precision()}))
