"""Prepacked decoder weights: the same results as the modules, in fp32 and under bf16 autocast."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

import s2s.models.modeling as modeling
from s2s.models import TransformerConfig, TransformerForConditionalGeneration
from s2s.models.packed import PackedDecoderWeights, PackedLinear, fixed_weights, packing_available

PRECISIONS = {"fp32": contextlib.nullcontext, "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}

pytestmark = pytest.mark.skipif(
    not packing_available(torch.device("cpu")), reason="no oneDNN bf16 linear operators on this CPU/build"
)


def model(activation: str = "gelu", seed: int = 0) -> TransformerForConditionalGeneration:
    torch.manual_seed(seed)
    config = TransformerConfig(
        vocab_size=300, d_model=64, encoder_layers=1, decoder_layers=2, num_heads=4, ffn_dim=128,
        activation=activation, dropout=0.0,
    )  # fmt: skip
    return TransformerForConditionalGeneration(config).eval()


def sources(batch: int = 6, length: int = 9) -> torch.Tensor:
    return torch.randint(4, 300, (batch, length), generator=torch.Generator().manual_seed(1))


def test_packed_linear_equals_the_bf16_linear():
    g = torch.Generator().manual_seed(0)
    weight, bias, x = torch.randn(96, 64, generator=g), torch.randn(96, generator=g), torch.randn(5, 1, 64)
    expected = F.linear(x.bfloat16(), weight.bfloat16(), bias.bfloat16())
    out = PackedLinear(weight, bias, rows=5, dtype=torch.bfloat16)(x)
    assert out.dtype == torch.bfloat16 and out.shape == (5, 1, 96)
    torch.testing.assert_close(out.float(), expected.float(), atol=2e-2, rtol=1e-2)


def test_packed_linear_equals_the_fp32_linear_up_to_summation_order():
    g = torch.Generator().manual_seed(0)
    weight, bias, x = torch.randn(96, 64, generator=g), torch.randn(96, generator=g), torch.randn(5, 1, 64)
    out = PackedLinear(weight, bias, rows=5, dtype=torch.float32)(x)
    assert out.dtype == torch.float32 and out.shape == (5, 1, 96)
    torch.testing.assert_close(out, F.linear(x, weight, bias), atol=1e-5, rtol=1e-5)


def test_weights_are_packed_in_the_dtype_of_the_decode_step():
    m, ids = model(), sources()
    with torch.no_grad():
        fp32_cache = m.start_decoding(m.encode(ids), None, rows_per_source=1, max_steps=4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_cache = m.start_decoding(m.encode(ids), None, rows_per_source=2, max_steps=4)
    step_linears = {linear for layer in m.decoder.layers for linear in layer.step_linears()}
    for cache, dtype in ((fp32_cache, torch.float32), (bf16_cache, torch.bfloat16)):
        assert isinstance(cache.packed, PackedDecoderWeights)
        assert set(cache.packed._linears) == step_linears
        assert {packed.dtype for packed in cache.packed._linears.values()} == {dtype}
        assert cache.packed.project.dtype == dtype


def test_no_packing_for_other_dtypes_or_devices():
    assert not packing_available(torch.device("cpu"), torch.float16)
    assert not packing_available(torch.device("meta"), torch.float32)


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_decoding_with_packed_weights_equals_decoding_through_the_modules(
    monkeypatch, precision, activation, num_beams
):
    m, ids = model(activation), sources()
    options = dict(num_beams=num_beams, max_new_tokens=10, return_dict_in_generate=True, output_scores=True)
    with PRECISIONS[precision]():
        packed = m.generate(ids, **options)
        monkeypatch.setattr(modeling, "packing_available", lambda device, dtype: False)
        plain = m.generate(ids, **options)
    assert torch.equal(packed.sequences, plain.sequences)
    tolerance = 1e-2 if precision == "bf16" else 1e-5
    torch.testing.assert_close(
        packed.sequences_scores, plain.sequences_scores, atol=tolerance, rtol=tolerance
    )


# ------------------------------------------------------------------ packs kept across calls: fixed_weights()
def start(m: TransformerForConditionalGeneration, ids: torch.Tensor, rows_per_source: int = 1):
    with torch.no_grad():
        return m.start_decoding(m.encode(ids), None, rows_per_source=rows_per_source, max_steps=4).packed


def test_outside_a_fixed_weights_block_every_call_packs_again():
    m, ids = model(), sources()
    assert start(m, ids) is not start(m, ids)


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_inside_a_fixed_weights_block_calls_share_one_pack_and_decode_the_same(precision):
    m, ids = model(), sources()
    options = dict(num_beams=2, max_new_tokens=8, return_dict_in_generate=True, output_scores=True)
    with PRECISIONS[precision]():
        alone = m.generate(ids, **options)
        with m.fixed_weights():
            first, second = m.generate(ids, **options), m.generate(ids, **options)
            assert m._reused_packs.builds == 1
    assert m._reused_packs is None  # the block's end drops the packs
    for shared in (first, second):
        assert torch.equal(shared.sequences, alone.sequences)
        torch.testing.assert_close(shared.sequences_scores, alone.sequences_scores, atol=1e-5, rtol=1e-5)


def test_a_pack_is_kept_per_dtype_and_row_count_the_two_most_recent():
    m, ids = model(), sources()
    with m.fixed_weights():
        one_row = start(m, ids)
        two_rows = start(m, ids, rows_per_source=2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = start(m, ids)
        assert m._reused_packs.builds == 3
        assert start(m, ids, rows_per_source=2) is two_rows  # kept: used second-to-last
        assert start(m, ids) is not one_row  # the least recently used was dropped
        assert bf16.project.dtype == torch.bfloat16 and one_row.project.dtype == torch.float32


def test_weights_changed_inside_the_block_are_packed_again():
    """An optimizer step and load_state_dict change the weights in place: the next call must not decode with
    the old pack."""
    m, ids = model(seed=0), sources()
    other = model(seed=1)
    options = dict(num_beams=2, max_new_tokens=8, return_dict_in_generate=True, output_scores=True)
    with m.fixed_weights():
        before = m.generate(ids, **options)
        m.load_state_dict(other.state_dict())
        loaded = m.generate(ids, **options)
        optimizer = torch.optim.SGD(m.parameters(), lr=0.5)
        m.train()
        m(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        m.eval()
        stepped = m.generate(ids, **options)
        assert m._reused_packs.builds == 3
    assert torch.equal(loaded.sequences, other.generate(ids, **options).sequences)
    assert not torch.equal(before.sequences_scores, loaded.sequences_scores)
    outside = m.generate(ids, **options)  # the stepped weights, decoded outside any block
    assert torch.equal(stepped.sequences, outside.sequences)
    torch.testing.assert_close(stepped.sequences_scores, outside.sequences_scores, atol=1e-5, rtol=1e-5)


def test_blocks_nest_and_the_outer_one_ends_the_sharing():
    m, ids = model(), sources()
    with m.fixed_weights():
        outer = start(m, ids)
        with m.fixed_weights():
            assert start(m, ids) is outer
        assert start(m, ids) is outer
    assert m._reused_packs is None


def test_fixed_weights_of_a_model_without_packs_changes_nothing():
    plain = torch.nn.Linear(2, 2)
    with fixed_weights(plain):
        pass
    with fixed_weights(model()) as inside:
        assert inside is None
