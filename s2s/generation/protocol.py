"""The small decoding protocol the engine needs from a model (duck typed; any class that has these works).

    state = model.encode(input_ids, attention_mask)             # once per batch of sources
    cache = model.start_decoding(state, attention_mask, rows_per_source=R, max_steps=T)
    logits = model.decode_step(tokens, cache)                    # tokens (B * R,) -> logits (B * R, V)
    cache.reorder(rows)                                          # rows (B * R,) LongTensor

Rows are grouped by source: row r decodes source `r // R` (R = beams, or returned samples). `decode_step` feeds
the last token of every row (the decoder start token at the first call), advances the cache by one position and
returns the logits of the next token. `reorder(rows)` makes row i continue the history of row `rows[i]`; the
engine only ever maps a row to a row of the same source, so per-source state (e.g. cross-attention keys and
values) never needs reordering and can stay at batch size B instead of being copied per beam.
`max_steps` bounds the number of `decode_step` calls (a cache may preallocate for it).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class DecodingCache(Protocol):
    def reorder(self, rows: Tensor) -> None:
        """Row i continues the history of row rows[i] (rows of the same source only)."""


@runtime_checkable
class GenerationModel(Protocol):
    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Any:
        """Encoder state for a batch of sources (opaque to the engine)."""

    def start_decoding(
        self, encoder_state: Any, attention_mask: Tensor, *, rows_per_source: int, max_steps: int
    ) -> DecodingCache:
        """A fresh cache for B * rows_per_source decoder rows."""

    def decode_step(self, tokens: Tensor, cache: Any) -> Tensor:
        """tokens (rows,) -> next-token logits (rows, V); advances the cache by one position."""
