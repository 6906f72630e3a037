"""Token cross-entropy, summed (not averaged), so the trainer can normalise by the tokens of a whole
accumulation window: k micro-batches of b examples then train exactly like one batch of k * b, whatever the
target lengths, label smoothing included (ANCHORS F5, P10).
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


# Rows of logits per chunk: the fp32 working copy of a chunk (rows x vocab x 4 bytes, 2 MB at 8k vocabulary)
# stays in cache. Unchunked, a (tokens, vocab) fp32 temporary is tens of MB: glibc serves such sizes with a
# fresh mmap each time, so every pass first page-faults its memory in (measured: zeros(2048, 8000) 30 ms,
# the same in bf16, under the 32 MB mmap threshold, 4 ms).
_CHUNK_BYTES = 2 << 20


class _CrossEntropySum(torch.autograd.Function):
    """Summed token cross-entropy with fp32 softmax statistics, computed chunk by chunk.

    Saves the logits (in their own dtype) and one log-sum-exp per row instead of a (tokens, vocab) fp32
    log-softmax; backward writes softmax - target directly into the gradient, with no zero-filled one-hot
    and no separate log-softmax backward and dtype cast passes."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, smoothing: float, ignore_index: int):
        valid = labels != ignore_index
        safe = labels.masked_fill(~valid, 0)
        rows, vocab = logits.shape
        chunk = max(1, _CHUNK_BYTES // (4 * vocab))
        lse = torch.empty(rows, dtype=torch.float32, device=logits.device)
        for start in range(0, rows, chunk):
            lse[start : start + chunk] = torch.logsumexp(logits[start : start + chunk].float(), dim=-1)
        token_loss = lse - logits.gather(1, safe[:, None])[:, 0].float()
        if smoothing:
            # -mean over the vocabulary of log p = lse - mean(logits)
            mean = logits.sum(dim=-1, dtype=torch.float32).div_(vocab)
            token_loss = (1.0 - smoothing) * token_loss + smoothing * (lse - mean)
        ctx.save_for_backward(logits, lse, safe, valid)
        ctx.smoothing, ctx.chunk = smoothing, chunk
        return token_loss.masked_fill_(~valid, 0.0).sum()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        logits, lse, safe, valid = ctx.saved_tensors
        smoothing, chunk = ctx.smoothing, ctx.chunk
        weight = valid.to(torch.float32).mul_(grad_output)
        target = torch.full((chunk, 1), -(1.0 - smoothing), dtype=torch.float32, device=logits.device)
        grad = torch.empty_like(logits)
        for start in range(0, logits.size(0), chunk):
            end = start + chunk
            probs = (logits[start:end].float() - lse[start:end, None]).exp_()  # softmax
            probs.scatter_add_(1, safe[start:end, None], target[: probs.size(0)])
            if smoothing:
                probs.sub_(smoothing / probs.size(1))
            grad[start:end] = probs.mul_(weight[start:end, None])
        return grad, None, None, None


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
    positions contribute nothing, to either term. Returns an fp32 scalar; the gradient has the logits' dtype.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits shape {tuple(logits.shape)} does not match labels shape {tuple(labels.shape)}: "
            "expected logits (..., vocab) and labels (...)"
        )
    # fp32 statistics: under bf16 autocast a bf16 log-softmax over a large vocabulary loses several digits.
    flat_logits = logits.reshape(-1, logits.size(-1))
    with torch.autocast(logits.device.type, enabled=False):
        return _CrossEntropySum.apply(flat_logits, labels.reshape(-1), float(label_smoothing), ignore_index)


def count_target_tokens(labels: torch.Tensor | None, *, ignore_index: int = IGNORE_INDEX) -> int:
    """Number of positions that carry a loss (labels != ``ignore_index``); 0 without labels."""
    if labels is None:
        return 0
    return int((labels != ignore_index).sum())
