"""Evaluation order: longest first (the out-of-memory batch shows at once, and batches of generate()
calls stay tight), with the permutation that puts predictions back in dataset order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from samplers.lengths import LengthsLike, as_lengths, sort_descending

T = TypeVar("T")


def eval_order(lengths: LengthsLike) -> tuple[list[int], list[int]]:
    """Return ``(order, inverse)``: ``order`` lists dataset indices by descending length (stable: equal
    lengths keep dataset order; pairs sort by ``max(src, tgt)``, then source, then target), and
    ``inverse[i]`` is where dataset example ``i`` sits in ``order``, so ``sorted_preds[inverse[i]]`` is the
    prediction for example ``i``."""
    array = as_lengths(lengths)
    order = sort_descending(array, np.arange(len(array)))
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return order.tolist(), inverse.tolist()


def restore_order(items: Sequence[T] | np.ndarray | torch.Tensor, order: Sequence[int]) -> Any:
    """Put ``items`` (produced in ``order``) back in dataset order: ``out[order[j]] = items[j]``.

    Returns a list for a list, and an array or tensor of the same kind for an array or tensor."""
    if len(items) != len(order):
        raise ValueError(
            f"restore_order got {len(items)} items for an order of {len(order)}; with a distributed "
            f"sampler, drop the padded repeats before restoring"
        )
    if isinstance(items, (np.ndarray, torch.Tensor)):
        index = np.asarray(order) if isinstance(items, np.ndarray) else torch.as_tensor(order)
        out = items.clone() if isinstance(items, torch.Tensor) else items.copy()
        out[index] = items
        return out
    out: list[Any] = [None] * len(order)
    for item, position in zip(items, order, strict=True):
        out[position] = item
    return out
