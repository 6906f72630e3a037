"""Block operations shared by the length-grouped and sortish orders.

A global order is read as consecutive blocks of ``block = batch_size * num_replicas`` examples (one step
of every rank); only the last block may be short. Keeping that short block last keeps every full batch
aligned with one length-sorted block, which is what makes the padding small.
"""

from __future__ import annotations

import numpy as np
import torch

from samplers.resumable import randperm


def shuffle_full_blocks(order: np.ndarray, block: int, generator: torch.Generator) -> np.ndarray:
    """Shuffle the full blocks of ``order``; a short last block stays last (a short block in the middle
    would shift every later batch across two length groups)."""
    full = len(order) // block
    if full < 2:
        return order
    head = order[: full * block].reshape(full, block)[randperm(full, generator)].reshape(-1)
    return np.concatenate([head, order[full * block :]])


def longest_block_first(order: np.ndarray, costs: np.ndarray, block: int) -> np.ndarray:
    """Move the block holding the costliest example to the front, so an out-of-memory error shows at the
    first step rather than hours in. If that example sits in the short last block, it trades places with
    the cheapest example of the first block instead, so the first block is still full and the costliest."""
    order = order.copy()
    position = int(np.argmax(costs[order]))
    target = position // block
    if target == 0:
        return order
    full = len(order) // block
    if target < full:
        first = order[:block].copy()
        order[:block] = order[target * block : (target + 1) * block]
        order[target * block : (target + 1) * block] = first
    elif full > 0:
        cheapest = int(np.argmin(costs[order[:block]]))
        order[cheapest], order[position] = order[position], order[cheapest]
    return order
