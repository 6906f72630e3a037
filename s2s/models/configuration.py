"""`TransformerConfig`: the hyper-parameters of `TransformerForConditionalGeneration`, saved as config.json."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from s2s.json_files import read_json_object

CONFIG_NAME = "config.json"

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "num_heads": 4, "ffn_dim": 256},
    "small": {"d_model": 256, "encoder_layers": 3, "decoder_layers": 3, "num_heads": 4, "ffn_dim": 1024},
    "base": {"d_model": 512, "encoder_layers": 6, "decoder_layers": 6, "num_heads": 8, "ffn_dim": 2048},
}


ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swiglu", "gated-gelu", "gated-gelu_tanh", "gated-relu")
POSITION_EMBEDDINGS = ("sinusoidal", "sinusoidal_marian", "learned", "relative")


@dataclass
class TransformerConfig:
    """Encoder-decoder Transformer hyper-parameters. Special ids follow the project: pad 0, bos 2, eos 3."""

    model_type: ClassVar[str] = "s2s-transformer"
    is_encoder_decoder: ClassVar[bool] = True

    vocab_size: int = 8000
    """Size of the (joint) vocabulary."""
    d_model: int = 512
    encoder_layers: int = 6
    decoder_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 2048
    """Inner size of the feed-forward block (per branch for swiglu)."""
    dropout: float = 0.1
    """Dropout on embeddings and on each residual branch."""
    attention_dropout: float = 0.0
    """Dropout on attention weights (training only)."""
    activation_dropout: float = 0.0
    """Dropout after the feed-forward activation."""
    encoder_layerdrop: float = 0.0
    """Training only: probability of skipping each encoder layer in a forward pass (LayerDrop; M2M100 and
    NLLB were trained with it)."""
    decoder_layerdrop: float = 0.0
    """As `encoder_layerdrop`, for the decoder layers."""
    dropout_after_final_norm: bool = False
    """Apply `dropout` once more after each stack's final LayerNorm (T5 does)."""
    activation: str = "relu"
    """Feed-forward activation: "relu", "gelu" (exact), "gelu_tanh" (tanh approximation) or "silu"; or a gated
    block that multiplies the activated half of a doubled first projection with its other half: "swiglu"
    (silu), "gated-gelu", "gated-gelu_tanh" (T5 v1.1 and Flan-T5) or "gated-relu"."""
    pre_norm: bool = True
    """LayerNorm before each sub-block (plus a final LayerNorm); False: after the residual (original paper).
    Pre-norm trains stably without careful warm-up."""
    layer_norm_eps: float = 1e-5
    normalization: str = "layernorm"
    """"layernorm", or "rmsnorm" (scale by the root mean square only, no mean and no bias, as T5)."""
    bias: bool = True
    """Attention and feed-forward projections have biases (T5 has none)."""
    layernorm_embedding: bool = False
    """Normalise the sum of token and position embeddings before the first layer (BART, mBART)."""
    attention_head_dim: int | None = None
    """Size of each attention head; None: d_model // num_heads. T5 v1.1 uses heads * head size != d_model."""
    scale_attention_scores: bool = True
    """Divide query-key products by sqrt(head size). T5 does not (its initialisation absorbs the factor)."""
    share_embeddings: bool = True
    """One embedding table for source and target (a joint vocabulary)."""
    tie_word_embeddings: bool = True
    """The output projection reuses the decoder embedding matrix."""
    position_embedding: str = "sinusoidal"
    """How positions enter the model. Added to the token embeddings: "sinusoidal" (fixed; frequencies
    10000**(-i / (d/2 - 1)), sines in the first half, cosines in the second), "sinusoidal_marian" (fixed; the
    frequencies 10000**(-2i / d) of "Attention is all you need" in the same halves layout, as Marian) or
    "learned". Or "relative": no position embedding, a learned bias per head on each attention score, looked
    up by bucketed query-key distance and shared by the layers of a stack (T5)."""
    position_offset: int = 0
    """Learned positions: the table row of position 0 (BART and mBART keep two unused rows first: 2)."""
    positions_from_padding: bool = False
    """Position ids count the non-padding tokens of each row, starting at pad_token_id + 1, and a padding
    token gets the zero row pad_token_id (fairseq's convention, kept by M2M100 and NLLB): a left-padded row
    gets the positions of the unpadded one. False: positions 0, 1, 2, ... in every row."""
    max_position_embeddings: int = 1024
    """Longest source or target sequence the model accepts (not a limit with relative positions)."""
    relative_attention_num_buckets: int = 32
    """Relative positions: number of distance buckets (half per direction in the encoder)."""
    relative_attention_max_distance: int = 128
    """Relative positions: distances from this on share the last bucket."""
    scale_embedding: bool = True
    """Multiply token embeddings by sqrt(d_model)."""
    freeze_padding_embedding: bool = True
    """The padding token's embedding row starts at zero and gets no gradient. T5 trains it (its decoder
    starts every target with the padding token)."""
    final_logits_bias: bool = False
    """A fixed (not trained) bias added to the logits, kept in the weights file (BART, mBART, Marian)."""
    scale_decoder_output: bool = False
    """Multiply the decoder output by d_model**-0.5 before the output projection (T5 with tied embeddings)."""
    pad_token_id: int = 0
    bos_token_id: int = 2
    eos_token_id: int = 3
    decoder_start_token_id: int = 2
    decoder_start_from_labels: bool = False
    """Teacher forcing (decoder inputs built from labels) starts each row with its last label token instead of
    `decoder_start_token_id`: mBART's shift, which moves the language tag closing each target to the front.
    Generation still starts with `decoder_start_token_id`."""
    init_style: str = "xavier"
    """How a freshly built model draws its weights (loading saved weights does not depend on it).
    "xavier": projections xavier-uniform (q, k and v each as its own matrix), biases zero, an untied output
    projection N(0, d_model**-0.5); "normal": every linear weight N(0, init_std), the toolkit's initialisation
    before "xavier" became the default, kept to reproduce older runs. Both draw token embeddings with std
    d_model**-0.5 (unit scale after `scale_embedding`) and a zero padding row. "normal" learns much more slowly
    at small d_model: its attention starts nearly uniform (see `s2s.models.initialization`). A config.json
    written before this field existed loads with the default."""
    init_std: float = 0.02
    """Standard deviation of the linear weights with init_style="normal", and of the token embeddings without
    `scale_embedding` (either style)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "num_heads", "ffn_dim"):
            value = getattr(self, name)
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or value < (0 if "layers" in name else 1)
            ):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.attention_head_dim is not None:
            if not isinstance(self.attention_head_dim, int) or self.attention_head_dim < 1:
                raise ValueError(
                    f"attention_head_dim must be a positive int or None, got {self.attention_head_dim!r}"
                )
        elif self.d_model % self.num_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads}); "
                "change one of them"
            )
        for name in (
            "dropout",
            "attention_dropout",
            "activation_dropout",
            "encoder_layerdrop",
            "decoder_layerdrop",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {self.activation!r}")
        if self.normalization not in ("layernorm", "rmsnorm"):
            raise ValueError(f"normalization must be 'layernorm' or 'rmsnorm', got {self.normalization!r}")
        if self.position_offset < 0:
            raise ValueError(f"position_offset must be >= 0, got {self.position_offset}")
        if self.position_offset and self.position_embedding != "learned":
            raise ValueError("position_offset applies to learned positions only; set it to 0")
        if self.positions_from_padding and self.position_embedding == "relative":
            raise ValueError(
                "positions_from_padding needs absolute positions, not position_embedding='relative'"
            )
        for name in ("relative_attention_num_buckets", "relative_attention_max_distance"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2, got {getattr(self, name)}")
        if self.init_style not in ("xavier", "normal"):
            raise ValueError(f"init_style must be 'xavier' or 'normal', got {self.init_style!r}")
        if not self.init_std > 0.0:
            raise ValueError(f"init_std must be positive, got {self.init_std!r}")
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"position_embedding must be one of {', '.join(POSITION_EMBEDDINGS)}; "
                f"got {self.position_embedding!r}"
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"{name}={value} is outside the vocabulary [0, {self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.attention_head_dim or self.d_model // self.num_heads

    @property
    def attention_dim(self) -> int:
        """Width of the concatenated heads (d_model unless `attention_head_dim` says otherwise)."""
        return self.num_heads * self.head_dim

    @property
    def gated_ffn(self) -> bool:
        return self.activation == "swiglu" or self.activation.startswith("gated-")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TransformerConfig:
        """`tiny` (d64, 2+2 layers), `small` (d256, 3+3, 4 heads, ffn 1024) or `base` (d512, 6+6, 8 heads,
        ffn 2048), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(
                f"config is for model_type {model_type!r}, not {cls.model_type!r}; load it with the matching "
                "class (e.g. a Hugging Face model with transformers' AutoModelForSeq2SeqLM)"
            )
        known = {f.name for f in fields(cls)}
        unknown = [k for k in data if k not in known]
        if unknown:
            hints = [
                f"{k!r}"
                + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, known, n=1)) else "")
                for k in unknown
            ]
            raise ValueError(f"unknown TransformerConfig field(s) {', '.join(hints)}")
        return cls(**copy.deepcopy(data))

    def save_pretrained(self, save_directory: str | Path) -> Path:
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TransformerConfig:
        """Load from a directory holding config.json, or from the JSON file itself."""
        path = Path(path)
        file = path / CONFIG_NAME if path.is_dir() else path
        data = read_json_object(
            file, missing=f"no model config at {file}; expected a {CONFIG_NAME} written by save_pretrained"
        )
        if "model_type" not in data and "architectures" in data:
            data["model_type"] = str(data["architectures"])
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{file}: {err}") from err
