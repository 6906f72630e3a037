"""Distributed sharding: every rank gets the same number of items, every example lands on some rank.

The global order is padded to a multiple of ``num_replicas`` by repeating its first items (as
``torch.utils.data.DistributedSampler`` does), then dealt out with a stride: rank ``r`` takes items
``r, r + R, r + 2R, ...``. Striding (rather than contiguous blocks) keeps length-sorted neighbours on
neighbouring ranks, so when the global order is grouped in blocks of ``batch_size * num_replicas``, each
rank's local batch of ``batch_size`` comes from one block and stays length-homogeneous.
"""

from __future__ import annotations

import numpy as np


def check_replicas(num_replicas: int, rank: int) -> None:
    if not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas must be a positive int, got {num_replicas!r}")
    if not isinstance(rank, int) or not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank!r}")


def padded_size(n: int, num_replicas: int) -> int:
    """Items in the padded global order: ``n`` rounded up to a multiple of ``num_replicas``."""
    return -(-n // num_replicas) * num_replicas


def pad_to_multiple(items: np.ndarray, num_replicas: int) -> np.ndarray:
    """Append repeats of the first items (cycling if there are fewer items than ranks) until the length
    divides by ``num_replicas``. Works on a 1-D order and on a list of batches alike (first axis)."""
    extra = padded_size(len(items), num_replicas) - len(items)
    if extra == 0:
        return items
    return np.concatenate([items, items[np.arange(extra) % len(items)]])


def shard(items: np.ndarray, num_replicas: int, rank: int) -> np.ndarray:
    """This rank's share of a global order: padded, then every ``num_replicas``-th item from ``rank``."""
    return pad_to_multiple(items, num_replicas)[rank::num_replicas]
