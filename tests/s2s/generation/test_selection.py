"""The chunked argmax / top-k equal torch.argmax / torch.topk, including ties, -inf, NaN and ragged tails."""

from __future__ import annotations

import pytest
import torch

from s2s.generation import selection
from s2s.generation.selection import CHUNK

# widths: chunked with no tail, chunked with a tail, and too short to chunk (the plain kernel)
WIDTHS = [CHUNK * 40, CHUNK * 40 + 17, CHUNK * 2 + 5]


def random_rows(width: int, rows: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("width", WIDTHS)
def test_argmax_equals_torch_argmax(width):
    scores = random_rows(width)
    # the maximum in the tail, in the first and last chunk
    scores[0, -1] = 10.0
    scores[1, 0] = 10.0
    scores[2, (width // CHUNK) * CHUNK - 1] = 10.0
    assert torch.equal(selection.argmax(scores), scores.argmax(dim=-1))


@pytest.mark.parametrize("width", WIDTHS)
def test_argmax_returns_the_first_of_tied_maxima_and_the_first_nan(width):
    scores = random_rows(width, seed=1)
    scores[0, [5, CHUNK + 3, width - 1]] = 7.0  # ties across chunks and the tail: the first wins
    scores[1, [CHUNK * 2 + 1, CHUNK * 2 + 2]] = 7.0  # ties within one chunk
    scores[2, :] = float("-inf")
    scores[2, width - 2] = 0.0
    scores[3, [9, width - 1]] = float("nan")  # NaN is the maximum, the first one is returned
    scores[4, width - 1] = float("nan")
    scores[5, :] = float("-inf")  # all -inf: index 0, as torch
    assert torch.equal(selection.argmax(scores), scores.argmax(dim=-1))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("k", [1, 4, 8])
def test_topk_equals_torch_topk(width, k):
    scores = random_rows(width, seed=k)
    scores[0, -k:] = 50.0 + torch.arange(k, dtype=torch.float32)  # all k in the tail / last chunk
    scores[1, :: CHUNK + 1] = 20.0 + torch.arange(len(range(0, width, CHUNK + 1)), dtype=torch.float32)
    values, index = selection.topk(scores, k)
    expected_values, expected_index = scores.topk(k, dim=-1)
    assert torch.equal(values, expected_values)
    assert torch.equal(index, expected_index)


def test_topk_with_ties_gives_torch_values_and_indices_holding_them():
    scores = random_rows(CHUNK * 40 + 3, seed=5)
    scores[0, [3, 200, 900, CHUNK * 40 + 1]] = 9.0  # four-way tie, top 3 asked
    scores[1, :] = float("-inf")
    scores[1, 100] = 1.0  # one finite entry, the rest of the top 3 are -inf
    scores[2, [10, 700]] = float("nan")
    values, index = selection.topk(scores, 3)
    expected, _ = scores.topk(3, dim=-1)
    torch.testing.assert_close(values, expected, equal_nan=True)
    assert torch.equal(scores.gather(1, index), values) or torch.isnan(values).any()
    assert index[0].tolist() == sorted(set(index[0].tolist()), key=index[0].tolist().index)  # distinct
    assert set(index[0].tolist()) <= {3, 200, 900, CHUNK * 40 + 1}
    assert index[1, 0] == 100
    assert set(index[2, :2].tolist()) == {10, 700}


def test_non_contiguous_rows_fall_back_to_torch():
    scores = random_rows(CHUNK * 40).t().contiguous().t()  # stride(-1) != 1
    assert torch.equal(selection.argmax(scores), scores.argmax(dim=-1))
    assert torch.equal(selection.topk(scores, 2)[1], scores.topk(2, dim=-1)[1])


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_with_a_wide_vocabulary_equals_generation_with_the_torch_kernels(monkeypatch, num_beams):
    from s2s.models import TransformerConfig, TransformerForConditionalGeneration

    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=CHUNK * 47 + 9, d_model=32, encoder_layers=1, decoder_layers=2, num_heads=4, ffn_dim=64
    )
    model = TransformerForConditionalGeneration(config).eval()
    ids = torch.randint(4, config.vocab_size, (5, 9), generator=torch.Generator().manual_seed(1))
    options = dict(num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=12)
    options.update(return_dict_in_generate=True, output_scores=True)
    chunked = model.generate(ids, **options)
    monkeypatch.setattr(selection, "_split", lambda scores, min_chunks: None)  # torch.argmax / torch.topk
    plain = model.generate(ids, **options)
    assert torch.equal(chunked.sequences, plain.sequences)
    assert torch.equal(chunked.sequences_scores, plain.sequences_scores)
