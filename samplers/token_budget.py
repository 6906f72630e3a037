"""Token-budget batching (fairseq's ``max_tokens``): batches of varying size, each within a padded budget."""

from __future__ import annotations

import logging

import numpy as np
import torch

from samplers.lengths import LengthsLike, as_lengths, example_costs, sort_descending
from samplers.resumable import ResumableSampler, randperm
from samplers.sharding import padded_size, shard

logger = logging.getLogger(__name__)


class TokenBudgetBatchSampler(ResumableSampler):
    """A batch sampler (yields lists of indices) whose every batch costs at most ``max_tokens`` padded tokens.

    Use with ``DataLoader(dataset, batch_sampler=...)``. An example costs its length, or for ``(src, tgt)``
    pairs ``max(src, tgt)``; a batch of ``b`` examples costs ``b * max over the batch of max(src, tgt)``, the
    size of the larger of its two padded tensors (source and target are each padded to their own maximum,
    and neither exceeds this). Hugging Face's Trainer has no such batching: its batches hold a fixed number of
    sentences, so a batch of long ones costs many times a batch of short ones.

    Batches are cut greedily from the examples sorted by descending cost (ties broken by source then target
    length, then at random per epoch when ``shuffle``), each holding as many examples as the budget and
    ``max_sentences`` allow, rounded down to a multiple of ``required_batch_size_multiple`` when the budget
    is what limits it. Because the sorted costs are the same every epoch, so are the batch sizes and
    ``len()``. With ``shuffle`` the batch order is shuffled per epoch; either way the costliest batch comes
    first, so an out-of-memory error shows at step 1.

    An example longer than the budget raises a ``ValueError`` naming it, or with ``skip_too_long=True`` is
    left out of every epoch, counted in ``num_skipped`` (indices in ``skipped_indices``) and logged.

    Distributed: the batch list is padded to a multiple of ``num_replicas`` by repeating its first batches
    (as ``DistributedSampler`` repeats examples) and rank ``r`` takes every ``num_replicas``-th batch from
    ``r``: disjoint shards (up to those repeats), every example covered, ``ceil(batches / num_replicas)``
    batches on every rank. The ``num_replicas`` costliest batches open the list, one per rank.

    Deterministic given ``(seed, epoch)``; ``state_dict()``/``load_state_dict()`` resume at ``consumed``
    (batches of this rank's order) by slicing the epoch's batch list, as fairseq does, instead of loading
    and discarding the batches already trained on.
    """

    def __init__(
        self,
        lengths: LengthsLike,
        max_tokens: int,
        *,
        max_sentences: int | None = None,
        required_batch_size_multiple: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        skip_too_long: bool = False,
    ) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank)
        for name, value in (
            ("max_tokens", max_tokens),
            ("required_batch_size_multiple", required_batch_size_multiple),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if max_sentences is not None and (not isinstance(max_sentences, int) or max_sentences < 1):
            raise ValueError(f"max_sentences must be a positive int or None, got {max_sentences!r}")
        self.lengths = as_lengths(lengths)
        self.num_examples = len(self.lengths)
        self.max_tokens = max_tokens
        self.max_sentences = max_sentences
        self.required_batch_size_multiple = required_batch_size_multiple
        self.shuffle = shuffle
        self.costs = example_costs(self.lengths)

        too_long = np.flatnonzero(self.costs > max_tokens)
        self.skipped_indices: list[int] = too_long.tolist() if skip_too_long else []
        self.num_skipped = len(self.skipped_indices)
        if len(too_long) and not skip_too_long:
            raise ValueError(self._too_long_message(too_long))
        if self.num_skipped:
            logger.warning(
                "TokenBudgetBatchSampler: skipping %d of %d examples longer than max_tokens=%d (first: %s)",
                self.num_skipped,
                self.num_examples,
                max_tokens,
                self._describe(int(too_long[0])),
            )
        self.kept = np.flatnonzero(self.costs <= max_tokens)
        if len(self.kept) == 0:
            raise ValueError(
                f"no example fits max_tokens={max_tokens}; the shortest costs {self.costs.min()}"
            )
        self.batch_sizes = self._batch_sizes(np.sort(self.costs[self.kept])[::-1])

    def __len__(self) -> int:
        return padded_size(len(self.batch_sizes), self.num_replicas) // self.num_replicas

    def _batch_sizes(self, costs_descending: np.ndarray) -> list[int]:
        """Greedy sizes over descending costs: a batch's first example is its costliest, so its size is
        ``max_tokens // that cost`` (capped), and the loop runs once per batch, not once per example."""
        sizes: list[int] = []
        start, total = 0, len(costs_descending)
        multiple = self.required_batch_size_multiple
        while start < total:
            cost = int(costs_descending[start])
            size = self.max_tokens // cost if cost else total
            if self.max_sentences is not None:
                size = min(size, self.max_sentences)
            if size < total - start and size > multiple:
                size -= size % multiple  # e.g. 8-aligned batches for tensor cores; the last takes the rest
            size = min(size, total - start)
            sizes.append(size)
            start += size
        return sizes

    def _epoch_order(self, generator: torch.Generator) -> list[list[int]]:
        candidates = self.kept[randperm(len(self.kept), generator)] if self.shuffle else self.kept
        order = sort_descending(self.lengths, candidates)
        batches = np.split(order, np.cumsum(self.batch_sizes)[:-1])
        costs = np.array([len(b) * self.costs[b[0]] for b in batches])
        positions = randperm(len(batches), generator) if self.shuffle else np.arange(len(batches))
        # The costliest batches first, one per rank, so every rank meets its worst case at step 1.
        top = positions[np.argsort(-costs[positions], kind="stable")[: self.num_replicas]]
        positions = np.concatenate([top, positions[~np.isin(positions, top)]])
        mine = shard(positions, self.num_replicas, self.rank)
        return [batches[p].tolist() for p in mine]

    def _describe(self, index: int) -> str:
        length = self.lengths[index]
        if length.ndim:
            return f"example {index} with (src, tgt) lengths ({length[0]}, {length[1]})"
        return f"example {index} with length {length}"

    def _too_long_message(self, too_long: np.ndarray) -> str:
        more = f" (and {len(too_long) - 1} more)" if len(too_long) > 1 else ""
        return (
            f"{self._describe(int(too_long[0]))} is longer than max_tokens={self.max_tokens}{more}; "
            f"raise max_tokens, truncate or filter long examples, or pass skip_too_long=True"
        )
