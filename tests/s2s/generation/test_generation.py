"""Generation engine against known answers.

Table models (log-probabilities written by hand, or drawn per prefix) implement the engine's decoding protocol (encode / start_decoding / decode_step / cache.reorder) and can
score any sequence independently of the engine, so searches can be checked against brute force.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor

from s2s.generation import GenerationConfig, beam_search, generate, resolve_max_new_tokens, sample_or_greedy
from s2s.generation import logits_process as lp_
from s2s.generation.logits_process import StepContext

PAD, START, EOS = 0, 2, 3
NEG_INF = float("-inf")


class HistoryCache:
    """Keeps every row's generated tokens, so a wrong `reorder` changes the next logits."""

    def __init__(self, rows: int, rows_per_source: int) -> None:
        self.history = torch.zeros(rows, 0, dtype=torch.long)
        self.rows_per_source = rows_per_source
        self.reorders = 0

    def reorder(self, rows: Tensor) -> None:
        self.reorders += 1
        self.history = self.history.index_select(0, rows)


class TableModel:
    """Next-token log-probabilities as a function of (source, generated prefix).

    `logprobs(source, prefix) -> list[float]` (length V). Tokens with -inf are never produced."""

    def __init__(self, vocab: int, logprobs: Callable[[tuple[int, ...], tuple[int, ...]], Sequence[float]]):
        self.vocab = vocab
        self._logprobs = logprobs

    def logprobs(self, source: tuple[int, ...], prefix: tuple[int, ...]) -> Tensor:
        return torch.tensor(list(self._logprobs(source, prefix)), dtype=torch.float32)

    # protocol
    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> list[tuple[int, ...]]:
        return [tuple(row[mask.bool()].tolist()) for row, mask in zip(input_ids, attention_mask)]

    def start_decoding(self, state, attention_mask, *, rows_per_source: int, max_steps: int) -> HistoryCache:
        self.sources = state
        return HistoryCache(len(state) * rows_per_source, rows_per_source)

    def decode_step(self, tokens: Tensor, cache: HistoryCache) -> Tensor:
        if cache.history.size(1) == 0:
            assert bool((tokens == START).all()), "the first step must feed the decoder start token"
        cache.history = torch.cat([cache.history, tokens[:, None]], dim=1)
        rows = []
        for r, hist in enumerate(cache.history.tolist()):
            source = self.sources[r // cache.rows_per_source]
            rows.append(self.logprobs(source, tuple(hist[1:])))  # drop the start token
        return torch.stack(rows)

    # independent scoring
    def sequence_logprob(self, source: tuple[int, ...], tokens: Sequence[int]) -> float:
        total = 0.0
        for i, tok in enumerate(tokens):
            total += float(self.logprobs(source, tuple(tokens[:i]))[tok])
        return total


def random_table_model(vocab: int = 6, banned: Sequence[int] = (PAD, START), seed: int = 0) -> TableModel:
    """Peaked random distributions, a different one for every (source, prefix)."""

    @functools.cache
    def logprobs(source: tuple[int, ...], prefix: tuple[int, ...]) -> list[float]:
        key = hash((seed, source, prefix)) % (2**31)
        g = torch.Generator().manual_seed(key)
        logits = torch.randn(vocab, generator=g) * 1.5
        logits[list(banned)] = NEG_INF
        return logits.log_softmax(-1).tolist()

    return TableModel(vocab, logprobs)


def hand_table_model(table: dict[tuple[int, ...], dict[int, float]], vocab: int = 6) -> TableModel:
    """Probabilities written by hand per prefix: {prefix: {token: prob}}; unlisted prefixes give eos."""

    def logprobs(source: tuple[int, ...], prefix: tuple[int, ...]) -> list[float]:
        probs = table.get(prefix, {EOS: 1.0})
        return [math.log(probs[t]) if probs.get(t, 0) > 0 else NEG_INF for t in range(vocab)]

    return TableModel(vocab, logprobs)


def all_hypotheses(tokens: Sequence[int], max_new: int) -> list[tuple[int, ...]]:
    """Every sequence the search may return: ending with eos within max_new tokens, or max_new tokens long."""
    out = []
    for length in range(1, max_new + 1):
        for seq in itertools.product(tokens, repeat=length):
            if EOS in seq[:-1]:
                continue
            if seq[-1] == EOS or length == max_new:
                out.append(seq)
    return out


def brute_force(
    model: TableModel, source: tuple[int, ...], *, max_new: int, length_penalty: float, top: int = 1
):
    """The `top` best (score, sequence), score = sum(log-probs) / len**length_penalty."""
    tokens = [t for t in range(model.vocab) if t not in (PAD, START)]
    scored = []
    for seq in all_hypotheses(tokens, max_new):
        total = model.sequence_logprob(source, seq)
        if total == NEG_INF:
            continue
        scored.append((total / len(seq) ** length_penalty, seq))
    scored.sort(key=lambda item: -item[0])
    return scored[:top]


def constant_model(probs: dict[int, float], vocab: int = 6) -> TableModel:
    """The same next-token distribution after every prefix."""
    logs = [math.log(probs[t]) if probs.get(t, 0) > 0 else NEG_INF for t in range(vocab)]
    return TableModel(vocab, lambda source, prefix: logs)


SOURCES = [[5, 4, 1], [4, 1]]


def batch(sources: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    width = max(map(len, sources))
    ids = torch.full((len(sources), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, src in enumerate(sources):
        ids[i, : len(src)] = torch.tensor(src)
        mask[i, : len(src)] = 1
    return ids, mask


def config(**options) -> GenerationConfig:
    return GenerationConfig(decoder_start_token_id=START, pad_token_id=PAD, eos_token_id=EOS, **options)


def run(model, sources=SOURCES, **options):
    ids, mask = batch(sources)
    return generate(model, ids, mask, generation_config=config(**options))


def generated(row: Tensor) -> list[int]:
    """Tokens after the start token, without the trailing padding (the table models never produce pad)."""
    assert int(row[0]) == START
    return [t for t in row[1:].tolist() if t != PAD]


# ---------------------------------------------------------------------------------------------- beam search
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("early_stopping", [True, "never"])
def test_wide_beam_equals_brute_force(length_penalty, early_stopping):
    model = random_table_model()
    out = run(
        model,
        num_beams=128,
        num_return_sequences=3,
        max_new_tokens=4,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        return_dict_in_generate=True,
        output_scores=True,
    )
    for i, src in enumerate(SOURCES):
        expected = brute_force(model, tuple(src), max_new=4, length_penalty=length_penalty, top=3)
        for j, (score, seq) in enumerate(expected):
            assert generated(out.sequences[i * 3 + j]) == list(seq)
            assert float(out.sequences_scores[i * 3 + j]) == pytest.approx(score, abs=1e-5)


def test_never_stops_only_when_no_running_beam_can_win():
    """With a narrow beam, "never" can only match or beat early_stopping=True (it searches at least as long)."""
    model = random_table_model(seed=3)
    kw = dict(
        num_beams=2, max_new_tokens=5, length_penalty=1.0, return_dict_in_generate=True, output_scores=True
    )
    eager = run(model, early_stopping=True, **kw).sequences_scores
    exact = run(model, early_stopping="never", **kw).sequences_scores
    assert bool((exact >= eager - 1e-6).all())


def test_scores_match_definition():
    """score = sum(log-probs) / len**length_penalty, len = generated tokens including eos."""
    model = random_table_model(seed=1)
    out = run(
        model,
        num_beams=3,
        num_return_sequences=3,
        max_new_tokens=5,
        length_penalty=1.3,
        return_dict_in_generate=True,
        output_scores=True,
    )
    for i, src in enumerate(SOURCES):
        rows = out.sequences[i * 3 : i * 3 + 3]
        scores = out.sequences_scores[i * 3 : i * 3 + 3]
        assert scores.tolist() == sorted(scores.tolist(), reverse=True)
        for row, score in zip(rows, scores):
            seq = generated(row)
            expected = model.sequence_logprob(tuple(src), seq) / len(seq) ** 1.3
            assert float(score) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("early_stopping", [True, False])
def test_one_beam_equals_greedy(early_stopping):
    model = random_table_model(seed=2)
    ids, mask = batch(SOURCES)
    cfg = config(
        max_new_tokens=5, early_stopping=early_stopping, return_dict_in_generate=True, output_scores=True
    )
    limits = resolve_max_new_tokens(cfg, mask.sum(1))
    kw = dict(config=cfg, limits=limits, start=START, pad=PAD)
    state = model.encode(ids, mask)
    beam_ids, beam_scores = beam_search(model, state, mask, **kw)
    greedy_ids, greedy_scores = sample_or_greedy(model, state, mask, **kw)
    assert torch.equal(beam_ids, greedy_ids)
    torch.testing.assert_close(beam_scores, greedy_scores)


def test_greedy_takes_the_best_token_at_each_step():
    model = random_table_model(seed=4)
    out = run(model, max_new_tokens=6)
    for i, src in enumerate(SOURCES):
        prefix: tuple[int, ...] = ()
        while len(prefix) < 6 and (not prefix or prefix[-1] != EOS):
            prefix += (int(model.logprobs(tuple(src), prefix).argmax()),)
        assert generated(out[i]) == list(prefix)


# Hand-written table: P(eos)=.4 or go on with 4; after 4: eos .45 or 5 .55; after 4 5: eos.
HAND = {(): {EOS: 0.4, 4: 0.6}, (4,): {EOS: 0.45, 5: 0.55}, (4, 5): {EOS: 1.0}}


@pytest.mark.parametrize(
    ("length_penalty", "expected", "score"),
    [
        (0.0, [EOS], math.log(0.4)),  # 0.4 > 0.33 > 0.27
        (1.0, [4, 5, EOS], math.log(0.33) / 3),  # -0.370 > -0.655 (4 eos) > -0.916 (eos)
        (-1.0, [EOS], math.log(0.4)),  # a negative penalty favours short outputs
    ],
)
def test_length_penalty_hand_case(length_penalty, expected, score):
    out = run(
        hand_table_model(HAND),
        sources=[[4]],
        num_beams=2,
        max_new_tokens=5,
        length_penalty=length_penalty,
        early_stopping="never",
        return_dict_in_generate=True,
        output_scores=True,
    )
    assert generated(out.sequences[0]) == expected
    assert float(out.sequences_scores[0]) == pytest.approx(score, abs=1e-6)


# ---------------------------------------------------------------------------------------------- processors
MIN_TABLE = {(): {EOS: 0.7, 4: 0.3}, (4,): {EOS: 0.6, 5: 0.4}, (4, 5): {EOS: 0.9, 4: 0.1}}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, [EOS]),
        ({"min_new_tokens": 2}, [4, 5, EOS]),
        ({"min_length": 3}, [4, 5, EOS]),  # the start token counts towards min_length
        ({"min_length": 2}, [4, EOS]),
        ({"min_new_tokens": 2, "num_beams": 2}, [4, 5, EOS]),
    ],
)
def test_min_length(options, expected):
    out = run(hand_table_model(MIN_TABLE), sources=[[4]], max_new_tokens=5, **options)
    assert generated(out[0]) == expected


def test_no_repeat_ngram_processor_by_hand():
    def banned(ids: list[int], size: int) -> list[int]:
        scores = torch.zeros(1, 8)
        ctx = StepContext(input_ids=torch.tensor([ids]), step=len(ids) - 1, max_new_tokens=torch.tensor([9]))
        out = lp_.no_repeat_ngram(scores, ctx, size=size)
        return torch.nonzero(out[0] == NEG_INF).flatten().tolist()

    assert banned([2, 5, 6, 5], size=2) == [6]  # 5 6 seen; the row ends with 5
    assert banned([2, 5, 6, 5], size=3) == []  # no trigram starts with 6 5
    assert banned([2, 5, 6, 5, 6], size=3) == [5]  # 5 6 5 seen; ends with 5 6
    assert banned([2, 5, 6], size=1) == [2, 5, 6]
    assert banned([2], size=3) == []  # too short to complete any trigram


CONST = {4: 0.5, 5: 0.3, EOS: 0.2}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, [4, 4, 4, 4]),
        ({"no_repeat_ngram_size": 2}, [4, 4, 5, 4]),  # (4, 4) once, then 4 5 4
        ({"no_repeat_ngram_size": 1}, [4, 5, EOS]),
        ({"no_repeat_ngram_size": 2, "num_beams": 2}, [4, 4, 5, 4]),
    ],
)
def test_no_repeat_ngram_end_to_end(options, expected):
    out = run(constant_model(CONST), sources=[[4]], max_new_tokens=4, length_penalty=0.0, **options)
    assert generated(out[0]) == expected


