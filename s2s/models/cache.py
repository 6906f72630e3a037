"""Key/value cache for step-by-step decoding of `TransformerForConditionalGeneration`.

Self-attention keys/values are written into buffers preallocated for `max_steps` positions (no concatenation per
step), in the dtype the projections produce (bf16 under bf16 autocast). Cross-attention keys/values are computed
once per source and kept at batch size B: the R rows of a source share them (see `CrossAttention.step`), so
reordering beams never touches them.
"""

from __future__ import annotations

from torch import Tensor


class TransformerCache:
    def __init__(
        self,
        *,
        cross_kv: list[tuple[Tensor, Tensor]],
        source_mask: Tensor | None,
        rows: int,
        max_steps: int,
    ) -> None:
        self.cross_kv = cross_kv
        """Per decoder layer: keys and values (B, H, S, Dh) of the encoder output."""
        self.source_mask = source_mask
        """bool (B, 1, 1, S), True on real source tokens; None when no source has padding."""
        self.rows = rows
        self.max_steps = max_steps
        self.length = 0
        """Positions already decoded (written into the buffers)."""
        self._keys: list[Tensor | None] = [None] * len(cross_kv)
        self._values: list[Tensor | None] = [None] * len(cross_kv)

    def append_self(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write the newest key/value (N, H, 1, Dh) at position `length`; return views over all positions
        so far, (N, H, length + 1, Dh)."""
        t = self.length
        if t >= self.max_steps:
            raise RuntimeError(f"decode_step called more than max_steps={self.max_steps} times on this cache")
        keys, values = self._keys[layer], self._values[layer]
        if keys is None or keys.dtype != k.dtype:
            n, h, _, dh = k.shape
            keys = k.new_zeros(n, h, self.max_steps, dh)
            values = v.new_zeros(n, h, self.max_steps, dh)
            if t:  # dtype changed mid-decoding (autocast toggled): keep the history
                keys[:, :, :t] = self._keys[layer][:, :, :t]  # type: ignore[index]
                values[:, :, :t] = self._values[layer][:, :, :t]  # type: ignore[index]
            self._keys[layer], self._values[layer] = keys, values
        keys[:, :, t] = k[:, :, 0]
        values[:, :, t] = v[:, :, 0]  # type: ignore[index]
        return keys[:, :, : t + 1], values[:, :, : t + 1]  # type: ignore[index]

    def advance(self) -> None:
        """Called once per step after every layer has appended its key/value."""
        self.length += 1

    def reorder(self, rows: Tensor) -> None:
        """Row i continues the history of row rows[i]. Only the filled positions are copied."""
        t = self.length
        for layer, (keys, values) in enumerate(zip(self._keys, self._values)):
            if keys is None or values is None:
                continue
            keys[:, :, :t] = keys[:, :, :t].index_select(0, rows)
            values[:, :, :t] = values[:, :, :t].index_select(0, rows)
            self._keys[layer], self._values[layer] = keys, values
