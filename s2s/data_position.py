"""Where training stands in its data: the epoch, and how many of its micro-batches were used.

A DataLoader reads ahead, so neither it nor the sampler knows what the loop consumed: the loop reports each
finished accumulation window here. A checkpoint stores the position (``sampler.json``); on resume the sampler
is told to start right after the used micro-batches, so the skipped data is never read (the sampler protocol
``set_epoch`` / ``state_dict`` / ``load_state_dict`` of the ``samplers`` package). A streamed dataset keeps
its own position instead, which ``s2s.stream_position`` records and restores.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from s2s.dataloaders import is_batch_sampler
from s2s.stream_position import StreamPosition, is_resumable_stream

logger = logging.getLogger(__name__)


class DataPosition:
    """The training data's position: ``epoch`` and ``micro_batches`` of it consumed, plus the sampler and
    per-device batch size it counts in (set by ``start``)."""

    def __init__(self) -> None:
        self.epoch, self.micro_batches = 0, 0
        self.sampler: Any = None
        self.batch_size = 0
        self.stream = StreamPosition()

    def start(self, sampler: Any, *, batch_size: int) -> None:
        """A new training loop reads ``sampler`` (None for an iterable dataset) in batches of ``batch_size``,
        from the beginning unless a checkpoint says otherwise (``load_state_dict``)."""
        self.sampler, self.batch_size = sampler, batch_size
        self.epoch, self.micro_batches = 0, 0
        self.stream = StreamPosition()

    def advance(self, epoch: int, micro_batches: int) -> None:
        self.epoch, self.micro_batches = epoch, micro_batches
        self.stream.forget_before(micro_batches)

    def state_dict(self) -> dict[str, Any]:
        """What ``sampler.json`` holds. Every process calls it when a checkpoint is saved: a streamed dataset's
        positions are gathered from all of them."""
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "micro_batches": self.micro_batches,
            "train_batch_size": self.batch_size,
        }
        if self.sampler is not None and hasattr(self.sampler, "state_dict"):
            state["sampler"] = self.sampler.state_dict()
        streams = self.stream.state_dict(self.micro_batches)
        if streams is not None:
            state["stream"] = streams
        return state

    def load_state_dict(self, saved: dict[str, Any] | None, *, ignore_data_skip: bool) -> None:
        """Continue from a checkpoint's ``sampler.json``: in its epoch, after its micro-batches; at the start of
        that epoch with ``ignore_data_skip`` or when the batch size changed (the old count means other data)."""
        saved = saved or {}
        epoch, done = int(saved.get("epoch", 0)), int(saved.get("micro_batches", 0))
        if saved.get("train_batch_size", self.batch_size) != self.batch_size:
            logger.warning(
                "the checkpoint was trained with batch size %s, this run uses %s: the data order restarts at the "
                "beginning of epoch %d",
                saved.get("train_batch_size"),
                self.batch_size,
                epoch,
            )
            done = 0
        self.advance(epoch, 0 if ignore_data_skip else done)
        self.stream.saved = saved.get("stream")

    def epoch_batches(
        self, loader: DataLoader, *, epoch: int, done: int, batches_per_epoch: int, data_seed: int
    ) -> Iterator[Any]:
        """The micro-batches of ``epoch`` after the first ``done`` ones, which are never read: the sampler
        starts after them. The loader's worker seeds follow the epoch, so a resumed epoch repeats them."""
        if done >= batches_per_epoch:
            return iter(())
        if is_resumable_stream(loader.dataset):
            return self.stream.batches(loader, done=done)
        sampler = self.sampler
        if sampler is not None:
            sampler.set_epoch(epoch)
            consumed = done if is_batch_sampler(sampler) else min(done * self.batch_size, len(sampler))
            sampler.load_state_dict({"epoch": epoch, "consumed": consumed})
        if loader.generator is not None:
            loader.generator.manual_seed(data_seed + epoch)
        return iter(loader)