def test_repetition_penalty_processor_by_hand():
    scores = torch.tensor([[1.0, -1.0, 2.0, -2.0]])
    ctx = StepContext(input_ids=torch.tensor([[0, 1, 1]]), step=2, max_new_tokens=torch.tensor([9]))
    out = lp_.repetition_penalty(scores, ctx, penalty=2.0)
    assert out.tolist() == [[0.5, -2.0, 2.0, -2.0]]  # positive / p, negative * p, each token once


def test_repetition_penalty_end_to_end():
    # logits = log-probs: 4 -0.69, 5 -1.20, eos -1.61. After 4 it costs -1.39 (< 5's -1.20), after both
    # 4 and 5 are penalised: 4 -1.39 beats eos -1.61 and 5 -2.41.
    out = run(constant_model(CONST), sources=[[4]], max_new_tokens=4, repetition_penalty=2.0)
    assert generated(out[0]) == [4, 5, 4, 4]


def test_bad_words_processor_by_hand():
    scores = torch.zeros(1, 6)
    ctx = StepContext(input_ids=torch.tensor([[2, 4, 5]]), step=2, max_new_tokens=torch.tensor([9]))
    out = lp_.bad_words(scores, ctx, bad_words_ids=[[5, 4], [1], [4, 5, 3], [4, 4, 0]])
    assert torch.nonzero(out[0] == NEG_INF).flatten().tolist() == [1, 3, 4]


