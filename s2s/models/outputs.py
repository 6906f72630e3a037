"""`Seq2SeqLMOutput`: what `TransformerForConditionalGeneration.forward` returns (Hugging Face field names)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from s2s.generation.outputs import ModelOutput


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    """loss: mean cross-entropy over label tokens != -100 (fp32, only with labels); logits: (B, T, V);
    encoder_last_hidden_state: (B, S, d). Access as `out.loss`, `out["logits"]` or `out[0]`."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
