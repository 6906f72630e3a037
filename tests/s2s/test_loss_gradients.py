"""The fused, chunked cross-entropy of s2s.loss has the gradients of torch's own cross-entropy, in fp32 and
bf16, with ignored positions and label smoothing, across chunk boundaries; the model's mean loss uses it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import s2s.loss
from s2s.loss import token_cross_entropy_sum
from s2s.models import TransformerConfig, TransformerForConditionalGeneration


def _case(rows: int = 13, vocab: int = 37, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g) * 3
    labels = torch.randint(0, vocab, (rows,), generator=g)
    labels[::4] = -100
    return logits, labels


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("chunk_rows", [1, 5, 100])  # one row per chunk, a ragged last chunk, one chunk
def test_gradient_matches_torch_cross_entropy(eps: float, chunk_rows: int, monkeypatch) -> None:
    logits, labels = _case()
    monkeypatch.setattr(s2s.loss, "_CHUNK_BYTES", chunk_rows * 4 * logits.size(1))
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    ours = token_cross_entropy_sum(ours_in, labels, label_smoothing=eps)
    (ours * 2.5).backward()  # a non-unit upstream gradient, as the trainer's 1 / tokens scaling
    ref = F.cross_entropy(ref_in, labels, ignore_index=-100, reduction="sum", label_smoothing=eps)
    (ref * 2.5).backward()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_in.grad, ref_in.grad)
    assert (ours_in.grad[labels == -100] == 0).all()


def test_bf16_logits_get_a_bf16_gradient_close_to_fp32() -> None:
    logits, labels = _case()
    low = logits.bfloat16().requires_grad_()
    token_cross_entropy_sum(low, labels, label_smoothing=0.1).backward()
    assert low.grad.dtype == torch.bfloat16
    exact = logits.bfloat16().float().requires_grad_()
    F.cross_entropy(exact, labels, ignore_index=-100, reduction="sum", label_smoothing=0.1).backward()
    torch.testing.assert_close(low.grad.float(), exact.grad, atol=1e-2, rtol=1e-2)


def test_model_mean_loss_and_gradients_match_torch_cross_entropy() -> None:
    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=29, d_model=16, encoder_layers=1, decoder_layers=1, num_heads=2, ffn_dim=32, dropout=0.0
    )
    model = TransformerForConditionalGeneration(config)
    input_ids = torch.randint(4, 29, (3, 6))
    labels = torch.randint(4, 29, (3, 5))
    labels[1, 3:] = -100
    out = model(input_ids=input_ids, labels=labels)
    out.loss.backward()
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = F.cross_entropy(out.logits.detach().flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, ref)
    logits = model(input_ids=input_ids, labels=labels).logits
    F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).backward()
    for a, p in zip(ours, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_second_backward_through_the_same_loss_is_refused() -> None:
    logits, labels = _case()
    logits.requires_grad_()
    loss = token_cross_entropy_sum(logits, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()
