"""The two models of the GPU check: ours and Hugging Face's BART, the same size, random weights.

BART is built from its config alone (no download), with the project's special ids (pad 0, bos 2, eos 3, the
decoder starting from bos). Generation settings that would change the work are set on its generation config,
where transformers 4.x and 5.x both read them (5.x no longer takes them from the model config).
"""

from __future__ import annotations

import torch

from bench.models import build_ours


def build_bart(size: dict[str, int], *, vocab_size: int, seed: int = 0) -> torch.nn.Module:
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    config = BartConfig(
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
        scale_embedding=True,
    )
    model = BartForConditionalGeneration(config)
    generation = model.generation_config
    for name, value in {
        "num_beams": 1,
        "max_length": 256,
        "no_repeat_ngram_size": 0,
        "early_stopping": False,
        "length_penalty": 1.0,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
    }.items():
        setattr(generation, name, value)
    return model


def build(side: str, size: dict[str, int], *, vocab_size: int) -> torch.nn.Module:
    """gelu on both sides (BART's activation), dropout 0.1, tied embeddings."""
    if side == "ours":
        return build_ours(size, vocab_size=vocab_size, activation="gelu")
    if side == "theirs":
        return build_bart(size, vocab_size=vocab_size)
    raise ValueError(f"side must be 'ours' or 'theirs', got {side!r}")
