"""How a freshly built `TransformerForConditionalGeneration` draws its weights (`TransformerConfig.init_style`).

Only fresh models depend on this: `from_pretrained` overwrites every initialised tensor with the saved ones.

Why "xavier" is the default: with every projection drawn from N(0, 0.02), a small model (d_model 64: the xavier
std of a 64x64 matrix is 0.125) starts with query-key products so small that every attention head is nearly
uniform, and the gradient that would sharpen a head is proportional to those same small weights. On a toy
task that only needs each target position to copy one source position, such a model was still at loss 2.29
(ln 10 = 2.30: no position found) after 600 updates, where the same model with xavier-uniform projections was
at 0.18 after 200 (`python -m bench.init_ab`; figures in bench/README.md). Larger models suffer less (a d_model
512 projection's xavier std is 0.044) but still start later: 100-200 updates at the `small` and `base` sizes.

It is not the better start everywhere: on SAMSum (dialogues of up to 512 tokens) the `small` preset learned far
slower from xavier than from "normal" (validation ROUGE-1/2 after 1,000 updates 22.4/4.6 against 31.2/9.1), so
the SAMSum recipe sets `init_style: normal`; why long sources reverse the order was not measured.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from s2s.models.configuration import TransformerConfig
from s2s.models.layers import CrossAttention, FeedForward, SelfAttention

INIT_STYLES = ("xavier", "normal")


def initialise_weights(model: nn.Module, config: TransformerConfig) -> None:
    """Draw every parameter of ``model`` (a fresh `TransformerForConditionalGeneration`) as
    ``config.init_style`` says; LayerNorms keep their (1, 0) start."""
    if config.init_style == "normal":
        model.apply(lambda module: _normal_init(module, config))
    else:
        _xavier_init(model, config)


def _normal_init(module: nn.Module, config: TransformerConfig) -> None:
    """Every linear weight N(0, init_std), biases zero (the toolkit's first initialisation, as BART's)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=config.init_std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        _embedding_init(module, config)


def _xavier_init(model: nn.Module, config: TransformerConfig) -> None:
    """Projections xavier-uniform with zero biases (fairseq and `nn.Transformer` do the same); a fused
    projection (q/k/v in one matrix, keys/values, swiglu's gate/value) is drawn block by block, as its separate
    matrices would be, so fusing them for speed does not shrink their scale. An untied output projection is
    N(0, d_model**-0.5), the scale of the tied embedding it replaces (fairseq's choice too)."""
    fused: dict[nn.Linear, int] = {}
    for module in model.modules():
        if isinstance(module, SelfAttention):
            fused[module.qkv] = 3
        elif isinstance(module, CrossAttention):
            fused[module.kv] = 2
        elif isinstance(module, FeedForward) and module.gated:
            fused[module.fc1] = 2
    output_projection = getattr(model, "lm_head", None)
    for module in model.modules():
        if module is output_projection:
            nn.init.normal_(module.weight, std=config.d_model**-0.5)
        elif isinstance(module, nn.Linear):
            _xavier_uniform_blocks(module.weight, fused.get(module, 1))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            _embedding_init(module, config)


def _xavier_uniform_blocks(weight: torch.Tensor, blocks: int) -> None:
    """Xavier-uniform on each of ``blocks`` equal row blocks of ``weight`` (out_features, in_features)."""
    rows, fan_in = weight.shape
    fan_out = rows // blocks
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


def _embedding_init(module: nn.Embedding, config: TransformerConfig) -> None:
    """Multiplied by sqrt(d_model) in the forward pass, token embeddings drawn with std d_model**-0.5 start at
    unit scale (as fairseq's), comparable to the sinusoidal positions instead of drowned by them; without
    `scale_embedding` they use `init_std`. The padding row starts (and, through `padding_idx`, stays) zero."""
    std = config.d_model**-0.5 if config.scale_embedding else config.init_std
    nn.init.normal_(module.weight, std=std)
    if module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()
