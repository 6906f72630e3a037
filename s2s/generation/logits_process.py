"""Logits processors as small functions: `(scores, ctx) -> scores`, each a few vectorised lines.

`scores` is (rows, vocab) float32: raw logits for greedy decoding and sampling, log-probabilities for beam search
(as in Hugging Face). A processor may modify `scores` in place and returns it. `ctx` carries what processors may
look at; the parameters of each processor are bound with `functools.partial` by `build_processors`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from s2s.generation.configuration import GenerationConfig
from s2s.generation.stopping import maybe_any

NEG_INF = float("-inf")


@dataclass
class StepContext:
    """What a processor may read at one decoding step.

    input_ids: (rows, step + 1) decoder ids so far, the decoder start token first.
    step: number of tokens generated so far (0 when choosing the first generated token).
    max_new_tokens: (rows,) per-row limit on generated tokens (eos included)."""

    input_ids: Tensor
    step: int
    max_new_tokens: Tensor


Processor = Callable[[Tensor, StepContext], Tensor]


def _force_token(scores: Tensor, rows: Tensor, token: int) -> Tensor:
    """Rows selected by the bool mask `rows` can only produce `token` (score 0, the rest -inf).

    Written with masks, not `scores[rows] = ...` (which reads the number of selected rows on the host, a
    device sync on CUDA); where reading is free, rows that need nothing are skipped."""
    if not maybe_any(rows):
        return scores
    chosen = scores[:, token].clone()
    scores.masked_fill_(rows[:, None], NEG_INF)
    scores[:, token] = torch.where(rows, 0.0, chosen)
    return scores


def min_new_tokens(scores: Tensor, ctx: StepContext, *, min_new: int, eos_token_ids: Sequence[int]) -> Tensor:
    """Forbid eos while fewer than `min_new` tokens were generated."""
    if ctx.step < min_new:
        for eos in eos_token_ids:  # one column at a time: a list index would be copied to the device
            scores[:, eos] = NEG_INF
    return scores


def no_repeat_ngram(scores: Tensor, ctx: StepContext, *, size: int) -> Tensor:
    """Ban every token that would complete an n-gram (n = size) already present in the row's ids."""
    ids = ctx.input_ids
    length = ids.size(1)
    if length < size:  # no complete n-gram yet
        return scores
    windows = ids.unfold(1, size, 1)  # (rows, length - size + 1, size)
    if size > 1:
        suffix = ids[:, length - size + 1 :]  # the last size - 1 ids
        match = (windows[:, :, :-1] == suffix[:, None, :]).all(-1)
    else:
        match = torch.ones(windows.shape[:2], dtype=torch.bool, device=ids.device)
    vocab = scores.size(1)
    banned_ids = torch.where(match, windows[:, :, -1], vocab)  # `vocab` is a dummy column
    banned = torch.zeros(scores.size(0), vocab + 1, dtype=torch.bool, device=scores.device)
    banned.scatter_(1, banned_ids, True)
    return scores.masked_fill_(banned[:, :vocab], NEG_INF)


def repetition_penalty(scores: Tensor, ctx: StepContext, *, penalty: float) -> Tensor:
    """CTRL penalty on every token already in the row: negative scores * penalty, positive / penalty."""
    seen = torch.gather(scores, 1, ctx.input_ids)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter_(1, ctx.input_ids, seen)


def bad_words(scores: Tensor, ctx: StepContext, *, bad_words_ids: Sequence[Sequence[int]]) -> Tensor:
    """Ban the last token of each bad sequence in rows whose ids end with the rest of that sequence."""
    ids = ctx.input_ids
    for seq in bad_words_ids:
        prefix = list(seq[:-1])
        if not prefix:
            scores[:, seq[-1]] = NEG_INF
            continue
        if ids.size(1) < len(prefix):
            continue
        tail = ids[:, ids.size(1) - len(prefix) :]
        hit = torch.ones(ids.size(0), dtype=torch.bool, device=ids.device)
        for i, token in enumerate(prefix):  # Python ints: no tensor to copy to the device
            hit &= tail[:, i] == token
        scores[:, seq[-1]].masked_fill_(hit, NEG_INF)  # a mask, not `scores[hit]`: no host read
    return scores


def forced_bos(scores: Tensor, ctx: StepContext, *, token_id: int) -> Tensor:
    """The first generated token is `token_id`."""
    if ctx.step == 0:
        scores = _force_token(
            scores, torch.ones(scores.size(0), dtype=torch.bool, device=scores.device), token_id
        )
    return scores


def forced_eos(scores: Tensor, ctx: StepContext, *, token_id: int) -> Tensor:
    """The last token a row may generate (its length limit) is `token_id`."""
    return _force_token(scores, ctx.max_new_tokens == ctx.step + 1, token_id)


def temperature(scores: Tensor, ctx: StepContext, *, value: float) -> Tensor:
    return scores.div_(value)


def top_k(scores: Tensor, ctx: StepContext, *, k: int) -> Tensor:
    """Keep the k best tokens of each row (ties with the k-th are kept)."""
    if k >= scores.size(1):
        return scores
    kth = scores.topk(k, dim=-1).values[:, -1:]
    return scores.masked_fill_(scores < kth, NEG_INF)


def top_p(scores: Tensor, ctx: StepContext, *, p: float) -> Tensor:
    """Keep the smallest set of best tokens whose probability reaches p (at least one token)."""
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    probs = sorted_scores.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the better tokens
    drop_sorted = mass_before >= p
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
    return scores.masked_fill_(drop, NEG_INF)


def build_processors(config: GenerationConfig) -> list[Processor]:
    """Processors that shape the distribution (all decoding modes), in Hugging Face's order."""
    procs: list[Processor] = []
    eos = config.eos_token_ids
    if config.repetition_penalty != 1.0:
        procs.append(partial(repetition_penalty, penalty=config.repetition_penalty))
    if config.no_repeat_ngram_size > 0:
        procs.append(partial(no_repeat_ngram, size=config.no_repeat_ngram_size))
    if config.bad_words_ids:
        procs.append(partial(bad_words, bad_words_ids=config.bad_words_ids))
    min_new = resolve_min_new_tokens(config)
    if min_new > 0 and eos:
        procs.append(partial(min_new_tokens, min_new=min_new, eos_token_ids=eos))
    if config.forced_bos_token_id is not None:
        procs.append(partial(forced_bos, token_id=config.forced_bos_token_id))
    if config.forced_eos_token_id is not None:
        procs.append(partial(forced_eos, token_id=config.forced_eos_token_id))
    return procs


def build_warpers(config: GenerationConfig) -> list[Processor]:
    """Sampling-only processors: temperature, top-k, top-p."""
    warpers: list[Processor] = []
    if config.temperature != 1.0:
        warpers.append(partial(temperature, value=config.temperature))
    if config.top_k > 0:
        warpers.append(partial(top_k, k=config.top_k))
    if config.top_p < 1.0:
        warpers.append(partial(top_p, p=config.top_p))
    return warpers


def apply_processors(processors: Sequence[Processor], scores: Tensor, ctx: StepContext) -> Tensor:
    for proc in processors:
        scores = proc(scores, ctx)
    return scores


def resolve_min_new_tokens(config: GenerationConfig) -> int:
    """Generated tokens before eos is allowed: the larger of `min_new_tokens` and `min_length - 1` (the
    decoder start token counts towards `min_length`)."""
    return max(config.min_new_tokens or 0, config.min_length - 1, 0)
