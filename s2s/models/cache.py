"""Key/value cache for step-by-step decoding of `TransformerForConditionalGeneration`.

Choices, each measured on CPU (see bench/generation.py):
- Self-attention keys/values live in one buffer preallocated for `max_steps` positions: no concatenation per
  step.
- Beam reorders copy no key or value. A row's history is kept as an ancestry table (which of its source's R
  rows held its ancestor at each past position); reordering beams gathers that small integer table with
  `index_select`. At each step the R rows of a source attend to the keys of all R rows at all past positions,
  masked to their own ancestors: the same keys are read as with a physically reordered cache (each source's
  keys once per step), but the per-step copy of the whole cache (t x N x d per layer and tensor, the
  dominant memory traffic of beam search on CPU) disappears.
- Keys/values are kept in the dtype the projections give them: fp32, or bf16 under bf16 autocast. Decode-time
  attention mostly streams the cache from memory (a few query positions per row), so half the bytes is
  faster, although the CPU's small bf16 matmuls are slower than fp32 ones when their inputs sit in cache.
- Cross-attention keys/values are computed once per source and kept at batch size B: the R rows of a source
  share them (see `CrossAttention.step`); they are never expanded or reordered per beam.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from s2s.models.packed import PackedDecoderWeights


class TransformerCache:
    def __init__(
        self,
        *,
        cross_kv: list[tuple[Tensor, Tensor]],
        source_mask: Tensor | None,
        rows_per_source: int,
        max_steps: int,
        num_heads: int,
        head_dim: int,
        packed: PackedDecoderWeights | None = None,
    ) -> None:
        self.cross_kv = cross_kv
        """Per decoder layer: keys and values (B, H, S, Dh) of the encoder output; their dtype is the cache's."""
        self.source_mask = source_mask
        """bool (B, 1, 1, S), True on real source tokens; None when no source has padding."""
        batch = cross_kv[0][0].size(0) if cross_kv else 0
        device = cross_kv[0][0].device if cross_kv else torch.device("cpu")
        dtype = cross_kv[0][0].dtype if cross_kv else torch.float32
        self.batch, self.rows_per_source = batch, rows_per_source
        self.rows = batch * rows_per_source
        self.max_steps = max_steps
        self.length = 0
        """Positions already decoded (written into the buffer)."""
        # (layer, key/value, B, H, time, R, Dh): for one layer, the positions [:t] of all R rows of a source
        # form one contiguous (t * R, Dh) block per head, so they are attended as a single key sequence
        shape = (len(cross_kv), 2, batch, num_heads, max_steps, rows_per_source, head_dim)
        # uninitialised: a position is read only after every row of its source wrote it
        self._kv = torch.empty(shape, dtype=dtype, device=device)
        self._ancestors = torch.zeros(max_steps, self.rows, dtype=torch.long, device=device)
        """ancestors[s, n]: which of its source's R rows holds row n's history at position s."""
        self._local = torch.arange(self.rows, device=device) % rows_per_source
        self._mask: Tensor | None = None
        self.position_bias: Tensor | None = None
        """(1, H, 1, length + 1) relative-position bias of the position being decoded over the positions up to
        it, set by the model before each step when it uses relative positions; None otherwise."""
        self.packed = packed
        """The decoder's weights packed for decoding on CPU in fp32 or bf16 (see packed.py), or None."""

    def linear(self, module: nn.Linear, x: Tensor) -> Tensor:
        """`module(x)` for the decode step: through its packed weight when the cache holds one."""
        return module(x) if self.packed is None else self.packed.linear(module, x)

    def append_self(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Write the newest key/value (N, H, 1, Dh) at position `length`.

        Returns keys and values (B, H, (length + 1) * R, Dh) (views, no copy) and the bool mask
        (B, 1, R, (length + 1) * R) that lets each row see only its own ancestors (None when R == 1)."""
        t = self.length
        if t >= self.max_steps:
            raise RuntimeError(f"decode_step called more than max_steps={self.max_steps} times on this cache")
        b, r = self.batch, self.rows_per_source
        heads, dh = k.size(1), k.size(3)
        self._kv[layer, 0, :, :, t] = k[:, :, 0].reshape(b, r, heads, dh).transpose(1, 2)
        self._kv[layer, 1, :, :, t] = v[:, :, 0].reshape(b, r, heads, dh).transpose(1, 2)
        keys = self._kv[layer, 0, :, :, : t + 1].reshape(b, heads, (t + 1) * r, dh)
        values = self._kv[layer, 1, :, :, : t + 1].reshape(b, heads, (t + 1) * r, dh)
        if layer == 0:
            self._mask = self._ancestry_mask(t)
            if self.position_bias is not None:
                self._mask = self._biased_mask(self._mask, dtype=k.dtype)
        return keys, values, self._mask

    def _biased_mask(self, mask: Tensor | None, *, dtype: torch.dtype) -> Tensor:
        """The position bias over keys laid out as (time, row), -inf outside each row's ancestors."""
        bias = self.position_bias.repeat_interleave(self.rows_per_source, dim=-1).to(dtype)
        return bias if mask is None else bias.masked_fill(~mask, float("-inf"))

    def _ancestry_mask(self, t: int) -> Tensor | None:
        if self.rows_per_source == 1:
            return None
        b, r = self.batch, self.rows_per_source
        self._ancestors[t] = self._local  # the new position is the row's own
        ancestors = self._ancestors[: t + 1].t().reshape(b, r, t + 1, 1)
        mask = ancestors == torch.arange(r, device=ancestors.device)  # (B, R, t + 1, R)
        return mask.reshape(b, 1, r, (t + 1) * r)

    def advance(self) -> None:
        """Called once per step after every layer has appended its key/value."""
        self.length += 1

    def reorder(self, rows: Tensor) -> None:
        """Row i continues the history of row rows[i] (a row of the same source): only the ancestry table
        is gathered."""
        t = self.length
        if t and self.rows_per_source > 1:
            self._ancestors[:t] = self._ancestors[:t].index_select(1, rows)
