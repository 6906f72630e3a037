"""Where training stands in a streamed dataset: the dataset's own position after each micro-batch used.

A streamed training dataset (an ``IterableDataset`` with ``set_epoch``/``state_dict``/``load_state_dict`` and
``yields_batches``, such as ``samplers.streaming.StreamingTokenBatches``) has no index a count of micro-batches
could be turned into: only the dataset knows where its shards stand. So its ``state_dict()`` is recorded as
each micro-batch is read (it must be read in this process, ``num_workers=0``, to be up to date), and a
checkpoint keeps the one recorded after the last micro-batch the loop trained on: the loop may have read a few
more (a whole accumulation window is read before it is trained on).

Each process reads its own shards, so each has its own position: a checkpoint holds all of them, gathered
from every process when it is saved, and a resumed process takes its own by rank.

The stream is read epoch after epoch, ``set_epoch`` moving it on, until the run's ``max_steps``: processes
whose shards hold different numbers of batches stay in step (none runs out while another waits for it in a
collective), and a stream is not cut short at its first epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, IterableDataset

from s2s import distributed


def is_resumable_stream(dataset: Any) -> bool:
    """A streamed dataset that cuts its own batches and can save and restore its position."""
    return (
        isinstance(dataset, IterableDataset)
        and getattr(dataset, "yields_batches", False)
        and all(hasattr(dataset, name) for name in ("set_epoch", "state_dict", "load_state_dict"))
    )


class StreamPosition:
    """The positions of a streamed dataset, recorded per micro-batch read; ``saved`` holds a checkpoint's."""

    def __init__(self) -> None:
        self.recorded: dict[int, dict[str, Any]] = {}  # micro-batches read -> the dataset's state after them
        self.saved: list[dict[str, Any]] | None = None  # every process's position, from a checkpoint

    def state_dict(self, micro_batches: int) -> list[dict[str, Any]] | None:
        """Every process's position after ``micro_batches`` micro-batches (a collective: every process calls
        it when a checkpoint is saved); None before the stream was read."""
        mine = self.recorded.get(micro_batches)
        if not self.recorded:
            return None
        if mine is None:
            raise RuntimeError(
                f"the streamed dataset's position after micro-batch {micro_batches} was not recorded "
                f"(recorded: {sorted(self.recorded)})"
            )
        return distributed.all_gather_object(mine)

    def batches(self, loader: DataLoader, *, done: int) -> Iterator[Any]:
        """The loader's batches after the first ``done`` ones of the run, which are never read: the dataset
        starts from the position a checkpoint saved (from the start of epoch 0 on a fresh run)."""
        dataset = loader.dataset
        if done:
            dataset.load_state_dict(self._saved_for(dataset, done))
        else:
            dataset.set_epoch(0)
        self.recorded = {done: dataset.state_dict()}
        return self._read(loader, dataset, done)

    def _read(self, loader: DataLoader, dataset: Any, count: int) -> Iterator[Any]:
        resumed_pass = count > 0  # may lie at an epoch's end: an empty pass then is no error
        while True:
            before = count
            for batch in loader:
                count += 1
                self.recorded[count] = dataset.state_dict()
                yield batch
            if count == before and not resumed_pass:
                raise ValueError(
                    f"the streamed training dataset yields no batch in epoch {dataset.epoch}: its shards for "
                    "this process hold no example (or every example was left out as too long)"
                )
            resumed_pass = False
            dataset.set_epoch(dataset.epoch + 1)

    def forget_before(self, micro_batches: int) -> None:
        """Drop the positions before ``micro_batches``: the loop trained past them."""
        for count in [c for c in self.recorded if c < micro_batches]:
            del self.recorded[count]

    def _saved_for(self, dataset: Any, done: int) -> dict[str, Any]:
        if not self.saved:
            raise ValueError(
                f"the checkpoint says {done} micro-batches were trained on but holds no position of the streamed "
                "dataset (saved by a run that did not stream?); pass ignore_data_skip=True to start the stream "
                "from its beginning"
            )
        replicas = getattr(dataset, "num_replicas", 1)
        if len(self.saved) != replicas:
            raise ValueError(
                f"the checkpoint holds the stream positions of {len(self.saved)} processes, this run has "
                f"{replicas}: resume with as many processes, or pass ignore_data_skip=True to start the stream "
                "from its beginning"
            )
        return self.saved[getattr(dataset, "rank", 0)]
