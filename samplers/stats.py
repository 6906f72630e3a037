"""Padding statistics: how much of a padded batch is real tokens."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from samplers.lengths import LengthsLike, as_lengths


def padding_counts(
    batches: Iterable[Sequence[int]], src_lengths: LengthsLike, tgt_lengths: LengthsLike | None = None
) -> tuple[int, int]:
    """``(real, padded)`` token counts of ``batches`` (lists of dataset indices) over source + target.

    Each side of a batch is padded to its own maximum, so a batch ``B`` pads to
    ``|B| * max src + |B| * max tgt`` tokens. ``src_lengths`` may also hold ``(src, tgt)`` pairs."""
    src = as_lengths(src_lengths, name="src_lengths")
    if src.ndim == 2:
        if tgt_lengths is not None:
            raise ValueError("src_lengths already holds (src, tgt) pairs; do not pass tgt_lengths too")
        sides = [src[:, 0], src[:, 1]]
    else:
        sides = [src]
        if tgt_lengths is not None:
            tgt = as_lengths(tgt_lengths, name="tgt_lengths")
            if tgt.shape != src.shape:
                raise ValueError(f"tgt_lengths has shape {tgt.shape} but src_lengths has {src.shape}")
            sides.append(tgt)
    real = padded = 0
    for batch in batches:
        index = np.asarray(batch, dtype=np.int64)
        if index.size == 0:
            continue
        for side in sides:
            values = side[index]
            real += int(values.sum())
            padded += int(values.max()) * index.size
    return real, padded


def padding_efficiency(
    batches: Iterable[Sequence[int]], src_lengths: LengthsLike, tgt_lengths: LengthsLike | None = None
) -> float:
    """Real tokens / padded tokens over source + target for a batching (1.0 means no padding)."""
    real, padded = padding_counts(batches, src_lengths, tgt_lengths)
    return real / padded if padded else 1.0


def batch_padding_counts(
    attention_mask: torch.Tensor, labels: torch.Tensor | None = None, *, label_pad_token_id: int = -100
) -> tuple[int, int]:
    """``(real, padded)`` tokens of one collated batch, from its ``attention_mask`` and ``labels`` (padded
    with ``label_pad_token_id``): what a trainer sums over steps (and ranks) to log ``padding_efficiency``.
    Padding added by ``pad_to_multiple_of`` counts as padding, as it costs compute."""
    real, padded = int(attention_mask.sum()), attention_mask.numel()
    if labels is not None:
        real += int((labels != label_pad_token_id).sum())
        padded += labels.numel()
    return real, padded
