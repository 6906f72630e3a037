"""Token cross-entropy, summed (not averaged), so the trainer can normalise by the tokens of a whole
accumulation window: k micro-batches of b examples then train exactly like one batch of k * b, whatever the
target lengths, label smoothing included. (Averaging each micro-batch and dividing by k, as many trainers do,
weighs every token of a short micro-batch more than a token of a long one.)
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


# Rows of logits per chunk: the fp32 working copy of a chunk (rows x vocab x 4 bytes, 2 MB at 8k vocabulary)
# stays in cache. Unchunked, a (tokens, vocab) fp32 temporary is tens of MB: glibc serves such sizes with a
# fresh mmap each time, so every pass first page-faults its memory in (measured: zeros(2048, 8000) 30 ms,
# the same in bf16, under the 32 MB mmap threshold, 4 ms).
_CHUNK_BYTES = 2 << 20
# On a GPU the chunks only bound the fp32 working copy's memory; each costs about ten kernel launches, and at
# 2 MB a 32k vocabulary would be cut into 16-row chunks, a thousand of them for 16k tokens (launches, not
# arithmetic, would set the pace). 256 MB there: 2,048 rows at 32k.
_DEVICE_CHUNK_BYTES = 256 << 20


class _CrossEntropySum(torch.autograd.Function):
    """Summed token cross-entropy with fp32 softmax statistics, computed chunk by chunk.

    When the logits need a gradient, it is computed in the same pass as the loss (one exp per logit, not
    one here and one again in backward) and saved in the logits' dtype, in place of the logits themselves:
    d loss / d logit = softmax - (1 - eps) * onehot - eps / vocab, zero on ignored rows. Backward only
    scales it by the upstream gradient. No (tokens, vocab) fp32 tensor, zero-filled one-hot, separate
    log-softmax backward or dtype cast pass."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, smoothing: float, ignore_index: int):
        valid = labels != ignore_index
        safe = labels.masked_fill(~valid, 0)
        rows, vocab = logits.shape
        chunk_bytes = _CHUNK_BYTES if logits.device.type == "cpu" else _DEVICE_CHUNK_BYTES
        chunk = max(1, chunk_bytes // (4 * vocab))
        with_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(logits) if with_grad else None
        target = torch.full((chunk, 1), -(1.0 - smoothing), dtype=torch.float32, device=logits.device)
        weight = valid.to(torch.float32)
        lse = torch.empty(rows, dtype=torch.float32, device=logits.device)
        mean = torch.empty(rows, dtype=torch.float32, device=logits.device) if smoothing else None
        for start in range(0, rows, chunk):
            end = start + chunk
            x = logits[start:end].float()
            peak = x.amax(dim=-1, keepdim=True)
            exp = (x - peak).exp_()
            total = exp.sum(dim=-1, keepdim=True)
            lse[start:end] = (total.log() + peak)[:, 0]
            if smoothing:
                mean[start:end] = x.mean(dim=-1)
            if with_grad:
                probs = exp.div_(total)
                probs.scatter_add_(1, safe[start:end, None], target[: probs.size(0)])
                if smoothing:
                    probs.sub_(smoothing / vocab)
                grad[start:end] = probs.mul_(weight[start:end, None])
        token_loss = lse - logits.gather(1, safe[:, None])[:, 0].float()
        if smoothing:
            # -mean over the vocabulary of log p = lse - mean(logits)
            token_loss = (1.0 - smoothing) * token_loss + smoothing * (lse - mean)
        if with_grad:
            ctx.save_for_backward(grad)
            ctx.consumed = False
        return token_loss.masked_fill_(~valid, 0.0).sum()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        # Scaled in place: a fresh (tokens, vocab) tensor is a page-faulted mmap and an extra bf16 pass.
        # So the saved gradient can serve one backward only (no retain_graph), which is checked.
        if ctx.consumed:
            raise RuntimeError(
                "token_cross_entropy_sum supports one backward pass per forward (its saved gradient is "
                "scaled in place); compute the loss again instead of backward(retain_graph=True)"
            )
        ctx.consumed = True
        (grad,) = ctx.saved_tensors
        return grad.mul_(grad_output.to(grad.dtype)), None, None, None


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
