"""Tiny random-weight Hugging Face models of every supported family, and batches for them (tests only)."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 60
FAMILIES = ("bart", "bart_untied", "mbart", "marian", "m2m_100", "t5", "t5_v1_1")
_BART_SIZES = dict(
    vocab_size=VOCAB,
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,  # head size 16: the fused decode kernel's path is taken when it is built
    decoder_attention_heads=2,
    encoder_ffn_dim=48,
    decoder_ffn_dim=48,
    max_position_embeddings=64,
    dropout=0.0,
)
_T5_SIZES = dict(
    vocab_size=VOCAB,
    d_model=32,
    d_kv=16,
    d_ff=48,
    num_layers=2,
    num_decoder_layers=2,
    num_heads=3,  # 3 heads of 16: heads * head size != d_model, as in T5 v1.1
    dropout_rate=0.0,
    decoder_start_token_id=0,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=20,
)


def hf_config(family: str):
    import transformers

    if family == "bart":
        return transformers.BartConfig(**_BART_SIZES, scale_embedding=True)
    if family == "bart_untied":  # a separate output layer: transformers then keeps three embedding tables
        return transformers.BartConfig(**_BART_SIZES, tie_word_embeddings=False)
    if family == "mbart":
        return transformers.MBartConfig(**_BART_SIZES, decoder_start_token_id=2)
    if family == "marian":
        return transformers.MarianConfig(
            **_BART_SIZES,
            pad_token_id=VOCAB - 1,
            decoder_start_token_id=VOCAB - 1,
            eos_token_id=0,
            activation_function="swish",
            scale_embedding=True,
            share_encoder_decoder_embeddings=False,
        )
    if family == "m2m_100":
        return transformers.M2M100Config(**_BART_SIZES, encoder_layerdrop=0.1, decoder_layerdrop=0.1)
    if family == "t5":
        return transformers.T5Config(**_T5_SIZES)
    if family == "t5_v1_1":
        return transformers.T5Config(**_T5_SIZES, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    raise ValueError(family)


def hf_model(family: str, seed: int = 0):
    """A random HF model whose every trained tensor (norms and biases included) is away from its init."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.AutoModelForSeq2SeqLM.from_config(hf_config(family)).eval()
    if family == "mbart":
        model.generation_config.forced_bos_token_id = 7  # the target-language tag of mBART-50
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            # Marian's sinusoidal table is a frozen parameter: kept exact. T5 draws its projections at their
            # trained scale already; larger ones (its attention scores are not scaled) make even transformers'
            # own fp32 logits differ from fp64 by 1e-3, so only its norms move.
            if parameter.requires_grad and (not family.startswith("t5") or "layer_norm" in name):
                parameter.add_(torch.randn_like(parameter) * 0.3)
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.normal_(std=0.3)
    return model


def saved_hf_model(family: str, folder: Path, seed: int = 0):
    model = hf_model(family, seed)
    model.save_pretrained(folder)
    return model


def padded_batch(pad: int, *, left: bool = False, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three sources of lengths 7, 5 and 6, padded on the right (or the left) with `pad`."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB - 1, (3, 7), generator=g)
    ids[ids == pad] = 4
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 6:] = 0
    if left:
        mask = mask.flip(1)
    return ids.masked_fill(mask == 0, pad), mask


def labels_batch(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(3, VOCAB - 1, (3, 5), generator=g)
    labels[2, 3:] = -100
    return labels
