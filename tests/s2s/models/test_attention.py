"""The bf16 CPU attention path (two matmuls and a softmax) computes what `scaled_dot_product_attention` does:
same causal alignment, same padding mask semantics, same gradients, and the model picks it only in bf16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s2s.models import layers
from s2s.models.layers import attention, matmul_attention


def _qkv(t: int, s: int, *, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 2, t, 8), (3, 2, s, 8), (3, 2, s, 8)]
    return [torch.randn(shape, generator=g, requires_grad=True) for shape in shapes]


@pytest.mark.parametrize("t,s", [(5, 5), (3, 6), (6, 3)])
@pytest.mark.parametrize("kind", ["none", "causal", "padding"])
def test_matmul_attention_matches_sdpa_values_and_gradients(t: int, s: int, kind: str) -> None:
    mask = None
    if kind == "padding":
        mask = torch.ones(3, 1, 1, s, dtype=torch.bool)
        mask[0, ..., s - 2 :] = False
        mask[2, ..., 1:] = False
    causal = kind == "causal"
    q, k, v = _qkv(t, s)
    ours = matmul_attention(q, k, v, mask=mask, dropout_p=0.0, is_causal=causal)
    ours_grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    torch.testing.assert_close(ours, ref)
    for a, b in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_matmul_attention_dropout_zeroes_weights_and_rescales() -> None:
    q, k, v = _qkv(4, 4)
    v = torch.ones_like(v)  # every output is then the sum of its (dropped, rescaled) weights
    kept = matmul_attention(q, k, v, mask=None, dropout_p=0.0, is_causal=False)
    torch.testing.assert_close(kept, torch.ones_like(kept))
    torch.manual_seed(0)
    dropped = matmul_attention(q, k, v, mask=None, dropout_p=0.5, is_causal=False)
    assert torch.isfinite(dropped).all()
    assert not torch.allclose(dropped, torch.ones_like(dropped))
    assert 0.5 < dropped.mean().item() < 1.5  # kept weights are scaled by 1 / (1 - p)


def test_attention_routes_bf16_on_cpu_to_matmul_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = layers.matmul_attention

    def spy(*args, **kwargs):
        calls.append("matmul")
        return real(*args, **kwargs)

    monkeypatch.setattr(layers, "matmul_attention", spy)
    q, k, v = (x.detach() for x in _qkv(4, 4))
    attention(q, k, v, mask=None, dropout_p=0.0, is_causal=True)
    assert calls == []  # fp32 stays on SDPA
    out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask=None, dropout_p=0.0, is_causal=True)
    assert calls == ["matmul"]
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    monkeypatch.setattr(layers, "MATMUL_ATTENTION_MAX_KEYS", 3)  # longer keys keep the flash kernel
    attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask=None, dropout_p=0.0, is_causal=True)
    assert calls == ["matmul"]
