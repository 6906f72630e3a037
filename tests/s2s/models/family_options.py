"""Our `TransformerConfig` options that make the model compute as a pretrained family does (tests only): the
option tests and the export tests build their T5- and BART-like models from the same sets."""

from __future__ import annotations

# T5: RMS norm, no biases, relative position buckets, unscaled attention scores and embeddings, a head size
# that need not be d_model / num_heads (3 heads of 16 here), gated feed-forward
T5_OPTIONS = dict(
    normalization="rmsnorm",
    bias=False,
    position_embedding="relative",
    scale_attention_scores=False,
    scale_embedding=False,
    attention_head_dim=16,
    num_heads=3,
    activation="gated-gelu_tanh",
)
# BART: post-norm with a LayerNorm on the embeddings, learned positions from row 2, a final logits bias
BART_OPTIONS = dict(
    pre_norm=False,
    layernorm_embedding=True,
    position_embedding="learned",
    position_offset=2,
    final_logits_bias=True,
    activation="gelu",
)
