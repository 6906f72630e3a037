"""Token cross-entropy, summed (not averaged), so the trainer can normalise by the tokens of a whole
accumulation window: k micro-batches of b examples then train exactly like one batch of k * b, whatever the
target lengths, label smoothing included (ANCHORS F5, P10).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_cross_entropy_sum(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Sum over target tokens (labels != ``ignore_index``) of the cross-entropy, computed in fp32.

    logits: (..., vocab); labels: (...) with the same leading shape. With ``label_smoothing = eps`` each
    token's loss is ``(1 - eps) * nll + eps * mean_over_vocab(-log p)``, the usual definition; ignored
    positions contribute nothing, to either term.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits shape {tuple(logits.shape)} does not match labels shape {tuple(labels.shape)}: "
            "expected logits (..., vocab) and labels (...)"
        )
    # fp32: under bf16 autocast a bf16 log-softmax over a large vocabulary loses several digits.
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="sum",
        label_smoothing=label_smoothing,
    )


def count_target_tokens(labels: torch.Tensor | None, *, ignore_index: int = IGNORE_INDEX) -> int:
    """Number of positions that carry a loss (labels != ``ignore_index``); 0 without labels."""
    if labels is None:
        return 0
    return int((labels != ignore_index).sum())
