"""The batches of one shuffle buffer: shuffled, sorted by length in look-ahead windows, cut by a token budget.

Marian's maxi-batches: a window of ``window_size`` examples is sorted by length and cut into batches of
nearly equal lengths, so little of each batch is padding; the batch order is then shuffled, so training does
not see lengths rising or falling. Here the examples of a buffer are first shuffled, so a window is a random
``window_size`` of the buffer's examples rather than neighbouring lines (which in a crawled or document-ordered
corpus share a topic), and the batches of all the buffer's windows are shuffled together.
"""

from __future__ import annotations

import numpy as np

from samplers.lengths import sort_descending
from samplers.token_budget import greedy_batch_sizes


def buffer_batches(
    lengths: np.ndarray,
    rng: np.random.Generator,
    *,
    window_size: int,
    max_tokens: int,
    max_sentences: int | None = None,
    required_batch_size_multiple: int = 1,
    costliest_first: bool = False,
) -> list[np.ndarray]:
    """Batches (arrays of positions in the buffer) of a buffer whose examples have ``lengths`` (``(n, 2)``
    source and target lengths), each costing at most ``max_tokens`` padded tokens (every example must fit).

    Within a window the examples are sorted by ``(max(src, tgt), src, tgt)`` descending, ties broken by the
    shuffle, and cut greedily as ``TokenBudgetBatchSampler`` cuts (see ``greedy_batch_sizes``). With
    ``costliest_first`` the costliest batch opens the list, so an out-of-memory error shows at the first step
    of an epoch rather than somewhere in it."""
    order = rng.permutation(len(lengths))
    costs = lengths.max(axis=1)
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window_size):
        window = sort_descending(lengths, order[start : start + window_size])
        sizes = greedy_batch_sizes(
            costs[window],
            max_tokens,
            max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple,
        )
        batches += np.split(window, np.cumsum(sizes)[:-1])
    batches = [batches[i] for i in rng.permutation(len(batches))]
    if costliest_first and batches:
        padded = [len(b) * int(costs[b[0]]) for b in batches]
        batches.insert(0, batches.pop(int(np.argmax(padded))))
    return batches
