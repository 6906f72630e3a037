"""The TransformerConfig options that pretrained families need, on our own model: cached decoding equals full
passes, beam search equals brute force on a tiny vocabulary, and each option does what it says."""

from __future__ import annotations

import itertools

import pytest
import torch

from s2s.generation import GenerationConfig, generate
from s2s.models import TransformerConfig, TransformerForConditionalGeneration, decode_kernel
from tests.s2s.models.family_options import BART_OPTIONS, T5_OPTIONS
from tests.s2s.models.test_model import UncachedModel

OPTION_SETS = {
    "t5": dict(
        T5_OPTIONS,
        relative_attention_num_buckets=6,
        relative_attention_max_distance=9,
        scale_decoder_output=True,
    ),
    "bart": BART_OPTIONS,
    "marian": dict(
        pre_norm=False, position_embedding="sinusoidal_marian", activation="silu", final_logits_bias=True
    ),
    "m2m_100": dict(positions_from_padding=True, activation="gated-relu"),
}
PAD, START, EOS = 0, 2, 3


def model_with(name: str, vocab: int = 24, seed: int = 0) -> TransformerForConditionalGeneration:
    options = dict(
        vocab_size=vocab,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        num_heads=2,
        ffn_dim=40,
        dropout=0.0,
        max_position_embeddings=32,
    )
    torch.manual_seed(seed)
    model = TransformerForConditionalGeneration(TransformerConfig(**{**options, **OPTION_SETS[name]})).eval()
    with torch.no_grad():
        for tensor_name, tensor in model.state_dict().items():
            if "norm" in tensor_name or "logits_bias" in tensor_name or "relative" in tensor_name:
                tensor.add_(torch.randn_like(tensor) * 0.5)
    return model


