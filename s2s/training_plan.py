"""How long training runs and how its micro-batches group into optimizer updates.

``plan_training`` turns the arguments and the training loader into counts (micro-batches per epoch, updates
per epoch, ``max_steps``, epochs); ``accumulation_windows`` groups micro-batches into the windows of one
update each.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from torch.utils.data import DataLoader, IterableDataset


class TrainingPlan(NamedTuple):
    batches_per_epoch: int  # micro-batches; sys.maxsize for a dataset without a length
    updates_per_epoch: int
    max_steps: int  # optimizer updates in all
    num_epochs: int


def plan_training(loader: DataLoader, args) -> TrainingPlan:
    """The plan for ``args`` (``max_steps``, else ``num_train_epochs``) over ``loader``; a fractional epoch
    rounds up to whole updates."""
    if isinstance(loader.dataset, IterableDataset) or not hasattr(loader, "__len__"):
        if args.max_steps <= 0:
            raise ValueError("an IterableDataset has no length: set max_steps to say how long to train")
        return TrainingPlan(sys.maxsize, sys.maxsize, args.max_steps, 1)
    batches = len(loader)
    if batches == 0:
        raise ValueError(
            "the training dataloader is empty (fewer examples than the batch size with dataloader_drop_last?)"
        )
    updates = math.ceil(batches / args.gradient_accumulation_steps)
    max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * updates)
    return TrainingPlan(batches, updates, max_steps, math.ceil(max_steps / updates))


def accumulation_windows(batches: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """The micro-batches of one optimizer update at a time (the last window of an epoch may be shorter)."""
    window = []
    for batch in batches:
        window.append(batch)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window
