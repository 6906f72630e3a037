"""The two models of the GPU check: ours and Hugging Face's BART, the same size, random weights.

BART is built from its config alone (no download), with the project's special ids (pad 0, bos 2, eos 3, the
decoder starting from bos). Generation settings that would change the work are set on its generation config,
where transformers 4.x and 5.x both read them (5.x no longer takes them from the model config).
"""

from __future__ import annotations

import torch

from bench.models import build_bart, build_ours


def build(side: str, size: dict[str, int], *, vocab_size: int) -> torch.nn.Module:
    """gelu on both sides (BART's activation), dropout 0.1, tied embeddings."""
    if side == "ours":
        return build_ours(size, vocab_size=vocab_size, activation="gelu")
    if side == "theirs":
        return build_bart(size, vocab_size=vocab_size, max_length=256)
    raise ValueError(f"side must be 'ours' or 'theirs', got {side!r}")
