"""The two models of equal size (ours and Hugging Face's BART, random weights from a config) and their FLOPs.

Both use the project's special ids (pad 0, bos 2, eos 3; the decoder starts from bos), tied input/output
embeddings and no dropout difference: dropout 0.1 on both, attention/activation dropout 0.
"""

from __future__ import annotations

from typing import Any

import torch


def build_ours(size: dict[str, int], *, vocab_size: int, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """Our Transformer of `size`; `overrides` are further `TransformerConfig` fields (e.g. `activation`)."""
    from s2s.models import TransformerConfig, TransformerForConditionalGeneration

    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=vocab_size, **{"dropout": 0.1, **size, **overrides})
    return TransformerForConditionalGeneration(config)


def build_bart(
    size: dict[str, int], *, vocab_size: int, seed: int = 0, max_length: int = 128, **overrides: Any
) -> torch.nn.Module:
    """Hugging Face's BART of `size`, matched to `build_ours`; `overrides` are further `BartConfig` fields that
    replace these settings (e.g. another checkpoint's special ids, dropouts or positions)."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    settings = dict(
        vocab_size=vocab_size,
        d_model=size["d_model"],
        encoder_layers=size["encoder_layers"],
        decoder_layers=size["decoder_layers"],
        encoder_attention_heads=size["num_heads"],
        decoder_attention_heads=size["num_heads"],
        encoder_ffn_dim=size["ffn_dim"],
        decoder_ffn_dim=size["ffn_dim"],
        max_position_embeddings=256,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        decoder_start_token_id=2,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        scale_embedding=True,
    )
    model = BartForConditionalGeneration(BartConfig(**{**settings, **overrides}))
    # A config-built BART carries no generation defaults worth keeping (BART's are for summarisation). They are
    # set on the generation config, where transformers 4.x and 5.x both read them (5.x no longer takes them
    # from the model config).
    generation = model.generation_config
    for name, value in {
        "num_beams": 1,
        "max_length": max_length,
        "no_repeat_ngram_size": 0,
        "early_stopping": False,
        "length_penalty": 1.0,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
    }.items():
        setattr(generation, name, value)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _forward_macs(size: dict[str, int], *, vocab_size: int) -> tuple[int, int]:
    """Matmul multiply-adds of one forward pass: (per source token, per target token).

    Per source token: the encoder's projections (4 d^2 attention + 2 d ffn per layer) and the decoder's
    cross-attention keys/values (2 d^2 per decoder layer); per target token: the decoder's self-attention
    (4 d^2), cross-attention queries/output (2 d^2), feed-forward (2 d ffn) and the output projection (d V).
    Attention scores (~4 d L per token and layer) are left out: at these lengths (L <= 80) they are a few
    percent of the total.
    """
    d, ffn = size["d_model"], size["ffn_dim"]
    per_source = size["encoder_layers"] * (4 * d * d + 2 * d * ffn) + size["decoder_layers"] * 2 * d * d
    per_target = size["decoder_layers"] * (6 * d * d + 2 * d * ffn) + d * vocab_size
    return per_source, per_target


def training_flops(size: dict[str, int], *, vocab_size: int, source_tokens: int, target_tokens: int) -> float:
    """Matmul FLOPs of one forward + backward pass (3x the forward) over the given real tokens.

    Each multiply-add is 2 FLOPs (see `_forward_macs` for what is counted). Padding is not counted: MFU
    measures useful work.
    """
    per_source, per_target = _forward_macs(size, vocab_size=vocab_size)
    return 3 * 2 * (per_source * source_tokens + per_target * target_tokens)


def decoding_flops(
    size: dict[str, int], *, vocab_size: int, source_tokens: int, generated_tokens: int
) -> float:
    """Matmul FLOPs of generation: the forward pass of each source token once (encoder, cross-attention
    keys/values) and of each generated token once per hypothesis that carries it (decoder layers + output
    projection); `generated_tokens` = sequences x beams x new tokens.

    This is the least work any engine must do: an engine that recomputes cross-attention keys/values per
    beam (Hugging Face expands the encoder output before the decoder's first step) or re-runs finished
    rows does more and is not credited for it. Each multiply-add is 2 FLOPs; attention scores are left out.
    """
    per_source, per_target = _forward_macs(size, vocab_size=vocab_size)
    return 2 * (per_source * source_tokens + per_target * generated_tokens)


def describe(size: dict[str, int], *, vocab_size: int) -> dict[str, Any]:
    return {**size, "vocab_size": vocab_size}
