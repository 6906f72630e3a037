"""The model's CPU dropout: the asked drop rate, unbiased scaling, gradient through the same mask,
reproducible under torch.manual_seed, and a no-op in eval mode or with p = 0."""

from __future__ import annotations

import pytest
import torch

from s2s.models.layers import Dropout, cpu_dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_and_scale(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(200_000)
    out = cpu_dropout(x, p)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - p) < 0.005
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - round(p * 65536) / 65536)))
    assert abs(out.mean().item() - 1.0) < 0.01  # unbiased


def test_gradient_uses_the_forward_mask_and_dtype_is_kept() -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 7, 16, dtype=torch.bfloat16, requires_grad=True)
    out = cpu_dropout(x, 0.3)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    out.sum().backward()
    scale = out.detach().float() / x.detach().float()
    torch.testing.assert_close(x.grad.float(), scale, atol=1e-2, rtol=1e-2)


def test_seeded_masks_repeat_and_differ_between_draws() -> None:
    x = torch.ones(3, 5, 9)
    torch.manual_seed(7)
    first, second = cpu_dropout(x, 0.2), cpu_dropout(x, 0.2)
    torch.manual_seed(7)
    assert torch.equal(cpu_dropout(x, 0.2), first)
    assert not torch.equal(first, second)


def test_module_is_identity_in_eval_and_at_zero() -> None:
    x = torch.randn(2, 3, 4)
    module = Dropout(0.5).eval()
    assert module(x) is x
    assert Dropout(0.0).train()(x) is x
    assert Dropout(1.0).train()(x).abs().sum() == 0
    assert isinstance(module, torch.nn.Dropout)
