"""Sortish order: the classic chunked shuffle of fastai and the legacy HF seq2seq examples, fixed."""

from __future__ import annotations

import numpy as np
import torch

from samplers.grouping import longest_block_first, shuffle_full_blocks
from samplers.lengths import LengthsLike, as_lengths, example_costs, sort_descending
from samplers.resumable import ResumableSampler, randperm
from samplers.sharding import padded_size, shard


class SortishSampler(ResumableSampler):
    """Shuffle, cut into chunks of ``chunk_mult`` batches, sort each chunk by length (descending), cut into
    batches, shuffle the batches, and put the batch with the longest example first; yields indices.

    Use with ``DataLoader(dataset, batch_size=batch_size, sampler=...)``. Works for any ``n``: Hugging
    Face's legacy ``sortish_sampler_indices`` shuffles a ragged list of batches with
    ``np.random.permutation``, which NumPy 2 rejects when ``n % batch_size != 0`` (a ``ValueError`` about an
    inhomogeneous shape, checked on NumPy 2.4 with n=41, batch size 4); here the full batches are shuffled by
    index and the short one stays last, so every full batch stays one sorted block.

    Lengths are one per example, or ``(src, tgt)`` pairs, sorted by ``max(src, tgt)`` then by each side.

    Distributed: batches are formed over ``batch_size * num_replicas`` examples; the global order is padded
    to a multiple of ``num_replicas`` by repeating its first examples (as ``DistributedSampler`` does) and
    rank ``r`` takes every ``num_replicas``-th index from ``r``, so each rank's batch of ``batch_size`` comes
    from one sorted block and every rank gets ``ceil(n / num_replicas)`` indices (equal batch counts).

    Deterministic given ``(seed, epoch)``; ``state_dict()``/``load_state_dict()`` resume at ``consumed``
    (indices of this rank's order) without reading the skipped data.
    """

    def __init__(
        self,
        lengths: LengthsLike,
        batch_size: int,
        *,
        chunk_mult: int = 50,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(chunk_mult, int) or chunk_mult < 1:
            raise ValueError(f"chunk_mult must be a positive int, got {chunk_mult!r}")
        self.lengths = as_lengths(lengths)
        self.num_examples = len(self.lengths)
        self.batch_size = batch_size
        self.chunk_mult = chunk_mult

    def __len__(self) -> int:
        return padded_size(self.num_examples, self.num_replicas) // self.num_replicas

    def _epoch_order(self, generator: torch.Generator) -> list[int]:
        block = self.batch_size * self.num_replicas
        permutation = randperm(self.num_examples, generator)
        chunk = np.arange(self.num_examples) // (self.chunk_mult * block)
        order = sort_descending(self.lengths, permutation, chunk)
        order = shuffle_full_blocks(order, block, generator)
        order = longest_block_first(order, example_costs(self.lengths), block)
        return shard(order, self.num_replicas, self.rank).tolist()