def sources(vocab: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(4, vocab, (3, 7), generator=torch.Generator().manual_seed(1))
    ids[0, 5:] = PAD
    ids[2, 6:] = PAD
    return ids, (ids != PAD).long()


@pytest.mark.parametrize("name", OPTION_SETS)
def test_cached_beam_search_equals_uncached(name):
    model = model_with(name)
    ids, mask = sources()
    options = dict(
        num_beams=3,
        num_return_sequences=3,
        max_new_tokens=5,
        return_dict_in_generate=True,
        output_scores=True,
    )
    with torch.no_grad():
        cached = model.generate(ids, mask, **options)
        config = model.generation_config.copy()
        config.update(**options)
        reference = generate(UncachedModel(model), ids, mask, generation_config=config)
    assert torch.equal(cached.sequences, reference.sequences)
    torch.testing.assert_close(cached.sequences_scores, reference.sequences_scores, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["t5", "m2m_100"])
def test_cached_decoding_under_bf16_autocast_follows_the_full_pass(name):
    model = model_with(name)
    ids, mask = sources()
    dec = torch.tensor([[START, 5, 6, 7, 8]] * 3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(ids, mask, decoder_input_ids=dec).logits.float()
        cache = model.start_decoding(model.encode(ids, mask), mask, rows_per_source=1, max_steps=5)
        steps = torch.stack([model.decode_step(dec[:, t], cache).float() for t in range(5)], dim=1)
    torch.testing.assert_close(steps, full, atol=0.1, rtol=0.05)


def brute_force_best(
    model, source: torch.Tensor, *, max_new: int, tokens: list[int]
) -> tuple[float, list[int]]:
    """Score every sequence the search may return (ending in eos, or max_new long) with full passes, one batch
    per length."""
    best = (float("-inf"), [])
    for length in range(1, max_new + 1):
        seqs = [
            seq
            for seq in itertools.product(tokens, repeat=length)
            if EOS not in seq[:-1] and (seq[-1] == EOS or length == max_new)
        ]
        dec = torch.tensor([[START, *seq] for seq in seqs])
        with torch.no_grad():
            logits = model(source.expand(len(seqs), -1), decoder_input_ids=dec[:, :-1]).logits
        totals = logits.log_softmax(-1).gather(2, dec[:, 1:, None]).sum(dim=(1, 2)) / length
        i = int(totals.argmax())
        best = max(best, (totals[i].item(), list(seqs[i])))
    return best


@pytest.mark.parametrize("name", OPTION_SETS)
def test_wide_beam_search_equals_brute_force_on_a_tiny_vocabulary(name):
    vocab = 6
    model = model_with(name, vocab=vocab, seed=3)
    source = torch.tensor([4, 5, 4, 1])
    tokens = [t for t in range(vocab) if t not in (PAD, START)]
    config = GenerationConfig(
        num_beams=16,
        max_new_tokens=3,
        early_stopping="never",
        bad_words_ids=[[PAD], [START]],
        decoder_start_token_id=START,
        eos_token_id=EOS,
        pad_token_id=PAD,
        return_dict_in_generate=True,
        output_scores=True,
    )
    with torch.no_grad():
        out = model.generate(source[None], None, generation_config=config)
    score, best = brute_force_best(model, source, max_new=3, tokens=tokens)
    found = [t for t in out.sequences[0, 1:].tolist() if t != PAD]
    assert found == best
    assert out.sequences_scores[0].item() == pytest.approx(score, abs=1e-5)


def test_positions_from_padding_make_left_padding_invisible():
    model = model_with("m2m_100")
    ids = torch.tensor([[5, 6, 7, 8]])
    left = torch.tensor([[PAD, PAD, 5, 6, 7, 8]])
    with torch.no_grad():
        plain = model.encode(ids).memory
        padded = model.encode(left, (left != PAD).long()).memory
    torch.testing.assert_close(padded[:, 2:], plain, atol=1e-6, rtol=1e-5)


def test_decoder_start_from_labels_moves_the_last_label_to_the_front():
    model = TransformerForConditionalGeneration(
        TransformerConfig(vocab_size=24, d_model=16, num_heads=2, decoder_start_from_labels=True)
    )
    labels = torch.tensor([[7, 8, EOS, 20], [9, EOS, 21, -100]])
    assert model.prepare_decoder_input_ids_from_labels(labels).tolist() == [[20, 7, 8, EOS], [21, 9, EOS, 21]]


def test_layerdrop_skips_layers_in_training_only():
    config = TransformerConfig(
        vocab_size=24, d_model=16, num_heads=2, dropout=0.0, encoder_layerdrop=0.99, decoder_layerdrop=0.99
    )
    model = TransformerForConditionalGeneration(config)
    ids = torch.tensor([[5, 6, 7]])
    embedded_only = model.encoder.final_norm(model.encoder.embed(model.embed_tokens(ids)))
    torch.manual_seed(0)
    model.train()
    torch.testing.assert_close(model.encode(ids).memory, embedded_only)  # every layer skipped (p = 0.99)
    model.eval()
    assert not torch.allclose(model.encode(ids).memory, embedded_only)


def test_the_decode_kernel_declines_biases_and_other_scales():
    q = torch.randn(2, 2, 1, 16)
    k = v = torch.randn(2, 2, 5, 16)
    assert decode_kernel.supports(q, k, v, torch.ones(2, 1, 1, 5, dtype=torch.bool))
    assert not decode_kernel.supports(q, k, v, torch.zeros(2, 2, 1, 5))
    assert not decode_kernel.supports(q, k, v, None, 1.0)


def test_options_default_to_the_toolkit_model_and_old_configs_load(tmp_path):
    old = {"model_type": "s2s-transformer", "vocab_size": 24, "d_model": 16, "num_heads": 2}
    config = TransformerConfig.from_dict(old)
    assert (config.normalization, config.bias, config.position_offset, config.final_logits_bias) == (
        "layernorm",
        True,
        0,
        False,
    )
    with pytest.raises(ValueError, match="position_offset applies to learned positions only"):
        TransformerConfig(vocab_size=24, d_model=16, num_heads=2, position_offset=2)
    with pytest.raises(ValueError, match="activation must be one of"):
        TransformerConfig(vocab_size=24, d_model=16, num_heads=2, activation="gated-tanh")


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_the_options_train_and_gradient_checkpointing_gives_the_same_gradients(name):
    model = model_with(name)
    ids, mask = sources()
    labels = torch.randint(4, 24, (3, 5), generator=torch.Generator().manual_seed(2))
    model.train()
    loss = model(ids, mask, labels=labels).loss
    loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert any("relative_bias" in n or "positions.learned" in n for n in plain)  # positions are trained
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(ids, mask, labels=labels).loss.backward()
    for n, p in model.named_parameters():
        if n in plain:
            torch.testing.assert_close(p.grad, plain[n], atol=1e-6, rtol=1e-5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(8):
        optimizer.zero_grad()
        step_loss = model(ids, mask, labels=labels).loss
        step_loss.backward()
        optimizer.step()
    assert step_loss.item() < loss.item() - 0.1  # falls (slowly for T5: its 0.02 embeddings make tiny logits)
