"""The Hugging Face seq2seq families our Transformer can stand in for, one table each: how their config.json
keys become `TransformerConfig` options (and back), and which of their tensors is which of ours.

A family is the set of options its code fixes (BART always normalises after the residual and adds learned
positions from row 2, ...) plus the keys its config.json leaves free (sizes, dropout, activation, ...).
Import reads the free keys and sets the fixed options; export picks the family whose fixed options a config
has, and names the options that keep it from every family otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from s2s.models.configuration import TransformerConfig

# Hugging Face activation names -> ours, and ours -> the name written on export.
ACTIVATIONS_FROM_HF = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "swish": "silu",
    "silu": "silu",
}
ACTIVATIONS_TO_HF = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "silu": "silu"}

# config.json keys that change the math of every family and that no option of ours reproduces, with the only
# value accepted (Hugging Face's own default).
UNSUPPORTED_VALUES: dict[str, Any] = {"is_decoder": False, "add_cross_attention": False}


class UnsupportedModelError(ValueError):
    """A config that no supported family (import) or no option of ours (export) can reproduce."""


@dataclass(frozen=True)
class Family:
    """One Hugging Face model family: its names, its fixed options, and its mappings."""

    name: str
    model_type: str
    architecture: str
    fixed: dict[str, Any]
    """`TransformerConfig` options its code fixes."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Its config class's defaults for the keys read here (config.json may leave them out)."""

    # ------------------------------------------------------------------ config
    def config_from_hf(self, hf: dict[str, Any], source: str) -> dict[str, Any]:
        raise NotImplementedError

    def config_to_hf(self, config: TransformerConfig) -> dict[str, Any]:
        raise NotImplementedError

    def mismatches(self, config: TransformerConfig) -> list[str]:
        """The options of `config` this family cannot reproduce, as "name=value (family: needed)"."""
        found = [
            f"{name}={getattr(config, name)!r} ({self.name} needs {value!r})"
            for name, value in self.fixed.items()
            if getattr(config, name) != value
        ]
        return found + self._other_mismatches(config)

    def _other_mismatches(self, config: TransformerConfig) -> list[str]:
        return []

    # ------------------------------------------------------------------ weights
    def weight_names(self, config: TransformerConfig) -> list[tuple[str, list[str]]]:
        """(our tensor, its Hugging Face tensors): several are concatenated along the first dimension."""
        raise NotImplementedError

    def aliases(self, config: TransformerConfig) -> dict[str, list[str]]:
        """Hugging Face names of tied copies of a tensor: any of them may be the one a file holds."""
        return {}

    def derived(self, config: TransformerConfig) -> dict[str, str]:
        """HF tensors that are fixed functions of the config (our buffers): HF name -> our buffer."""
        return {}

    def unused(self, config: TransformerConfig) -> set[str]:
        """Tensors that checkpoints of this family may hold and that its code never reads (transformers drops
        them on load too)."""
        return set()

    def _get(self, hf: dict[str, Any], key: str) -> Any:
        return hf.get(key, self.defaults.get(key))


def _norm(prefix: str, *, bias: bool = True) -> list[str]:
    return [f"{prefix}.weight"] + ([f"{prefix}.bias"] if bias else [])


def _pairs(ours: str, theirs: list[str], *, bias: bool) -> list[tuple[str, list[str]]]:
    """Weight (and bias) of one of our linear layers from one or several (concatenated) HF ones."""
    pairs = [(f"{ours}.weight", [f"{name}.weight" for name in theirs])]
    if bias:
        pairs.append((f"{ours}.bias", [f"{name}.bias" for name in theirs]))
    return pairs


