"""The generation benchmark's pieces: the decoding FLOP count, the CTranslate2 conversion, one-sided runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.common import PROFILES
from bench.generation import decode_torch, make_sources, run
from bench.models import build_bart, build_ours, decoding_flops

SIZE = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 2, "num_heads": 2, "ffn_dim": 64}
VOCAB = 300


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_decoding_flops_by_hand():
    size = {"d_model": 2, "encoder_layers": 1, "decoder_layers": 1, "num_heads": 1, "ffn_dim": 4}
    # a source token: encoder 4*4 + 2*2*4 = 32 MACs, cross-attention keys/values 2*4 = 8 -> 40 MACs
    assert decoding_flops(size, vocab_size=10, source_tokens=1, generated_tokens=0) == 2 * 40
    # a generated token: decoder layer 6*4 + 2*2*4 = 40, output projection 2*10 = 20 -> 60 MACs; forward only
    assert decoding_flops(size, vocab_size=10, source_tokens=0, generated_tokens=3) == 2 * 60 * 3


def test_decoding_flops_agree_with_torch_flop_counter_over_our_greedy_generate(monkeypatch):
    """Our engine computes each source once and each new token's forward once: torch's count of the
    matmuls of a whole `generate` call matches the hand count, up to the attention scores it leaves out."""
    from torch.utils.flop_counter import FlopCounterMode

    import s2s.models.modeling

    # the counter does not know the oneDNN operators of packed weights (s2s/models/packed.py), which do the
    # same matmuls: decode through the modules
    monkeypatch.setattr(s2s.models.modeling, "packing_available", lambda device, dtype: False)
    model = build_ours(SIZE, vocab_size=VOCAB, activation="gelu").eval()
    sources = make_sources(4, 6, vocab_size=VOCAB)
    with FlopCounterMode(display=False) as counter:
        produced = decode_torch(model, sources, batch_size=4, num_beams=1, new_tokens=5, bf16=False)
    assert produced == 4
    expected = decoding_flops(SIZE, vocab_size=VOCAB, source_tokens=24, generated_tokens=4 * 5)
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_ctranslate2_decodes_the_converted_bart_like_hugging_face(tmp_path, num_beams):
    """The converted model and the synthetic vocabulary are right: CTranslate2 fp32 finds the very tokens
    Hugging Face's generate finds, per source (weights perturbed so outputs depend on the source)."""
    pytest.importorskip("ctranslate2")
    pytest.importorskip("transformers")
    from bench.ct2_reference import CT2Generator, convert_bart

    bart = build_bart(SIZE, vocab_size=VOCAB).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in bart.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    sources = make_sources(5, 7, vocab_size=VOCAB, seed=3)
    with torch.no_grad():
        expected = bart.generate(
            input_ids=sources,
            attention_mask=torch.ones_like(sources),
            num_beams=num_beams,
            max_new_tokens=6,
            min_new_tokens=6,
            do_sample=False,
            early_stopping=num_beams > 1,
        )[:, 1:]  # without the decoder start token
    engine = CT2Generator(
        convert_bart(bart, tmp_path / "ct2"), vocab_size=VOCAB, compute_type="float32", threads=1
    )
    got = engine.generate(sources, num_beams=num_beams, new_tokens=6)
    assert got == expected.tolist()
    assert len({tuple(row) for row in got}) > 1  # not one degenerate output for every source


def test_unsupported_compute_types_are_reported_not_run():
    pytest.importorskip("ctranslate2")
    from bench.ct2_reference import usable_compute_types

    usable, skipped = usable_compute_types(("float32", "float99"))
    assert usable == ["float32"] and set(skipped) == {"float99"}
    assert "not supported" in skipped["float99"]


def test_run_with_our_side_only_measures_ours_and_says_why_ctranslate2_is_missing():
    profile = dataclasses.replace(
        PROFILES["smoke"], model=SIZE, vocab_size=VOCAB, generation_beams=(2,), generation_sources=4
    )
    peak = {"fp32": {"gflops": 10.0}, "bf16": {"gflops": 20.0}}
    result = run(profile, None, {"ours": object()}, peak=peak, log_fn=lambda _: None)
    row = result["rows"]["fp32 2 beams"]
    assert row["ours"] > 0 and row["theirs"] is None and row["ratio"] is None
    assert row["mfu_ours"] > 0
    assert result["ctranslate2"]["rows"] == {}
    assert "no BART to convert" in result["ctranslate2"]["skipped"]["all"]
