"""`TransformerForConditionalGeneration`: an encoder-decoder Transformer with a Hugging Face style surface
(forward -> loss/logits, generate, save_pretrained/from_pretrained) and the engine's decoding protocol
(encode / start_decoding / decode_step, see `s2s.generation.protocol`)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from s2s.generation.configuration import CONFIG_NAME as GENERATION_CONFIG_NAME
from s2s.generation.configuration import GenerationConfig
from s2s.generation.outputs import GenerateOutput
from s2s.generation.search import generate as run_generation
from s2s.generation.stopping import reads_stall
from s2s.loss import IGNORE_INDEX, token_cross_entropy_sum
from s2s.models.cache import TransformerCache
from s2s.models.configuration import TransformerConfig
from s2s.models.initialization import initialise_weights
from s2s.models.layers import (
    DecoderLayer,
    Dropout,
    EncoderLayer,
    PositionEmbedding,
    RelativePositionBias,
    make_norm,
)
from s2s.models.outputs import Seq2SeqLMOutput
from s2s.models.packed import PackedDecoderWeights, ReusedPacks, packing_available
from s2s.models.serialization import load_weights, save_weights


@dataclass
class EncoderState:
    """What `encode` returns: the encoder output and the source padding mask used for cross-attention."""

    memory: Tensor
    source_mask: Tensor | None


def _may_read(tensor: Tensor) -> bool:
    """Whether reading ``tensor`` on the host is free: not on CUDA (a device sync), not while compiling."""
    return not reads_stall(tensor.device) and not torch.compiler.is_compiling()


def source_padding_mask(attention_mask: Tensor | None) -> Tensor | None:
    """(B, S) 0/1 -> bool (B, 1, 1, S), or None when nothing is padded (lets SDPA take its fastest path).

    On CUDA and under `torch.compile` the mask is always built: finding out that nothing is padded would read
    the device on the host (a sync per forward pass on CUDA, a graph break when compiling), and a batch of
    real data nearly always holds padding anyway.
    A source with no real token would make every attention weight -inf (NaN); its first position is kept."""
    if attention_mask is None:
        return None
    mask = attention_mask.bool()
    if _may_read(mask) and bool(mask.all()):
        return None
    mask = mask.clone()
    mask[:, 0] |= ~mask.any(dim=1)
    return mask[:, None, None, :]


def decoder_self_mask(decoder_attention_mask: Tensor | None, length: int) -> Tensor | None:
    """Causal mask combined with target padding, or None (causal only, via `is_causal=True`); on CUDA and
    under `torch.compile` built whenever a padding mask is given (see `source_padding_mask`)."""
    if decoder_attention_mask is None:
        return None
    if _may_read(decoder_attention_mask) and bool(decoder_attention_mask.bool().all()):
        return None
    device = decoder_attention_mask.device
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    mask = causal[None, None] & decoder_attention_mask.bool()[:, None, None, :]
    return mask | torch.eye(length, dtype=torch.bool, device=device)  # a pad query still attends to itself


class _Stack(nn.Module):
    """Positions + layers (+ final LayerNorm with pre-norm), shared by encoder and decoder."""

    def __init__(self, config: TransformerConfig, layers: list[nn.Module], *, causal: bool) -> None:
        super().__init__()
        relative = config.position_embedding == "relative"
        self.positions = None if relative else PositionEmbedding(config)
        self.relative_bias = RelativePositionBias(config, bidirectional=not causal) if relative else None
        self.positions_from_padding = config.positions_from_padding
        self.layernorm_embedding = make_norm(config) if config.layernorm_embedding else None
        self.layers = nn.ModuleList(layers)
        self.final_norm = make_norm(config) if config.pre_norm else None
        self.dropout = Dropout(config.dropout)
        self.dropout_after_final_norm = config.dropout_after_final_norm
        self.layerdrop = config.decoder_layerdrop if causal else config.encoder_layerdrop
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.gradient_checkpointing = False

    def embed(self, token_embeddings: Tensor, start: int = 0, token_ids: Tensor | None = None) -> Tensor:
        """Token embeddings (B, T, d) of the positions start, start + 1, ... -> the first layer's input.
        `token_ids` (B, T) are needed when positions are numbered from the padding."""
        x = token_embeddings * self.embed_scale
        if self.positions is not None:
            if self.positions_from_padding:
                if token_ids is None:
                    raise ValueError("positions_from_padding needs the token ids to number positions")
                positions = self.positions.by_token_ids(token_ids, start)
            else:
                positions = self.positions(start, token_embeddings.size(1))
            x = x + positions.to(x.dtype)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        return self.dropout(x)

    def attention_bias(self, mask: Tensor | None, length: int, *, causal: bool) -> Tensor | None:
        """With relative positions: the float bias (B|1, H, T, T) of the self-attention of all layers, -inf
        where `mask` (bool, True where allowed) or causality forbids; otherwise `mask` itself."""
        if self.relative_bias is None:
            return mask
        bias = self.relative_bias(length, length)
        if causal and mask is None:
            mask = torch.ones(length, length, dtype=torch.bool, device=bias.device).tril()
        return bias if mask is None else bias.masked_fill(~mask, float("-inf"))

    def run_layers(self, x: Tensor, *args: Any) -> Tensor:
        for layer in self.layers:
            if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
                continue  # LayerDrop: the layer is skipped in this pass (an identity)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                # recompute activations in backward; the RNG state is replayed so dropout masks match
                x = checkpoint(layer, x, *args, use_reentrant=False)
            else:
                x = layer(x, *args)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.dropout(x) if self.dropout_after_final_norm else x


class TransformerForConditionalGeneration(nn.Module):
    """Encoder-decoder Transformer for sequence-to-sequence learning.

    Embeddings: one table for source and target with `share_embeddings`; the output projection reuses the
    decoder table with `tie_word_embeddings`. Each matrix is one parameter (no aliases in the state dict)."""

    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        d, vocab = config.d_model, config.vocab_size
        pad = config.pad_token_id if config.freeze_padding_embedding else None
        self.embed_tokens = nn.Embedding(vocab, d, padding_idx=pad)
        self.decoder_embed_tokens = (
            None if config.share_embeddings else nn.Embedding(vocab, d, padding_idx=pad)
        )
        self.encoder = _Stack(
            config, [EncoderLayer(config) for _ in range(config.encoder_layers)], causal=False
        )
        self.decoder = _Stack(
            config, [DecoderLayer(config) for _ in range(config.decoder_layers)], causal=True
        )
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(d, vocab, bias=False)
        if config.final_logits_bias:
            # a buffer, as in the checkpoints it comes from: saved and loaded, never trained
            self.register_buffer("final_logits_bias", torch.zeros(1, vocab))
        else:
            self.final_logits_bias = None
        self.output_scale = d**-0.5 if config.scale_decoder_output else None
        self._reused_packs: ReusedPacks | None = None  # set inside fixed_weights()
        self.generation_config = GenerationConfig(
            decoder_start_token_id=config.decoder_start_token_id,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        )
        initialise_weights(self, config)

    # ------------------------------------------------------------------ embeddings
    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def get_decoder_embeddings(self) -> nn.Embedding:
        return self.decoder_embed_tokens if self.decoder_embed_tokens is not None else self.embed_tokens

    def look_up(self, table: nn.Embedding, token_ids: Tensor) -> Tensor:
        """Rows of an embedding table. When the table is also the output projection, its gradient is dense
        anyway (every logit feeds it), so the lookups hand back sparse row gradients that autograd adds in
        place into that dense one. A dense lookup gradient would be a fresh vocabulary x d_model tensor per
        use, zero-filled and added whole: at BART-base size (32k x 768, fp32) 98 MB each, two per step with
        shared tables. Only on CPU, where it was measured, and never while compiling (inductor has no sparse
        tensors)."""
        sparse = (
            table.weight is self.output_weight()
            and table.weight.device.type == "cpu"
            and table.weight.requires_grad
            and torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
        )
        return F.embedding(token_ids, table.weight, table.padding_idx, sparse=sparse)

    def output_weight(self) -> Tensor:
        return self.lm_head.weight if self.lm_head is not None else self.get_decoder_embeddings().weight

    def project(self, hidden: Tensor, packed: PackedDecoderWeights | None = None) -> Tensor:
        """Hidden states (..., d) -> logits (..., V), through the packed output weight when given."""
        if self.output_scale is not None:
            hidden = hidden * self.output_scale
        logits = F.linear(hidden, self.output_weight()) if packed is None else packed.project(hidden)
        if self.final_logits_bias is not None:
            logits = logits + self.final_logits_bias.to(logits.dtype)
        return logits

    # ------------------------------------------------------------------ training / scoring
    def prepare_decoder_input_ids_from_labels(self, labels: Tensor) -> Tensor:
        """Shift labels right behind the decoder start token; -100 becomes pad."""
        pad = self.config.pad_token_id
        shifted = labels.new_full(labels.shape, pad)
        shifted[:, 0] = self.config.decoder_start_token_id
        shifted[:, 1:] = labels[:, :-1]
        if self.config.decoder_start_from_labels:
            filled = labels.masked_fill(labels == -100, pad)
            last = ((filled != pad).sum(dim=1) - 1) % labels.size(1)
            shifted[:, 0] = filled.gather(1, last[:, None]).squeeze(1)
        return shifted.masked_fill(shifted == -100, pad)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        decoder_input_ids: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        return_dict: bool = True,
    ) -> Seq2SeqLMOutput | tuple[Tensor, ...]:
        """Teacher-forced pass. `decoder_input_ids` default to the labels shifted right."""
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError(
                    "forward needs decoder_input_ids or labels (to build decoder_input_ids from)"
                )
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        state = self.encode(input_ids, attention_mask)
        x = self.decoder.embed(
            self.look_up(self.get_decoder_embeddings(), decoder_input_ids), token_ids=decoder_input_ids
        )
        length = decoder_input_ids.size(1)
        self_mask = decoder_self_mask(decoder_attention_mask, length)
        self_mask = self.decoder.attention_bias(self_mask, length, causal=True)
        hidden = self.decoder.run_layers(x, state.memory, state.source_mask, self_mask)
        logits = self.project(hidden)
        loss = None
        if labels is not None:
            # mean over target tokens, fp32 statistics even under autocast (see s2s.loss); NaN without targets,
            # as F.cross_entropy; no .item(): the count stays on the device
            loss = token_cross_entropy_sum(logits, labels) / (labels != IGNORE_INDEX).sum()
        out = Seq2SeqLMOutput(loss=loss, logits=logits, encoder_last_hidden_state=state.memory)
        return out if return_dict else out.to_tuple()

    # ------------------------------------------------------------------ decoding protocol
    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> EncoderState:
        mask = source_padding_mask(attention_mask)
        x = self.encoder.embed(self.look_up(self.embed_tokens, input_ids), token_ids=input_ids)
        self_mask = self.encoder.attention_bias(mask, input_ids.size(1), causal=False)
        return EncoderState(memory=self.encoder.run_layers(x, self_mask), source_mask=mask)

    def start_decoding(
        self,
        encoder_state: EncoderState,
        attention_mask: Tensor | None,
        *,
        rows_per_source: int,
        max_steps: int,
    ) -> TransformerCache:
        if self.decoder.positions is not None and max_steps > self.config.max_position_embeddings:
            raise ValueError(
                f"cannot decode {max_steps} steps with max_position_embeddings="
                f"{self.config.max_position_embeddings}; lower max_new_tokens / max_length"
            )
        memory = encoder_state.memory
        cross_kv = []
        for layer in self.decoder.layers:
            k, v = layer.cross_attn.memory_kv(memory)  # bf16 under bf16 autocast, see cache.py
            cross_kv.append((k.contiguous(), v.contiguous()))
        packed = None
        # the cache's dtype is the decode step's: fp32, or bf16 under bf16 autocast
        dtype = cross_kv[0][0].dtype if cross_kv else None
        if dtype is not None and packing_available(memory.device, dtype):
            packed = self._packed_decoder(rows=memory.size(0) * rows_per_source, dtype=dtype)
        return TransformerCache(
            cross_kv=cross_kv,
            source_mask=encoder_state.source_mask,
            rows_per_source=rows_per_source,
            max_steps=max_steps,
            num_heads=self.config.num_heads,
            head_dim=self.config.head_dim,
            packed=packed,
        )

    def _packed_decoder(self, *, rows: int, dtype: torch.dtype) -> PackedDecoderWeights:
        linears = [linear for layer in self.decoder.layers for linear in layer.step_linears()]

        def build() -> PackedDecoderWeights:
            return PackedDecoderWeights(linears, self.output_weight(), rows=rows, dtype=dtype)

        if self._reused_packs is None:
            return build()
        weights = [linear.weight for linear in linears] + [linear.bias for linear in linears]
        weights = [w for w in weights if w is not None] + [self.output_weight()]
        return self._reused_packs.get(weights, build, rows=rows, dtype=dtype)

    @contextlib.contextmanager
    def fixed_weights(self) -> Iterator[None]:
        """A block in which the weights stay as they are, so `generate` calls inside it can share one copy of
        the decoder's weights packed for the CPU matmul library instead of packing them at every call (see
        packed.py for what that saves). The Seq2SeqTrainer's
        evaluation and prediction and `recipes.generate` decode inside one. A weight replaced or changed in
        place inside the block (an optimizer step, `load_state_dict`) is noticed and packed again; one written
        through `.data` is not, so do not do that inside. Blocks nest; the outermost one ends the sharing."""
        if self._reused_packs is not None:
            yield
            return
        self._reused_packs = ReusedPacks()
        try:
            yield
        finally:
            self._reused_packs = None

    def decode_step(self, tokens: Tensor, cache: TransformerCache) -> Tensor:
        """tokens (N,) -> logits (N, V) of the next token; only the new position is computed."""
        t = cache.length
        x = self.decoder.embed(
            self.get_decoder_embeddings()(tokens[:, None]), start=t, token_ids=tokens[:, None]
        )
        if self.decoder.relative_bias is not None:
            cache.position_bias = self.decoder.relative_bias(1, t + 1, query_start=t)
        for i, layer in enumerate(self.decoder.layers):
            x = layer.step(x, cache, i)
        if self.decoder.final_norm is not None:
            x = self.decoder.final_norm(x)
        cache.advance()
        return self.project(x[:, 0], cache.packed)

    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        *,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> Tensor | GenerateOutput:
        """Decode with `generation_config` (default: `self.generation_config`) updated by `kwargs`
        (e.g. `num_beams=4, max_new_tokens=64`). See `s2s.generation.generate` for the output."""
        config = (generation_config or self.generation_config).copy()
        unused = config.update(**kwargs)
        if unused:
            raise ValueError(
                f"generate got argument(s) it does not use: {sorted(unused)}; pass generation options known to "
                "GenerationConfig, and only input_ids / attention_mask as model inputs"
            )
        return run_generation(self, input_ids, attention_mask, generation_config=config, generator=generator)

    # ------------------------------------------------------------------ utilities
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute each layer's activations in backward (torch.utils.checkpoint, use_reentrant=False)."""
        if gradient_checkpointing_kwargs and gradient_checkpointing_kwargs.get("use_reentrant", False):
            raise ValueError("only use_reentrant=False is supported for gradient checkpointing")
        self.encoder.gradient_checkpointing = self.decoder.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.encoder.gradient_checkpointing = self.decoder.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.encoder.gradient_checkpointing

    def num_parameters(self, *, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        params = [p for p in self.parameters() if p.requires_grad or not only_trainable]
        total = sum(p.numel() for p in params)
        if exclude_embeddings:
            embeddings = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
            total -= sum(p.numel() for p in params if id(p) in embeddings)
        return total

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write config.json, model.safetensors and generation_config.json into `save_directory`."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(directory)
        save_weights(self, directory, metadata={"model_type": self.config.model_type})
        self.generation_config.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TransformerForConditionalGeneration:
        """Load a model written by `save_pretrained` (weights on CPU, in the saved dtype cast to fp32 params)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"{directory} is not a directory; pass the folder given to save_pretrained"
            )
        model = cls(TransformerConfig.from_pretrained(directory))
        load_weights(model, directory)
        if (directory / GENERATION_CONFIG_NAME).is_file():
            model.generation_config = GenerationConfig.from_pretrained(directory)
        return model