def _refuse(source: str, key: str, value: Any, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{source}: {key}={value!r} is not supported: {why}")


class BartLike(Family):
    """BART, mBART, Marian and M2M100/NLLB: the same layer code, different normalisation and positions."""

    HF_KEYS = {
        "vocab_size": "vocab_size",
        "d_model": "d_model",
        "encoder_layers": "encoder_layers",
        "decoder_layers": "decoder_layers",
        "num_heads": "encoder_attention_heads",
        "ffn_dim": "encoder_ffn_dim",
        "dropout": "dropout",
        "attention_dropout": "attention_dropout",
        "activation_dropout": "activation_dropout",
        "encoder_layerdrop": "encoder_layerdrop",
        "decoder_layerdrop": "decoder_layerdrop",
        "max_position_embeddings": "max_position_embeddings",
        "scale_embedding": "scale_embedding",
        "tie_word_embeddings": "tie_word_embeddings",
        "pad_token_id": "pad_token_id",
        "eos_token_id": "eos_token_id",
        "decoder_start_token_id": "decoder_start_token_id",
        "init_std": "init_std",
    }

    def config_from_hf(self, hf: dict[str, Any], source: str) -> dict[str, Any]:
        get = lambda key: self._get(hf, key)  # noqa: E731
        for ours, theirs in (
            ("encoder_attention_heads", "decoder_attention_heads"),
            ("encoder_ffn_dim", "decoder_ffn_dim"),
        ):
            if get(ours) != get(theirs):
                raise _refuse(
                    source,
                    theirs,
                    get(theirs),
                    f"it must equal {ours}={get(ours)!r} (one value serves both stacks)",
                )
        if self.name == "marian" and get("decoder_vocab_size") not in (None, get("vocab_size")):
            raise _refuse(
                source,
                "decoder_vocab_size",
                get("decoder_vocab_size"),
                f"it must equal vocab_size={get('vocab_size')}",
            )
        activation = get("activation_function")
        if activation not in ACTIVATIONS_FROM_HF:
            raise _refuse(
                source, "activation_function", activation, f"supported: {sorted(ACTIVATIONS_FROM_HF)}"
            )
        options = {ours: get(theirs) for ours, theirs in self.HF_KEYS.items()}
        options["activation"] = ACTIVATIONS_FROM_HF[activation]
        options["share_embeddings"] = bool(
            get("share_encoder_decoder_embeddings") if self.name == "marian" else True
        )
        bos = get("bos_token_id")
        options["bos_token_id"] = bos if bos is not None else options["decoder_start_token_id"]
        if options["decoder_start_token_id"] is None:  # mBART: the generation config names it
            options["decoder_start_token_id"] = options["eos_token_id"]
        return {**options, **self.fixed}

    def config_to_hf(self, config: TransformerConfig) -> dict[str, Any]:
        hf = {theirs: getattr(config, ours) for ours, theirs in self.HF_KEYS.items()}
        hf.update(
            decoder_attention_heads=config.num_heads,
            decoder_ffn_dim=config.ffn_dim,
            activation_function=ACTIVATIONS_TO_HF[config.activation],
            bos_token_id=config.bos_token_id,
            num_hidden_layers=config.encoder_layers,
        )
        if self.name in ("bart", "mbart"):
            # keys of BART's first configs, which transformers no longer reads but CTranslate2's converter does
            hf.update(normalize_before=config.pre_norm, normalize_embedding=config.layernorm_embedding)
        if self.name == "marian":
            hf.update(
                share_encoder_decoder_embeddings=config.share_embeddings, decoder_vocab_size=config.vocab_size
            )
        return hf

    def _other_mismatches(self, config: TransformerConfig) -> list[str]:
        found = []
        if config.activation not in ACTIVATIONS_TO_HF:
            found.append(f"activation={config.activation!r} ({self.name} has no gated feed-forward)")
        if config.attention_head_dim not in (None, config.d_model // config.num_heads):
            found.append(
                f"attention_head_dim={config.attention_head_dim} ({self.name} needs d_model / num_heads)"
            )
        if not config.share_embeddings and self.name != "marian":
            found.append(f"share_embeddings=False ({self.name} shares one table between encoder and decoder)")
        return found

    def weight_names(self, config: TransformerConfig) -> list[tuple[str, list[str]]]:
        pairs: list[tuple[str, list[str]]] = []
        if config.share_embeddings:
            pairs.append(("embed_tokens.weight", ["model.shared.weight"]))
        else:
            pairs.append(("embed_tokens.weight", ["model.encoder.embed_tokens.weight"]))
            pairs.append(("decoder_embed_tokens.weight", ["model.decoder.embed_tokens.weight"]))
        if not config.tie_word_embeddings:
            pairs.append(("lm_head.weight", ["lm_head.weight"]))
        if config.final_logits_bias:
            pairs.append(("final_logits_bias", ["final_logits_bias"]))
        for stack, count in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
            theirs = f"model.{stack}"
            if config.position_embedding == "learned":
                pairs.append((f"{stack}.positions.learned.weight", [f"{theirs}.embed_positions.weight"]))
            if config.layernorm_embedding:
                pairs += zip(
                    _norm(f"{stack}.layernorm_embedding"),
                    ([n] for n in _norm(f"{theirs}.layernorm_embedding")),
                )
            if config.pre_norm:
                pairs += zip(_norm(f"{stack}.final_norm"), ([n] for n in _norm(f"{theirs}.layer_norm")))
            for i in range(count):
                pairs += self._layer(
                    f"{stack}.layers.{i}", f"{theirs}.layers.{i}", decoder=stack == "decoder"
                )
        return pairs

    @staticmethod
    def _layer(ours: str, theirs: str, *, decoder: bool) -> list[tuple[str, list[str]]]:
        attn = f"{theirs}.self_attn"
        pairs = _pairs(
            f"{ours}.self_attn.qkv", [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"], bias=True
        )
        pairs += _pairs(f"{ours}.self_attn.out", [f"{attn}.out_proj"], bias=True)
        norms = ["self_attn_layer_norm", "final_layer_norm"]
        if decoder:
            cross = f"{theirs}.encoder_attn"
            pairs += _pairs(f"{ours}.cross_attn.q", [f"{cross}.q_proj"], bias=True)
            pairs += _pairs(f"{ours}.cross_attn.kv", [f"{cross}.k_proj", f"{cross}.v_proj"], bias=True)
            pairs += _pairs(f"{ours}.cross_attn.out", [f"{cross}.out_proj"], bias=True)
            norms = ["self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"]
        pairs += _pairs(f"{ours}.ffn.fc1", [f"{theirs}.fc1"], bias=True)
        pairs += _pairs(f"{ours}.ffn.fc2", [f"{theirs}.fc2"], bias=True)
        for number, norm in enumerate(norms, start=1):
            pairs += zip(_norm(f"{ours}.norm{number}"), ([n] for n in _norm(f"{theirs}.{norm}")))
        return pairs

    def aliases(self, config: TransformerConfig) -> dict[str, list[str]]:
        if not config.share_embeddings:
            tied = ["lm_head.weight"] if config.tie_word_embeddings else []
            return {"model.decoder.embed_tokens.weight": tied}
        copies = ["model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"]
        if config.tie_word_embeddings:
            copies.append("lm_head.weight")
        return {"model.shared.weight": copies}

    def unused(self, config: TransformerConfig) -> set[str]:
        if not config.positions_from_padding:
            return set()
        # M2M100 recomputes its sinusoidal table; files converted from fairseq may still hold a copy
        return {
            f"model.{stack}.embed_positions.{name}"
            for stack in ("encoder", "decoder")
            for name in ("weights", "_float_tensor")
        }

    def derived(self, config: TransformerConfig) -> dict[str, str]:
        if config.position_embedding != "sinusoidal_marian":
            return {}
        return {
            f"model.{stack}.embed_positions.weight": f"{stack}.positions.table"
            for stack in ("encoder", "decoder")
        }


_BART_LIKE_FIXED = dict(
    freeze_padding_embedding=True,
    decoder_start_from_labels=False,
    normalization="layernorm",
    layer_norm_eps=1e-5,
    bias=True,
    scale_attention_scores=True,
    scale_decoder_output=False,
    dropout_after_final_norm=False,
)
_BART_DEFAULTS = {
    "vocab_size": 50265,
    "d_model": 1024,
    "encoder_layers": 12,
    "decoder_layers": 12,
    "encoder_attention_heads": 16,
    "decoder_attention_heads": 16,
    "encoder_ffn_dim": 4096,
    "decoder_ffn_dim": 4096,
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "decoder_layerdrop": 0.0,
    "activation_function": "gelu",
    "max_position_embeddings": 1024,
    "scale_embedding": False,
    "tie_word_embeddings": True,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
    "init_std": 0.02,
}

BART = BartLike(
    name="bart",
    model_type="bart",
    architecture="BartForConditionalGeneration",
    fixed=dict(
        _BART_LIKE_FIXED,
        pre_norm=False,
        layernorm_embedding=True,
        position_embedding="learned",
        position_offset=2,
        positions_from_padding=False,
        final_logits_bias=True,
    ),
    defaults=_BART_DEFAULTS,
)
MBART = BartLike(
    name="mbart",
    model_type="mbart",
    architecture="MBartForConditionalGeneration",
    fixed=dict(BART.fixed, pre_norm=True, decoder_start_from_labels=True),
    defaults=dict(_BART_DEFAULTS, decoder_start_token_id=None),
)
MARIAN = BartLike(
    name="marian",
    model_type="marian",
    architecture="MarianMTModel",
    fixed=dict(
        _BART_LIKE_FIXED,
        pre_norm=False,
        layernorm_embedding=False,
        position_embedding="sinusoidal_marian",
        position_offset=0,
        positions_from_padding=False,
        final_logits_bias=True,
    ),
    defaults=dict(
        _BART_DEFAULTS,
        vocab_size=58101,
        pad_token_id=58100,
        bos_token_id=None,
        eos_token_id=0,
        decoder_start_token_id=58100,
        share_encoder_decoder_embeddings=True,
    ),
)
M2M100 = BartLike(
    name="m2m_100",
    model_type="m2m_100",
    architecture="M2M100ForConditionalGeneration",
    fixed=dict(
        _BART_LIKE_FIXED,
        pre_norm=True,
        layernorm_embedding=False,
        position_embedding="sinusoidal",
        position_offset=0,
        positions_from_padding=True,
        final_logits_bias=False,
    ),
    defaults=dict(
        _BART_DEFAULTS,
        vocab_size=128112,
        attention_dropout=0.1,
        activation_function="relu",
        scale_embedding=True,
        encoder_layerdrop=0.05,
        decoder_layerdrop=0.05,
    ),
)


class T5(Family):
    """T5 v1 (relu) and v1.1 / Flan-T5 (gated-gelu, untied head): RMS norm, no biases, relative positions."""

    def config_from_hf(self, hf: dict[str, Any], source: str) -> dict[str, Any]:
        get = lambda key: self._get(hf, key)  # noqa: E731
        proj = get("feed_forward_proj")
        parts = str(proj).split("-")
        gated = len(parts) == 2 and parts[0] == "gated"
        if len(parts) > 2 or (len(parts) == 2 and not gated):
            raise _refuse(source, "feed_forward_proj", proj, "expected 'ACT' or 'gated-ACT'")
        act = "gelu_new" if proj == "gated-gelu" else parts[-1]
        if act not in ACTIVATIONS_FROM_HF:
            raise _refuse(
                source, "feed_forward_proj", proj, f"supported activations: {sorted(ACTIVATIONS_FROM_HF)}"
            )
        ours = ACTIVATIONS_FROM_HF[act]
        if gated:
            ours = "swiglu" if ours == "silu" else f"gated-{ours}"
        if gated and ours not in ("swiglu", "gated-gelu", "gated-gelu_tanh", "gated-relu"):
            raise _refuse(source, "feed_forward_proj", proj, "no such gated activation here")
        tied = bool(get("tie_word_embeddings"))
        rate = get("dropout_rate")
        pad = get("pad_token_id")
        start = get("decoder_start_token_id")
        start = pad if start is None else start
        return dict(
            self.fixed,
            vocab_size=get("vocab_size"),
            d_model=get("d_model"),
            attention_head_dim=get("d_kv"),
            ffn_dim=get("d_ff"),
            encoder_layers=get("num_layers"),
            decoder_layers=get("num_decoder_layers")
            if get("num_decoder_layers") is not None
            else get("num_layers"),
            num_heads=get("num_heads"),
            relative_attention_num_buckets=get("relative_attention_num_buckets"),
            relative_attention_max_distance=get("relative_attention_max_distance"),
            dropout=rate,
            attention_dropout=rate,
            activation_dropout=rate,
            layer_norm_eps=get("layer_norm_epsilon"),
            activation=ours,
            tie_word_embeddings=tied,
            scale_decoder_output=tied,
            pad_token_id=pad,
            eos_token_id=get("eos_token_id"),
            bos_token_id=start,
            decoder_start_token_id=start,
            max_position_embeddings=get("n_positions") or 512,
        )

    def config_to_hf(self, config: TransformerConfig) -> dict[str, Any]:
        act = config.activation
        if act == "swiglu":
            proj = "gated-silu"
        elif act.startswith("gated-"):
            proj = (
                "gated-gelu"
                if act == "gated-gelu_tanh"
                else "gated-" + ACTIVATIONS_TO_HF[act.removeprefix("gated-")]
            )
        else:
            proj = ACTIVATIONS_TO_HF[act]
        return dict(
            vocab_size=config.vocab_size,
            d_model=config.d_model,
            d_kv=config.head_dim,
            d_ff=config.ffn_dim,
            num_layers=config.encoder_layers,
            num_decoder_layers=config.decoder_layers,
            num_heads=config.num_heads,
            relative_attention_num_buckets=config.relative_attention_num_buckets,
            relative_attention_max_distance=config.relative_attention_max_distance,
            dropout_rate=config.dropout,
            layer_norm_epsilon=config.layer_norm_eps,
            feed_forward_proj=proj,
            tie_word_embeddings=config.tie_word_embeddings,
            pad_token_id=config.pad_token_id,
            eos_token_id=config.eos_token_id,
            decoder_start_token_id=config.decoder_start_token_id,
            n_positions=config.max_position_embeddings,
        )

    def _other_mismatches(self, config: TransformerConfig) -> list[str]:
        found = []
        if config.scale_decoder_output != config.tie_word_embeddings:
            found.append(
                f"scale_decoder_output={config.scale_decoder_output} with tie_word_embeddings="
                f"{config.tie_word_embeddings} (t5 scales the output exactly when the head is tied)"
            )
        if not config.dropout == config.attention_dropout == config.activation_dropout:
            found.append("dropout, attention_dropout and activation_dropout differ (t5 has one dropout_rate)")
        if config.activation.removeprefix("gated-") == "gelu":
            found.append(f"activation={config.activation!r} (t5's gated gelu is the tanh approximation)")
        return found

    def weight_names(self, config: TransformerConfig) -> list[tuple[str, list[str]]]:
        pairs: list[tuple[str, list[str]]] = [("embed_tokens.weight", ["shared.weight"])]
        if not config.tie_word_embeddings:
            pairs.append(("lm_head.weight", ["lm_head.weight"]))
        for stack, count in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
            pairs.append(
                (
                    f"{stack}.relative_bias.embedding.weight",
                    [f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
                )
            )
            pairs.append((f"{stack}.final_norm.weight", [f"{stack}.final_layer_norm.weight"]))
            for i in range(count):
                pairs += self._layer(
                    config, f"{stack}.layers.{i}", f"{stack}.block.{i}", decoder=stack == "decoder"
                )
        return pairs

    @staticmethod
    def _layer(
        config: TransformerConfig, ours: str, theirs: str, *, decoder: bool
    ) -> list[tuple[str, list[str]]]:
        attn = f"{theirs}.layer.0.SelfAttention"
        pairs = [
            (f"{ours}.self_attn.qkv.weight", [f"{attn}.q.weight", f"{attn}.k.weight", f"{attn}.v.weight"]),
            (f"{ours}.self_attn.out.weight", [f"{attn}.o.weight"]),
            (f"{ours}.norm1.weight", [f"{theirs}.layer.0.layer_norm.weight"]),
        ]
        ffn_layer = 1
        if decoder:
            cross = f"{theirs}.layer.1.EncDecAttention"
            pairs += [
                (f"{ours}.cross_attn.q.weight", [f"{cross}.q.weight"]),
                (f"{ours}.cross_attn.kv.weight", [f"{cross}.k.weight", f"{cross}.v.weight"]),
                (f"{ours}.cross_attn.out.weight", [f"{cross}.o.weight"]),
                (f"{ours}.norm2.weight", [f"{theirs}.layer.1.layer_norm.weight"]),
            ]
            ffn_layer = 2
        ffn = f"{theirs}.layer.{ffn_layer}.DenseReluDense"
        first = [f"{ffn}.wi_0.weight", f"{ffn}.wi_1.weight"] if config.gated_ffn else [f"{ffn}.wi.weight"]
        pairs += [
            (f"{ours}.ffn.fc1.weight", first),
            (f"{ours}.ffn.fc2.weight", [f"{ffn}.wo.weight"]),
            (f"{ours}.norm{ffn_layer + 1}.weight", [f"{theirs}.layer.{ffn_layer}.layer_norm.weight"]),
        ]
        return pairs

    def unused(self, config: TransformerConfig) -> set[str]:
        # the original T5 checkpoints carry a relative bias for the first cross-attention, which T5 never uses
        return {"decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"}

    def aliases(self, config: TransformerConfig) -> dict[str, list[str]]:
        copies = ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"]
        if config.tie_word_embeddings:
            copies.append("lm_head.weight")
        return {"shared.weight": copies}


T5_FAMILY = T5(
    name="t5",
    model_type="t5",
    architecture="T5ForConditionalGeneration",
    fixed=dict(
        normalization="rmsnorm",
        bias=False,
        pre_norm=True,
        layernorm_embedding=False,
        position_embedding="relative",
        position_offset=0,
        positions_from_padding=False,
        scale_attention_scores=False,
        scale_embedding=False,
        final_logits_bias=False,
        share_embeddings=True,
        dropout_after_final_norm=True,
        decoder_start_from_labels=False,
        encoder_layerdrop=0.0,
        freeze_padding_embedding=False,
        decoder_layerdrop=0.0,
    ),
    defaults={
        "vocab_size": 32128,
        "d_model": 512,
        "d_kv": 64,
        "d_ff": 2048,
        "num_layers": 6,
        "num_decoder_layers": None,
        "num_heads": 8,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "dropout_rate": 0.1,
        "layer_norm_epsilon": 1e-6,
        "feed_forward_proj": "relu",
        "tie_word_embeddings": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": None,
    },
)

FAMILIES: dict[str, Family] = {
    family.model_type: family for family in (BART, MBART, MARIAN, M2M100, T5_FAMILY)
}
"""model_type in config.json -> family (NLLB's dense checkpoints are model_type m2m_100; mBART-50 is mbart)."""


def family_for(model_type: Any, source: str) -> Family:
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"{source}: model_type {model_type!r} is not supported; supported families: {', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]
