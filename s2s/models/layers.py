"""Transformer building blocks: attention through `scaled_dot_product_attention`, feed-forward, positions, layers.

Every attention block has two paths: `forward` over whole sequences (training, scoring) and `step` for one new
decoder position with a key/value cache (generation). Shapes: B batch, T target length, S source length,
H heads, Dh head size, d model size; N = B * R decoder rows while generating (R rows per source).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s.models import decode_kernel
from s2s.models.cache import TransformerCache
from s2s.models.configuration import TransformerConfig


def sinusoidal_table(num_positions: int, dim: int) -> Tensor:
    """(num_positions, dim) fixed positions as in "Attention is all you need" (sin half, cos half)."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = torch.arange(num_positions, dtype=torch.float32)[:, None] * freq[None, :]
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    return table


def marian_sinusoidal_table(num_positions: int, dim: int) -> Tensor:
    """(num_positions, dim) fixed positions with the frequencies of "Attention is all you need"
    (10000**(-2i / dim)) in Marian's layout: sines of all frequencies first, then cosines (computed in float64,
    as Marian's own table, before rounding to fp32)."""
    half = (dim + 1) // 2
    exponent = 2 * torch.arange(half, dtype=torch.float64) / dim
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] / torch.pow(10000.0, exponent)[None, :]
    return torch.cat([angles.sin(), angles.cos()[:, : dim // 2]], dim=1).float()


def relative_position_bucket(
    relative: Tensor, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> Tensor:
    """T5's bucket of each key-minus-query distance: exact buckets for small distances, logarithmically wider
    ones up to `max_distance`, then the last bucket. Bidirectional (encoder) halves the buckets between
    the two directions; otherwise (decoder) only past keys (negative distances) are told apart."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = -torch.clamp(relative, max=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    large = (
        max_exact
        + (
            torch.log(distance.float() / max_exact)
            / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).long()
    )
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


def make_norm(config: TransformerConfig) -> nn.Module:
    """The configured normalisation over d_model (see `TransformerConfig.normalization`)."""
    if config.normalization == "rmsnorm":
        return nn.RMSNorm(config.d_model, eps=config.layer_norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)


def decode_attention(
    q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """Decode-time attention of a few query positions per row over the cached keys, in the cache's dtype.

    Under bf16 autocast the cache is bf16: at these sizes decode attention mostly streams the cached keys and
    values from memory, and half the bytes made 4-beam decoding 4-9% faster end to end (bench/generation.py).
    On CPU with a mask (the beam ancestry) or in bf16: two batched matmuls and a softmax in fp32; the CPU
    `scaled_dot_product_attention` kernel measured 3-5x slower with the mask and 2-3x slower in bf16 at one or
    a few query positions. Unmasked fp32 keeps that kernel, on par with the matmuls there.

    On CPU all of this gives way to the fused kernel of `decode_kernel.py` when it is built: the same
    computation in one pass over the cache, and 12-27% faster decoding end to end. Other devices (CUDA) always
    take `scaled_dot_product_attention`, mask or not: its fused kernels (flash, memory-efficient) read the
    cache once and keep the softmax statistics in fp32, and none of the CPU measurements apply there.

    `mask` is bool (True where allowed) or an additive float bias; `scale` replaces 1/sqrt(head size)."""
    with torch.autocast(q.device.type, enabled=False):
        q = q.to(k.dtype)
        if scale is not None and (mask is None or mask.dtype == torch.bool):
            # the kernel's fixed 1/sqrt(Dh) folded into the queries: T5's unscaled cross-attention takes it too
            q, scale = q * (scale * q.size(-1) ** 0.5), None
        if q.device.type != "cpu":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        fused = decode_kernel.kernel() if decode_kernel.supports(q, k, v, mask, scale) else None
        if fused is not None:
            return fused(q, k, v, mask)
        if mask is None and k.dtype == torch.float32:
            return F.scaled_dot_product_attention(q, k, v, scale=scale)
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.size(-1) ** -0.5 if scale is None else scale)
        scores = _apply_mask(scores, mask)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        return torch.matmul(weights, v)


# Key lengths up to this use `matmul_attention` for bf16 on CPU. Measured on an AVX512-BF16 CPU without AMX, one
# thread, forward + backward, 4 heads of 64: B=96 L=22 causal 43 ms (SDPA flash) vs 13 ms; L=128 30 vs 15;
# L=256 44 vs 30; L=512 and beyond on par, where the flash kernel's O(L) memory is worth keeping.
MATMUL_ATTENTION_MAX_KEYS = 256


def _apply_mask(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Scores with a bool mask (-inf where False) or an additive float mask applied."""
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return scores.masked_fill_(~mask, float("-inf"))
    return scores.add_(mask.to(scores.dtype))


def matmul_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None,
    dropout_p: float,
    is_causal: bool,
    scale: float | None = None,
) -> Tensor:
    """`scaled_dot_product_attention` as two matmuls and a softmax (same semantics: `mask` True where
    allowed, `is_causal` aligned top-left). The CPU flash kernel is 2.5-5x slower than this in bf16 on short
    sequences, mostly in its backward; SDPA's own math backend upcasts to fp32 and is still 2x slower."""
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.size(-1) ** -0.5 if scale is None else scale)
    if is_causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    scores = _apply_mask(scores, mask)
    weights = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        weights = cpu_dropout(weights, dropout_p)  # only used on CPU
    return torch.matmul(weights, v)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None,
    dropout_p: float,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Whole-sequence attention (training, scoring, encoding): q (B, H, T, Dh), k and v (B, H, S, Dh); `mask`
    bool (True where allowed) or an additive float bias; `scale` replaces 1/sqrt(Dh)."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and k.size(-2) <= MATMUL_ATTENTION_MAX_KEYS:
        return matmul_attention(q, k, v, mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )


def cpu_dropout(x: Tensor, p: float) -> Tensor:
    """Dropout with its mask drawn as 16-bit random integers, four per 64-bit draw of the generator.

    `F.dropout` on CPU draws one Bernoulli per element from the generator: 7-8 ms fwd+bwd for a (64, 32, 256)
    bf16 activation on one thread, against about 2 ms here. The drop probability is rounded to a multiple of
    1/65536 (0.1 -> 0.100006) and the kept values are scaled by 1 / (1 - that), so the expectation is exact.
    Uses the default CPU generator, so `torch.manual_seed` and checkpoint recomputation replay the same mask."""
    threshold = round(p * 65536)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    bits = words.view(torch.int16)[: x.numel()].view(x.shape)
    keep = (bits >= threshold - 32768).to(x.dtype).mul_(65536 / (65536 - threshold))
    return x * keep


class Dropout(nn.Dropout):
    """`nn.Dropout` with the faster mask of `cpu_dropout` on CPU; the framework's kernel elsewhere and under
    `torch.compile`, which fuses that kernel into its graph (it cannot trace `cpu_dropout`'s in-place draw)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p >= 1.0 or torch.compiler.is_compiling():
            return F.dropout(x, self.p, training=True, inplace=self.inplace)
        return cpu_dropout(x, self.p)


class PositionEmbedding(nn.Module):
    """Sinusoidal (a non-persistent buffer, never saved) or learned absolute positions.

    Row `offset + p` holds position p (`position_offset`). With `positions_from_padding` the rows are indexed by
    token ids instead (see `by_token_ids`); the table then starts with pad_token_id + 1 rows, the padding row
    zero."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.max_positions = config.max_position_embeddings
        self.from_padding = config.positions_from_padding
        self.pad = config.pad_token_id
        self.offset = config.pad_token_id + 1 if self.from_padding else config.position_offset
        rows = config.max_position_embeddings + self.offset
        self.learned: nn.Embedding | None = None
        if config.position_embedding == "learned":
            self.learned = nn.Embedding(rows, config.d_model)
        else:
            make = (
                marian_sinusoidal_table
                if config.position_embedding == "sinusoidal_marian"
                else sinusoidal_table
            )
            table = make(rows, config.d_model)
            if self.from_padding:
                table[self.pad] = 0.0
            self.register_buffer("table", table, persistent=False)

    @property
    def weight(self) -> Tensor:
        return self.learned.weight if self.learned is not None else self.table

    def check_length(self, end: int) -> None:
        if end > self.max_positions:
            raise ValueError(
                f"sequence of {end} positions exceeds max_position_embeddings="
                f"{self.max_positions}; truncate the inputs (or lower max_new_tokens) or build the model with a "
                "larger max_position_embeddings"
            )

    def forward(self, start: int, length: int) -> Tensor:
        """(length, d) embeddings of positions start .. start + length - 1."""
        self.check_length(start + length)
        return self.weight[self.offset + start : self.offset + start + length]

    def by_token_ids(self, token_ids: Tensor, start: int = 0) -> Tensor:
        """(B, T, d) embeddings of the positions of `token_ids` (B, T), which follow position `start`: each
        real token is numbered by the real tokens up to it (plus `start`, the positions already decoded), a
        padding token takes the zero row."""
        self.check_length(start + token_ids.size(1))
        real = token_ids.ne(self.pad).long()
        ids = (torch.cumsum(real, dim=1) + start) * real + self.pad
        return F.embedding(ids, self.weight)


class RelativePositionBias(nn.Module):
    """T5's learned bias per head on each attention score, looked up by the bucketed key-minus-query distance;
    one table per stack, used by all its self-attention layers."""

    def __init__(self, config: TransformerConfig, *, bidirectional: bool) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        self.embedding = nn.Embedding(self.num_buckets, config.num_heads)

    def forward(self, query_length: int, key_length: int, query_start: int = 0) -> Tensor:
        """(1, H, query_length, key_length) biases; queries at positions query_start, query_start + 1, ..."""
        device = self.embedding.weight.device
        queries = torch.arange(query_start, query_start + query_length, device=device)[:, None]
        keys = torch.arange(key_length, device=device)[None, :]
        buckets = relative_position_bucket(
            keys - queries,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


_ACTIVATION_FUNCTIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda h: F.gelu(h, approximate="tanh"),
    "silu": F.silu,
}


class FeedForward(nn.Module):
    """Two projections around an activation; a gated activation (swiglu, gated-*) doubles the first projection
    into a gate half (activated) and a value half, multiplied together."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.activation = config.activation
        self.gated = config.gated_ffn
        name = "silu" if config.activation == "swiglu" else config.activation.removeprefix("gated-")
        self._function = _ACTIVATION_FUNCTIONS[name]
        inner = config.ffn_dim * (2 if self.gated else 1)
        self.fc1 = nn.Linear(config.d_model, inner, bias=config.bias)
        self.fc2 = nn.Linear(config.ffn_dim, config.d_model, bias=config.bias)
        self.dropout = Dropout(config.activation_dropout)

    def _activate(self, h: Tensor) -> Tensor:
        if self.gated:
            gate, value = h.chunk(2, dim=-1)
            return self._function(gate) * value
        return self._function(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self._activate(self.fc1(x))))

    def step(self, x: Tensor, cache: TransformerCache) -> Tensor:
        """`forward` at decode time (no dropout), through the cache's packed weights when it has them."""
        return cache.linear(self.fc2, self._activate(cache.linear(self.fc1, x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        inner = config.attention_dim
        self.qkv = nn.Linear(config.d_model, 3 * inner, bias=config.bias)
        self.out = nn.Linear(inner, config.d_model, bias=config.bias)
        self.dropout_p = config.attention_dropout
        self.scale = None if config.scale_attention_scores else 1.0

    def _split(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = qkv.shape
        q, k, v = qkv.view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v  # each (B, H, T, Dh)

    def _merge(self, o: Tensor) -> Tensor:
        b, _, t, _ = o.shape
        return self.out(o.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))

    def forward(self, x: Tensor, *, mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """x: (B, T, d); mask: bool (B, 1, T|1, T), True where attention is allowed, or a float bias
        (B|1, H|1, T, T) added to the scores (relative positions, -inf where not allowed)."""
        q, k, v = self._split(self.qkv(x))
        p = self.dropout_p if self.training else 0.0
        o = attention(q, k, v, mask=mask, dropout_p=p, is_causal=is_causal, scale=self.scale)
        return self._merge(o)

    def step(self, x: Tensor, cache: TransformerCache, layer: int) -> Tensor:
        """x: (N, 1, d), the newest position. The R rows of a source are R query positions over the keys of
        all their past positions, masked to each row's own ancestors (see cache.py)."""
        n = x.size(0)
        q, k, v = self._split(cache.linear(self.qkv, x))  # (N, H, 1, Dh)
        keys, values, mask = cache.append_self(layer, k, v)
        b = keys.size(0)
        q = q[:, :, 0].reshape(b, n // b, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, R, Dh)
        o = decode_attention(q, keys, values, mask=mask, scale=self.scale)
        return cache.linear(self.out, o.transpose(1, 2).reshape(n, 1, self.num_heads * self.head_dim))


class CrossAttention(nn.Module):
    """Decoder-to-encoder attention; keys and values of the encoder output are projected once per source."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        inner = config.attention_dim
        self.q = nn.Linear(config.d_model, inner, bias=config.bias)
        self.kv = nn.Linear(config.d_model, 2 * inner, bias=config.bias)
        self.out = nn.Linear(inner, config.d_model, bias=config.bias)
        self.dropout_p = config.attention_dropout
        self.scale = None if config.scale_attention_scores else 1.0

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """memory (B, S, d) -> keys, values (B, H, S, Dh)."""
        b, s, _ = memory.shape
        k, v = self.kv(memory).view(b, s, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: Tensor, memory: Tensor, *, mask: Tensor | None) -> Tensor:
        """x: (B, T, d); memory: (B, S, d); mask: bool (B, 1, 1, S) or None."""
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.memory_kv(memory)
        p = self.dropout_p if self.training else 0.0
        o = attention(q, k, v, mask=mask, dropout_p=p, scale=self.scale)
        return self.out(o.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))

    def step(self, x: Tensor, cache: TransformerCache, layer: int) -> Tensor:
        """x: (N, 1, d) with N = B * R. The R rows of a source attend to the same memory, so they are treated
        as R query positions of that source: keys/values stay (B, H, S, Dh), never copied per beam."""
        n = x.size(0)
        k, v = cache.cross_kv[layer]
        b = k.size(0)
        q = cache.linear(self.q, x).view(b, n // b, self.num_heads, self.head_dim)
        q = q.transpose(1, 2)  # (B, H, R, Dh)
        o = decode_attention(q, k, v, mask=cache.source_mask, scale=self.scale)
        return cache.linear(self.out, o.transpose(1, 2).reshape(n, 1, self.num_heads * self.head_dim))


class EncoderLayer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.pre_norm = config.pre_norm
        self.self_attn = SelfAttention(config)
        self.ffn = FeedForward(config)
        self.norm1 = make_norm(config)
        self.norm2 = make_norm(config)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if self.pre_norm:
            x = x + self.dropout(self.self_attn(self.norm1(x), mask=mask))
            return x + self.dropout(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.dropout(self.self_attn(x, mask=mask)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class DecoderLayer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.pre_norm = config.pre_norm
        self.self_attn = SelfAttention(config)
        self.cross_attn = CrossAttention(config)
        self.ffn = FeedForward(config)
        self.norm1 = make_norm(config)
        self.norm2 = make_norm(config)
        self.norm3 = make_norm(config)
        self.dropout = Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        source_mask: Tensor | None,
        self_mask: Tensor | None,
    ) -> Tensor:
        causal = self_mask is None  # the mask, when given, already contains the causal part
        if self.pre_norm:
            x = x + self.dropout(self.self_attn(self.norm1(x), mask=self_mask, is_causal=causal))
            x = x + self.dropout(self.cross_attn(self.norm2(x), memory, mask=source_mask))
            return x + self.dropout(self.ffn(self.norm3(x)))
        x = self.norm1(x + self.dropout(self.self_attn(x, mask=self_mask, is_causal=causal)))
        x = self.norm2(x + self.dropout(self.cross_attn(x, memory, mask=source_mask)))
        return self.norm3(x + self.dropout(self.ffn(x)))

    def step_linears(self) -> list[nn.Linear]:
        """The linear layers `step` calls (the cross-attention keys/values are projected before decoding)."""
        return [
            self.self_attn.qkv,
            self.self_attn.out,
            self.cross_attn.q,
            self.cross_attn.out,
            self.ffn.fc1,
            self.ffn.fc2,
        ]

    def step(self, x: Tensor, cache: TransformerCache, layer: int) -> Tensor:
        """One new position (N, 1, d). Inference only: no residual dropout."""
        if self.pre_norm:
            x = x + self.self_attn.step(self.norm1(x), cache, layer)
            x = x + self.cross_attn.step(self.norm2(x), cache, layer)
            return x + self.ffn.step(self.norm3(x), cache)
        x = self.norm1(x + self.self_attn.step(x, cache, layer))
        x = self.norm2(x + self.cross_attn.step(x, cache, layer))
        return self.norm3(x + self.ffn.step(x, cache))
