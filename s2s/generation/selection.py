"""Argmax and top-k over the vocabulary, faster on CPU than `torch.argmax` / `torch.topk` on wide rows.

On CPU those two kernels walk each row element by element (about 1 ns per element here), while `amax` is
vectorised (30x faster). So each row is cut into chunks of `CHUNK` entries: the chunk maxima are taken with
`amax`, and only the winning chunks are searched element by element. The k largest entries of a row always
lie in the k chunks with the largest maxima (an entry outside them would be beaten by k chunk maxima), so the
result is exact. Measured on (64, 8000) / (64, 32000) fp32 rows, 2 threads: argmax 216 -> 66 us, top-8
1,200 -> 255 us, i.e. 0.15 ms of a greedy step and 1 ms of a 4-beam step at batch 64.

Ties: argmax returns the first maximal index, as `torch.argmax`; top-k returns the same values as
`torch.topk` and, among equal values, any of their indices (torch.topk does not specify which either).
NaN ranks above everything, as in the torch kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK = 64
"""Entries per chunk: 64-256 measured alike; 64 keeps the search inside the winning chunks short."""


def _split(scores: Tensor, min_chunks: int) -> tuple[Tensor, Tensor] | None:
    """(head (N, C, CHUNK) view, tail (N, V - C * CHUNK)) of a CPU (N, V) tensor; None where the plain kernel
    is as fast (other devices, short rows, rows that are not contiguous)."""
    rows, vocab = scores.shape
    chunks = vocab // CHUNK
    if scores.device.type != "cpu" or chunks < min_chunks or scores.stride(-1) != 1:
        return None
    full = chunks * CHUNK
    return scores[:, :full].view(rows, chunks, CHUNK), scores[:, full:]


def argmax(scores: Tensor) -> Tensor:
    """`scores.argmax(dim=-1)` of a (N, V) tensor."""
    parts = _split(scores, min_chunks=4)
    if parts is None:
        return scores.argmax(dim=-1)
    head, tail = parts
    chunk_max = head.amax(dim=-1)  # (N, C)
    chunk = chunk_max.argmax(dim=-1)  # first chunk holding the row maximum (or its first NaN)
    within = head.gather(1, chunk[:, None, None].expand(-1, 1, CHUNK))[:, 0].argmax(dim=-1)
    best = chunk * CHUNK + within
    if tail.size(1) == 0:
        return best
    head_max = chunk_max.gather(1, chunk[:, None])[:, 0]
    tail_max, tail_arg = tail.max(dim=-1)
    # the tail comes after the head: it wins only when strictly larger, or NaN where the head has none
    tail_wins = (tail_max > head_max) | (tail_max.isnan() & ~head_max.isnan())
    return torch.where(tail_wins, tail_arg + head.size(1) * CHUNK, best)


def topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """`scores.topk(k, dim=-1)` of a (N, V) tensor: (values, indices), each (N, k), largest first."""
    parts = _split(scores, min_chunks=4 * k)
    if parts is None:
        return scores.topk(k, dim=-1)
    head, tail = parts
    rows, chunks = head.size(0), head.size(1)
    _, best_chunks = head.amax(dim=-1).topk(k, dim=-1)  # (N, k)
    candidates = head.gather(1, best_chunks[:, :, None].expand(-1, -1, CHUNK)).view(rows, k * CHUNK)
    index = (best_chunks[:, :, None] * CHUNK + torch.arange(CHUNK, device=scores.device)).view(rows, -1)
    if tail.size(1):
        candidates = torch.cat([candidates, tail], dim=1)
        tail_index = torch.arange(chunks * CHUNK, scores.size(1), device=scores.device)
        index = torch.cat([index, tail_index.expand(rows, -1)], dim=1)
    values, positions = candidates.topk(k, dim=-1)
    return values, index.gather(1, positions)