@pytest.mark.parametrize(
    ("bad", "expected"),
    [([[4]], [5, 5, 5, 5]), ([[4, 4]], [4, 5, 4, 5]), ([[5], [4, 4]], [4, EOS])],
)
def test_bad_words_end_to_end(bad, expected):
    out = run(constant_model(CONST), sources=[[4]], max_new_tokens=4, bad_words_ids=bad)
    assert generated(out[0]) == expected


@pytest.mark.parametrize("num_beams", [1, 2])
def test_forced_bos_and_eos(num_beams):
    out = run(
        constant_model(CONST),
        sources=[[4], [4, 1]],
        max_new_tokens=4,
        forced_bos_token_id=5,
        forced_eos_token_id=EOS,
        num_beams=num_beams,
        return_dict_in_generate=True,
        output_scores=True,
    )
    for row, score in zip(out.sequences, out.sequences_scores):
        assert generated(row) == [5, 4, 4, EOS]
        # forced tokens have log-probability 0 under the processed distribution
        assert float(score) == pytest.approx(2 * math.log(0.5) / 4, abs=1e-6)


def test_forced_eos_follows_each_source_limit():
    out = run(
        constant_model(CONST),
        sources=[[4, 1, 1, 1], [4]],
        max_length_a=1.0,
        max_length_b=0,
        forced_eos_token_id=EOS,
    )
    assert generated(out[0]) == [4, 4, 4, EOS]
    assert generated(out[1]) == [EOS]


