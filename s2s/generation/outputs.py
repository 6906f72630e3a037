"""Output containers read like Hugging Face `ModelOutput`: `out.logits`, `out["logits"]` and `out[0]`.

`ModelOutput` lives here (generation is the lower layer; `s2s.models` imports from it, never the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch


class ModelOutput:
    """Mixin for dataclasses: attribute, key and index access over the fields that are not None.

    Integer indexing and `to_tuple()` skip None fields, as in Hugging Face, so `out[0]` is the loss when a loss
    was computed and the logits otherwise."""

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]  # type: ignore[arg-type]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in self.keys())

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{key!r} is not set in {type(self).__name__}; set fields: {self.keys()}")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclass
class GenerateOutput(ModelOutput):
    """What `generate(..., return_dict_in_generate=True)` returns.

    sequences: (batch * num_return_sequences, length) ids, starting with the decoder start token, padded with
    pad_token_id. sequences_scores: (batch * num_return_sequences,) float32, `sum(log-probs) / len**length_penalty`
    with len = generated tokens including eos (set when `output_scores=True`)."""

    sequences: torch.Tensor
    sequences_scores: torch.Tensor | None = None
