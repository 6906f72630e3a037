import pytest
import torch
import torch.nn.functional as F

from s2s.loss import count_target_tokens, token_cross_entropy_sum


@pytest.fixture
def logits_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)
    labels = torch.randint(0, 11, (3, 5), generator=g)
    labels[0, 3:] = -100
    labels[2, 1:] = -100
    return logits, labels


def test_sum_equals_mean_times_tokens(logits_labels):
    logits, labels = logits_labels
    mean = F.cross_entropy(logits.view(-1, 11), labels.view(-1), ignore_index=-100)
    n = count_target_tokens(labels)
    assert n == 3 + 5 + 1
    torch.testing.assert_close(token_cross_entropy_sum(logits, labels), mean * n)


def test_label_smoothing_by_hand(logits_labels):
    logits, labels = logits_labels
    eps = 0.1
    logp = logits.log_softmax(-1)
    mask = labels != -100
    nll = -logp[mask].gather(-1, labels[mask][:, None]).squeeze(-1)
    smooth = -logp[mask].mean(-1)
    expected = ((1 - eps) * nll + eps * smooth).sum()
    torch.testing.assert_close(token_cross_entropy_sum(logits, labels, label_smoothing=eps), expected)


def test_ignored_positions_contribute_nothing(logits_labels):
    logits, labels = logits_labels
    changed = logits.clone()
    changed[labels == -100] = 1e4  # garbage where there is no target
    for eps in (0.0, 0.2):
        torch.testing.assert_close(
            token_cross_entropy_sum(changed, labels, label_smoothing=eps),
            token_cross_entropy_sum(logits, labels, label_smoothing=eps),
        )


def test_bf16_logits_are_summed_in_fp32(logits_labels):
    logits, labels = logits_labels
    out = token_cross_entropy_sum(logits.bfloat16(), labels)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, token_cross_entropy_sum(logits.bfloat16().float(), labels))


def test_shape_mismatch_names_both_shapes(logits_labels):
    logits, labels = logits_labels
    with pytest.raises(ValueError, match=r"\(3, 4, 11\).*\(3, 5\)"):
        token_cross_entropy_sum(logits[:, :4], labels)


def test_count_target_tokens_without_labels():
    assert count_target_tokens(None) == 0
