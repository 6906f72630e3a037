"""Beam search bookkeeping as pure functions over tensors; the loop that calls them is `search.beam_search`.

Shapes: B sources, K beams, V vocabulary, L maximum decoder length. Running beam scores are raw sums of
log-probabilities; finished hypotheses are kept with their normalised score `sum / len**length_penalty`, where
len counts the generated tokens including eos (the decoder start token is not counted), as in Hugging Face.
"""

from __future__ import annotations

import torch
from torch import Tensor

from s2s.generation import selection

NEG_INF = float("-inf")


def beam_step(
    log_probs: Tensor, beam_scores: Tensor, *, num_candidates: int
) -> tuple[Tensor, Tensor, Tensor]:
    """log_probs: (B * K, V) processed log-probabilities; beam_scores: (B, K) running sums.

    Returns the best `num_candidates` continuations of each source: scores (their new sums), token ids and
    beam ids (in [0, K)), each (B, num_candidates), best first. `log_probs` is used as scratch space (the
    sums are written into it): allocating a fresh (B * K, V) tensor every step costs more than the addition."""
    batch, beams = beam_scores.shape
    vocab = log_probs.size(-1)
    total = log_probs.view(batch, beams, vocab).add_(beam_scores[:, :, None]).view(batch, beams * vocab)
    scores, flat = selection.topk(total, min(num_candidates, beams * vocab))
    return scores, flat % vocab, flat // vocab


def select_running(cand_scores: Tensor, is_eos: Tensor, *, num_beams: int) -> tuple[Tensor, Tensor]:
    """The K best candidates that do not end with eos: (scores (B, K), positions in the candidate list (B, K)).

    A candidate list of K * (1 + number of eos ids) always holds K of them (each beam ends with eos at most
    once per eos id); slots left over when fewer candidates exist carry -inf and are dead beams."""
    key = cand_scores.masked_fill(is_eos, NEG_INF)
    return key.topk(num_beams, dim=-1)


def finishing_scores(
    cand_scores: Tensor, is_eos: Tensor, *, num_beams: int, length: int, length_penalty: float
) -> Tensor:
    """Normalised scores of candidates that finish now (eos among the K best candidates, as in Hugging Face:
    an eos ranked below K would not have survived as a beam); -inf for the others. (B, K)."""
    scores = cand_scores[:, :num_beams]
    finishing = is_eos[:, :num_beams] & torch.isfinite(scores)
    return torch.where(finishing, normalise(scores, length, length_penalty), NEG_INF)


def normalise(sum_logprobs: Tensor, length: int | Tensor, length_penalty: float) -> Tensor:
    """sum(log-probs) / len**length_penalty (len = generated tokens, eos included)."""
    if length_penalty == 0:
        return sum_logprobs
    if isinstance(length, int):  # a Python number: no tensor to copy to the device each step
        return sum_logprobs / float(length) ** length_penalty
    return sum_logprobs / length.to(sum_logprobs.dtype) ** length_penalty


def merge_finished(
    fin_scores: Tensor,
    fin_seqs: Tensor,
    fin_lens: Tensor,
    new_scores: Tensor,
    new_seqs: Tensor,
    new_lens: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the K best of the finished hypotheses and the new ones (new_scores -inf where not finishing).

    fin_*: (B, K), (B, K, L), (B, K); new_*: (B, M), (B, M, L), (B, M). Returns the K best, best first.
    Ties keep the finished hypotheses ahead of the new ones (a stable sort), so merging candidates that all
    score -inf changes nothing: the loop may merge without first reading whether any candidate finished."""
    num_beams = fin_scores.size(1)
    scores = torch.cat([fin_scores, new_scores], dim=1)
    best, idx = scores.sort(dim=1, descending=True, stable=True)
    best, idx = best[:, :num_beams], idx[:, :num_beams]
    seqs = torch.cat([fin_seqs, new_seqs], dim=1)
    seqs = seqs.gather(1, idx[:, :, None].expand(-1, -1, seqs.size(2)))
    lens = torch.cat([fin_lens, new_lens], dim=1).gather(1, idx)
    return best, seqs, lens


def beams_done(
    fin_scores: Tensor,
    best_running: Tensor,
    *,
    length: int,
    max_lengths: Tensor,
    length_penalty: float,
    early_stopping: bool | str,
) -> Tensor:
    """(B,) True where a source needs no more steps.

    fin_scores: (B, K) normalised, best first; best_running: (B,) best running sum; length: generated tokens
    of the running beams; max_lengths: (B,) per-source limits. Scores never increase with more tokens
    (log-probabilities are <= 0), which makes the "never" bound exact."""
    full = torch.isfinite(fin_scores[:, -1])
    no_running = ~torch.isfinite(best_running)
    if early_stopping is True:
        return full | no_running
    worst = fin_scores[:, -1]
    if early_stopping == "never" and length_penalty > 0:
        # a longer hypothesis divides its (lower) sum by a larger length: the best it can reach is the
        # current sum at the longest allowed length
        bound = best_running / max_lengths.to(best_running.dtype) ** length_penalty
    else:
        bound = normalise(best_running, length, length_penalty)
    return (full & (worst >= bound)) | no_running
