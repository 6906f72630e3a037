"""Decoding under CUDA's rules gives the same results: no host read per step (see s2s.generation.stopping),
so the loops may run a step or two past the end and merge finished hypotheses without first checking that
any finished. Run here on CPU by making `reads_stall` say yes, as it does on CUDA."""

from __future__ import annotations

import pytest
import torch

from s2s.generation import stopping
from s2s.models import TransformerConfig, TransformerForConditionalGeneration
from tests.s2s.generation.test_generation import SOURCES, random_table_model, run

CASES = {
    "greedy": dict(num_beams=1, max_new_tokens=5),
    "greedy scores": dict(num_beams=1, max_new_tokens=5, output_scores=True, length_penalty=0.5),
    "beams": dict(num_beams=4, max_new_tokens=5, num_return_sequences=2),
    "beams never": dict(num_beams=3, max_new_tokens=4, early_stopping="never", length_penalty=1.5),
    "beams wide": dict(num_beams=16, max_new_tokens=4, num_return_sequences=3),
    "min length, forced eos": dict(num_beams=2, max_new_tokens=5, min_new_tokens=2, forced_eos_token_id=3),
    "bad words, no repeat": dict(
        num_beams=3, max_new_tokens=6, bad_words_ids=[[4, 5], [1]], no_repeat_ngram_size=2
    ),
    "per-source limits": dict(num_beams=2, max_length_a=1.0, max_length_b=1),
}


def _both_ways(monkeypatch, decode):
    now = decode()
    with monkeypatch.context() as patch:
        patch.setattr(stopping, "reads_stall", lambda device: True)
        later = decode()
    return now, later


def _assert_same(now, later):
    assert torch.equal(now.sequences, later.sequences)
    if now.sequences_scores is not None:
        torch.testing.assert_close(now.sequences_scores, later.sequences_scores)


@pytest.mark.parametrize("case", list(CASES))
def test_table_model_decodes_the_same_without_host_reads(monkeypatch, case):
    model = random_table_model(seed=3)
    options = {"return_dict_in_generate": True, "output_scores": True, **CASES[case]}
    _assert_same(*_both_ways(monkeypatch, lambda: run(model, SOURCES, **options)))


@pytest.mark.parametrize("num_beams", [1, 4])
def test_transformer_decodes_the_same_without_host_reads(monkeypatch, num_beams):
    monkeypatch.setenv("S2S_DECODE_KERNEL", "0")
    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=30, d_model=32, encoder_layers=1, decoder_layers=2, num_heads=2, ffn_dim=64, dropout=0.0
    )
    model = TransformerForConditionalGeneration(config).eval()
    ids = torch.randint(4, 30, (5, 7))
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0

    def decode():
        return model.generate(
            ids, mask, num_beams=num_beams, max_new_tokens=9, return_dict_in_generate=True, output_scores=True
        )

    _assert_same(*_both_ways(monkeypatch, decode))


def test_all_finished_is_read_a_step_late_under_cuda_rules(monkeypatch):
    monkeypatch.setattr(stopping, "reads_stall", lambda device: True)
    flag = stopping.AllFinished(torch.device("cpu"))
    assert flag.deferred
    assert not flag.update(torch.tensor([True, False]))
    assert not flag.update(torch.tensor([True, True]))  # posted now, read at the next update
    assert flag.update(torch.tensor([True, True]))
    monkeypatch.undo()
    assert not stopping.AllFinished(torch.device("cpu")).deferred  # CPU reads at once