def test_processors_by_hand_for_sampling():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    ctx = StepContext(input_ids=torch.tensor([[2]]), step=0, max_new_tokens=torch.tensor([9]))

    def kept(fn, **kw):
        return torch.isfinite(fn(probs.log().clone(), ctx, **kw))[0].tolist()

    assert kept(lp_.top_p, p=0.8) == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
    assert kept(lp_.top_p, p=0.81) == [True, True, True, False]
    assert kept(lp_.top_p, p=0.1) == [True, False, False, False]  # at least one token
    assert kept(lp_.top_k, k=2) == [True, True, False, False]
    warmed = lp_.temperature(probs.log().clone(), ctx, value=2.0).softmax(-1)
    expected = probs.sqrt() / probs.sqrt().sum()  # p ** (1 / T), renormalised
    torch.testing.assert_close(warmed, expected)


# ---------------------------------------------------------------------------------------------- lengths
def test_resolve_max_new_tokens():
    lengths = torch.tensor([4, 2])
    assert resolve_max_new_tokens(config(), lengths).tolist() == [19, 19]  # HF default max_length 20
    assert resolve_max_new_tokens(config(max_length=6), lengths).tolist() == [5, 5]
    ab = config(max_length_a=0.5, max_length_b=1)
    assert resolve_max_new_tokens(ab, lengths).tolist() == [3, 2]
    capped = config(max_length_a=0.5, max_length_b=1, max_new_tokens=2)
    assert resolve_max_new_tokens(capped, lengths).tolist() == [2, 2]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_max_length_a_b_per_source(num_beams):
    never_ends = constant_model({4: 0.6, 5: 0.4})
    out = run(
        never_ends, sources=[[4, 1, 1, 1], [4, 1]], max_length_a=0.5, max_length_b=1, num_beams=num_beams
    )
    assert out.tolist() == [[START, 4, 4, 4], [START, 4, 4, PAD]]


