"""The fused decode-attention kernel: the torch computation's results, used only where it applies, and a
clean fallback when it is switched off or cannot be built."""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch

from s2s.models import TransformerConfig, TransformerForConditionalGeneration, decode_kernel, layers


@pytest.fixture(scope="module")
def fused():
    built = decode_kernel.kernel()
    if built is None:
        pytest.skip("the decode-attention kernel cannot be built here (no C++ compiler or ninja)")
    return built


def reference(q, k, v, mask=None):
    """The definition, in fp64."""
    scores = torch.matmul(q.double(), k.double().transpose(-1, -2)) / q.size(-1) ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(scores.softmax(-1), v.double())


def inputs(batch, heads, queries, keys, dim, dtype, *, seed=0, spare_keys=5):
    """q, k, v as the cache hands them over: k and v are views of a longer buffer (not contiguous)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, queries, dim, generator=g).to(dtype)
    k = torch.randn(batch, heads, keys + spare_keys, dim, generator=g).to(dtype)[:, :, :keys]
    v = torch.randn(batch, heads, keys + spare_keys, dim, generator=g).to(dtype)[:, :, :keys]
    return q, k, v


# 32, 64, 128: the AVX-512 path where the CPU has it; 48: the plain loops
@pytest.mark.parametrize("dim", [32, 48, 64, 128])
@pytest.mark.parametrize("queries,keys", [(1, 1), (1, 37), (4, 4), (3, 50)])
def test_fp32_kernel_equals_the_definition(fused, dim, queries, keys):
    q, k, v = inputs(3, 2, queries, keys, dim, torch.float32)
    assert not k.is_contiguous()
    out = fused(q, k, v, None)
    assert out.dtype == torch.float32 and out.shape == (3, 2, queries, dim)
    torch.testing.assert_close(out.double(), reference(q, k, v), atol=2e-6, rtol=1e-5)


def test_masked_fp32_kernel_equals_the_definition(fused):
    q, k, v = inputs(5, 4, 3, 21, 64, torch.float32, seed=1)
    mask = torch.rand(5, 1, 3, 21, generator=torch.Generator().manual_seed(2)) > 0.6
    mask[..., 7] = True  # every row sees at least one key
    torch.testing.assert_close(fused(q, k, v, mask).double(), reference(q, k, v, mask), atol=2e-6, rtol=1e-5)
    q, k, v = (t[..., :48] for t in (q, k, v))  # the plain loops
    torch.testing.assert_close(fused(q, k, v, mask).double(), reference(q, k, v, mask), atol=2e-6, rtol=1e-5)


def test_source_padding_mask_broadcasts_over_query_positions(fused):
    q, k, v = inputs(2, 2, 4, 9, 32, torch.float32)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[1, ..., 6:] = False  # the second source has 6 real tokens
    torch.testing.assert_close(fused(q, k, v, mask).double(), reference(q, k, v, mask), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("dim", [16, 32])  # the plain loops and the AVX-512 path (where the CPU has it)
def test_a_row_with_every_key_masked_gives_nan_as_the_torch_path_does(fused, monkeypatch, dim):
    q, k, v = inputs(1, 1, 2, 3, dim, torch.float32)
    mask = torch.tensor([[True, False, True], [False, False, False]]).view(1, 1, 2, 3)
    out = fused(q, k, v, mask)
    assert torch.isnan(out[0, 0, 1]).all() and not torch.isnan(out[0, 0, 0]).any()
    monkeypatch.setenv(decode_kernel.ENV_SWITCH, "0")
    assert torch.isnan(layers.decode_attention(q, k, v, mask=mask)[0, 0, 1]).all()


@pytest.mark.parametrize("dim", [48, 64])
def test_bf16_kernel_matches_the_definition(fused, dim):
    q, k, v = inputs(4, 4, 2, 30, dim, torch.bfloat16)
    mask = torch.rand(4, 1, 2, 30, generator=torch.Generator().manual_seed(3)) > 0.5
    mask[..., 0] = True
    out = fused(q, k, v, mask)
    assert out.dtype == torch.bfloat16
    # fp32 arithmetic inside, one rounding to bf16 at the end
    torch.testing.assert_close(out.double(), reference(q, k, v, mask), atol=1e-2, rtol=1e-2)


def test_kernel_refuses_inputs_it_does_not_handle(fused):
    q, k, v = inputs(1, 1, 1, 4, 20, torch.float32)  # head size not a multiple of 16
    with pytest.raises(RuntimeError, match="multiple of 16"):
        fused(q, k, v, None)
    assert not decode_kernel.supports(q, k, v)
    q, k, v = inputs(1, 1, 1, 4, 32, torch.float16)
    assert not decode_kernel.supports(q, k, v)
    q, k, v = inputs(1, 1, 1, 4, 32, torch.float32)
    assert decode_kernel.supports(q, k, v)
    assert not decode_kernel.supports(q.requires_grad_(), k, v)


def test_decode_attention_goes_through_the_kernel_only_when_switched_on(fused, monkeypatch):
    calls = []

    def spy(*args):
        calls.append(args)
        return fused(*args)

    monkeypatch.setattr(decode_kernel, "kernel", lambda: spy if decode_kernel.enabled() else None)
    q, k, v = inputs(2, 2, 1, 6, 32, torch.float32)
    with_kernel = layers.decode_attention(q, k, v)
    assert len(calls) == 1
    monkeypatch.setenv(decode_kernel.ENV_SWITCH, "0")
    without = layers.decode_attention(q, k, v)
    assert len(calls) == 1
    torch.testing.assert_close(with_kernel, without, atol=2e-6, rtol=1e-5)


def model(seed=0):
    torch.manual_seed(seed)
    config = TransformerConfig(
        vocab_size=300, d_model=64, encoder_layers=1, decoder_layers=2, num_heads=2, ffn_dim=128, dropout=0.0
    )
    return TransformerForConditionalGeneration(config).eval()


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_with_the_kernel_equals_generation_without(fused, monkeypatch, bf16, num_beams):
    m = model()
    ids = torch.randint(4, 300, (5, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0  # a padded source: the cross-attention mask reaches the kernel
    options = dict(num_beams=num_beams, max_new_tokens=12, return_dict_in_generate=True, output_scores=True)
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with precision:
        fast = m.generate(ids, attention_mask=mask, **options)
        monkeypatch.setenv(decode_kernel.ENV_SWITCH, "0")
        plain = m.generate(ids, attention_mask=mask, **options)
    assert torch.equal(fast.sequences, plain.sequences)
    tolerance = 2e-2 if bf16 else 1e-5
    torch.testing.assert_close(fast.sequences_scores, plain.sequences_scores, atol=tolerance, rtol=tolerance)


def test_switched_off_kernel_is_never_built(monkeypatch):
    monkeypatch.setenv(decode_kernel.ENV_SWITCH, "off")
    monkeypatch.setattr(decode_kernel, "_build", lambda name: pytest.fail("built although switched off"))
    assert decode_kernel.kernel() is None


def test_a_failed_build_falls_back_to_torch_and_says_so_once(monkeypatch, caplog):
    from torch.utils import cpp_extension

    def failing_load(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpp_extension, "load", failing_load)
    monkeypatch.setattr(decode_kernel, "_loaded", {})
    with caplog.at_level(logging.WARNING, logger=decode_kernel.__name__):
        assert decode_kernel.kernel() is None
        assert decode_kernel.kernel() is None
        q, k, v = inputs(2, 2, 1, 6, 32, torch.float32)
        torch.testing.assert_close(
            layers.decode_attention(q, k, v).double(), reference(q, k, v), atol=2e-6, rtol=1e-5
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Ninja is required" in warnings[0] and "pip install ninja" in warnings[0]


def test_one_build_per_source_torch_version_and_cpu():
    name = decode_kernel.extension_name()
    assert name.startswith("s2s_decode_attention_") and name == decode_kernel.extension_name()
    assert decode_kernel.SOURCE.is_file()


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, caplog):
    """torch's builder waits forever on a lock left by a build killed hard; ours clears it when it is old."""
    import os
    import time

    lock = tmp_path / "lock"
    lock.touch()
    assert not decode_kernel.clear_stale_lock(tmp_path)  # a build in progress
    assert lock.exists()
    old = time.time() - decode_kernel.STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    with caplog.at_level(logging.WARNING, logger=decode_kernel.__name__):
        assert decode_kernel.clear_stale_lock(tmp_path)
    assert not lock.exists()
    assert "stale lock" in caplog.text
    assert not decode_kernel.clear_stale_lock(tmp_path)  # nothing left to remove


def test_builds_go_to_an_s2s_folder_under_torch_extensions_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert decode_kernel.build_directory("x") == tmp_path / "s2s" / "x"
