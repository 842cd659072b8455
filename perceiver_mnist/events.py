"""Read a run's TensorBoard event files back (no torch, no training code): used by figures, benchmarks, tests."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

from .errors import UserError
from .runs import EVENTS_GLOB


@dataclass
class Series:
    """One scalar tag: steps in increasing order, one value per step (the newest write wins)."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)


@dataclass
class RunEvents:
    scalars: dict[str, Series]
    images: dict[str, list[tuple[int, bytes]]]  # tag -> [(step, encoded PNG)]

    def has(self, tag: str) -> bool:
        return tag in self.scalars and bool(self.scalars[tag].steps)


def read_events(run_dir: str) -> RunEvents:
    """Every scalar and image event of a run directory (not of its sub-directories)."""
    from tensorboard.backend.event_processing.event_accumulator import (IMAGES, SCALARS, TENSORS,
                                                                         EventAccumulator)
    if not glob.glob(os.path.join(run_dir, EVENTS_GLOB)):
        raise UserError(f"{run_dir} has no TensorBoard event files ({EVENTS_GLOB})")
    # size_guidance 0 = keep everything: the default keeps a random sample of scalars and only 4 images.
    # purge_orphaned_data (default on) drops events a resumed session re-logged (SummaryWriter purge_step).
    acc = EventAccumulator(run_dir, size_guidance={SCALARS: 0, IMAGES: 0, TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {}
    for tag in tags.get(SCALARS, []):
        latest: dict[int, tuple[float, float]] = {}
        for event in acc.Scalars(tag):
            latest[event.step] = (event.value, event.wall_time)
        series = Series()
        for step in sorted(latest):
            series.steps.append(step)
            series.values.append(latest[step][0])
            series.wall_times.append(latest[step][1])
        scalars[tag] = series
    images = {}
    for tag in tags.get(IMAGES, []):
        latest_png = {event.step: event.encoded_image_string for event in acc.Images(tag)}
        images[tag] = sorted(latest_png.items())
    return RunEvents(scalars, images)
