"""How a fresh Transformer draws its weights (`init_style`), and that the default learns where to attend quickly.

The regression guarded here: with every projection drawn from N(0, 0.02), a d_model-64 model's attention starts
nearly uniform and stays so for hundreds of updates. On the shifted-digits task (bench/init_ab.py) the `tiny`
preset so initialised is still at loss ln(10) = 2.30 after 200 updates and scores BLEU 0.5-0.9 after 600, where
the xavier default is at 0.12 and scores 99.9-100 (two seeds each, bench/README.md).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench.init_ab import shifted_digits_task, toy_config, train_and_score
from s2s.models import TransformerConfig, TransformerForConditionalGeneration


def build(seed: int = 0, **overrides) -> TransformerForConditionalGeneration:
    torch.manual_seed(seed)
    options = dict(vocab_size=50, d_model=64, encoder_layers=1, decoder_layers=1, num_heads=4, ffn_dim=96)
    return TransformerForConditionalGeneration(TransformerConfig(**{**options, **overrides}))


def uniform_bound(fan_in: int, fan_out: int) -> float:
    return math.sqrt(6.0 / (fan_in + fan_out))


def test_default_tiny_preset_learns_the_shifted_digits_task_within_600_updates():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared cores: one thread is several times faster than oversubscribing
    try:
        train, test = shifted_digits_task(seed=0)
        torch.manual_seed(0)
        model = TransformerForConditionalGeneration(toy_config("tiny"))
        result = train_and_score(model, train, test, steps=600, checkpoints=(200,))
    finally:
        torch.set_num_threads(threads)
    assert model.config.init_style == "xavier"
    # the old initialisation is still at ln(10) = 2.30 here: no position has been learned yet
    assert result.losses[200] < 1.0, result
    assert result.bleu >= 95, result


def test_xavier_draws_each_fused_block_as_its_own_matrix():
    d, ffn = 64, 96
    model = build(activation="swiglu", tie_word_embeddings=False, share_embeddings=False)
    layer = model.decoder.layers[0]
    for linear, blocks, fan_in, fan_out in [
        (layer.self_attn.qkv, 3, d, d),
        (layer.cross_attn.kv, 2, d, d),
        (layer.cross_attn.q, 1, d, d),
        (layer.self_attn.out, 1, d, d),
        (layer.ffn.fc1, 2, d, ffn),
        (layer.ffn.fc2, 1, ffn, d),
    ]:
        bound = uniform_bound(fan_in, fan_out)
        weight = linear.weight.detach()
        assert weight.shape == (blocks * fan_out, fan_in)
        assert weight.abs().max() <= bound
        # uniform on [-b, b] has std b / sqrt(3); a fused matrix drawn as one would be up to 1.6x narrower
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert not linear.bias.any()
    assert model.lm_head.weight.std().item() == pytest.approx(d**-0.5, rel=0.05)
    for table in (model.embed_tokens, model.decoder_embed_tokens):
        assert table.weight.std().item() == pytest.approx(d**-0.5, rel=0.05)
        assert not table.weight[0].any()  # the padding row
    assert torch.equal(layer.norm1.weight, torch.ones(d)) and not layer.norm1.bias.any()


def test_normal_style_draws_every_projection_from_init_std():
    model = build(init_style="normal", init_std=0.05, tie_word_embeddings=False)
    projections = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(projections) == 1 + 4 + 7  # output, encoder (qkv, out, fc1, fc2), decoder (+ q, kv, out)
    for linear in projections:
        assert linear.weight.std().item() == pytest.approx(0.05, rel=0.1)
        if linear.bias is not None:
            assert not linear.bias.any()
    assert model.embed_tokens.weight.std().item() == pytest.approx(64**-0.5, rel=0.05)
    unscaled = build(init_style="normal", init_std=0.05, scale_embedding=False)
    assert unscaled.embed_tokens.weight.std().item() == pytest.approx(0.05, rel=0.05)


def test_init_style_changes_fresh_weights_only(tmp_path):
    """A checkpoint whose config.json predates `init_style` loads its own weights, whatever the default."""
    saved = build(seed=1, init_style="normal")
    saved.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    old_config = json.loads(config_file.read_text())
    del old_config["init_style"]
    config_file.write_text(json.dumps(old_config))
    loaded = TransformerForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.init_style == "xavier"
    for (name, a), b in zip(saved.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("init_style", "kaiming", "init_style must be 'xavier' or 'normal'"), ("init_std", 0.0, "positive")],
)
def test_bad_init_options_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**{field: value})
