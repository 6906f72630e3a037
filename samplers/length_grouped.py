"""Length-grouped order (the ``group_by_length`` of Hugging Face, made deterministic and resumable)."""

from __future__ import annotations

import numpy as np
import torch

from samplers.grouping import longest_block_first
from samplers.lengths import LengthsLike, as_lengths, example_costs, sort_descending
from samplers.resumable import ResumableSampler, randperm
from samplers.sharding import padded_size, shard


class LengthGroupedSampler(ResumableSampler):
    """Random permutation, cut into mega-batches, each sorted by length (descending); yields indices.

    Use with ``DataLoader(dataset, batch_size=batch_size, sampler=...)``. Mega-batches hold
    ``mega_batch_mult * batch_size * num_replicas`` examples (default: ``min(n // (4 * that), 50)``, at
    least 1, as Hugging Face does). The mega-batch holding the longest example comes first, so the first
    batch is the most expensive one and an out-of-memory error shows at step 1.

    Lengths are one per example, or ``(src, tgt)`` pairs, sorted by ``max(src, tgt)`` then by each side
    Hugging Face's ``group_by_length`` sorts by the source length only, so a short source with a long target
    lands among short examples and pads its whole batch to that target.

    Distributed: the global order is padded to a multiple of ``num_replicas`` by repeating its first
    examples (as ``DistributedSampler`` does), and rank ``r`` takes every ``num_replicas``-th index from
    ``r``: disjoint shards (up to those repeats), every index covered, ``ceil(n / num_replicas)`` indices and
    so the same number of batches on every rank.

    Deterministic given ``(seed, epoch)``; ``state_dict()``/``load_state_dict()`` resume at ``consumed``
    (indices of this rank's order) without reading the skipped data.
    """

    def __init__(
        self,
        lengths: LengthsLike,
        batch_size: int,
        *,
        mega_batch_mult: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if mega_batch_mult is not None and (not isinstance(mega_batch_mult, int) or mega_batch_mult < 1):
            raise ValueError(f"mega_batch_mult must be a positive int or None, got {mega_batch_mult!r}")
        self.lengths = as_lengths(lengths)
        self.num_examples = len(self.lengths)
        self.batch_size = batch_size
        block = batch_size * num_replicas
        if mega_batch_mult is None:
            mega_batch_mult = max(1, min(self.num_examples // (4 * block), 50))
        self.mega_batch_mult = mega_batch_mult

    def __len__(self) -> int:
        return padded_size(self.num_examples, self.num_replicas) // self.num_replicas

    def _epoch_order(self, generator: torch.Generator) -> list[int]:
        block = self.batch_size * self.num_replicas
        permutation = randperm(self.num_examples, generator)
        megabatch = np.arange(self.num_examples) // (self.mega_batch_mult * block)
        order = sort_descending(self.lengths, permutation, megabatch)
        order = longest_block_first(order, example_costs(self.lengths), block)
        return shard(order, self.num_replicas, self.rank).tolist()