# ---------------------------------------------------------------------------------------------- sampling
def test_sampling_is_reproducible_with_a_seed():
    model = random_table_model(seed=5)

    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        ids, mask = batch(SOURCES)
        cfg = config(do_sample=True, top_k=0, num_return_sequences=3, max_new_tokens=6)
        return generate(model, ids, mask, generation_config=cfg, generator=g)

    first, again, other = sample(0), sample(0), sample(1)
    assert first.shape[0] == len(SOURCES) * 3
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_sampling_with_top_k_one_is_greedy():
    model = random_table_model(seed=6)
    greedy = run(model, max_new_tokens=5)
    sampled = run(model, max_new_tokens=5, do_sample=True, top_k=1)
    assert torch.equal(greedy, sampled)


def test_sampling_frequencies_follow_the_distribution():
    torch.manual_seed(0)
    out = run(
        constant_model(CONST), sources=[[4]], max_new_tokens=1, do_sample=True, num_return_sequences=2000
    )
    first = out[:, 1]
    assert float((first == 4).float().mean()) == pytest.approx(0.5, abs=0.04)
    assert float((first == EOS).float().mean()) == pytest.approx(0.2, abs=0.04)
    kept = run(
        constant_model(CONST),
        sources=[[4]],
        max_new_tokens=1,
        do_sample=True,
        top_k=2,
        num_return_sequences=2000,
    )[:, 1]
    assert not bool((kept == EOS).any())
    assert float((kept == 4).float().mean()) == pytest.approx(0.625, abs=0.04)


# ---------------------------------------------------------------------------------------------- output format
def test_output_is_padded_with_pad_and_starts_with_the_start_token():
    out = run(hand_table_model(MIN_TABLE), sources=[[4], [4, 1]], max_new_tokens=5, min_new_tokens=0)
    assert out.dtype == torch.long
    assert out.tolist() == [[START, EOS], [START, EOS]]
    mixed = run(constant_model({4: 0.5, EOS: 0.5 - 1e-3, 5: 1e-3}), sources=[[4]], max_new_tokens=3)
    assert mixed.tolist() == [[START, 4, 4, 4]]
    dict_out = run(hand_table_model(HAND), sources=[[4]], return_dict_in_generate=True)
    assert dict_out["sequences"] is dict_out.sequences and dict_out.sequences_scores is None
