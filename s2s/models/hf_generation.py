"""A Hugging Face folder's generation settings as our `GenerationConfig`, and back.

Settings come from generation_config.json, or (older folders) from the generation keys of config.json, as
`transformers` reads them. A setting that would change the output and that `s2s.generation` cannot honour is
refused by name; settings that only steer `transformers`' own machinery (caches, outputs) are dropped.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from s2s.generation.configuration import GenerationConfig
from s2s.models.configuration import TransformerConfig
from s2s.models.hf_families import UnsupportedModelError

# Generation keys that older config.json files carry (transformers reads them when there is no
# generation_config.json).
LEGACY_CONFIG_KEYS = (
    "max_length",
    "min_length",
    "max_new_tokens",
    "min_new_tokens",
    "num_beams",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "repetition_penalty",
    "bad_words_ids",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "num_return_sequences",
    "renormalize_logits",
    "encoder_no_repeat_ngram_size",
    "diversity_penalty",
    "num_beam_groups",
    "typical_p",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_decoder_ids",
)

# Keys with no effect on the generated tokens: metadata and switches of transformers' own implementation.
NO_EFFECT = {
    "transformers_version",
    "_from_model_config",
    "_commit_hash",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "output_logits",
    "return_legacy_cache",
    "cache_implementation",
    "cache_config",
    "compile_config",
    "disable_compile",
    "generation_kwargs",
    "num_assistant_tokens",
    "num_assistant_tokens_schedule",
    "assistant_confidence_threshold",
    "assistant_lookbehind",
    "assistant_early_exit",
    "prompt_lookup_num_tokens",
    "max_matching_ngram_size",
    "target_lookbehind",
    "is_assistant",
    "low_memory",
}

# Options s2s.generation does not have, with the transformers value under which they do nothing.
INACTIVE_VALUES: dict[str, Any] = {
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "min_p": None,
    "top_h": None,
    "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
    "remove_invalid_values": False,
    "exponential_decay_length_penalty": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_decoder_ids": None,
    "sequence_bias": None,
    "guidance_scale": None,
    "constraints": None,
    "force_words_ids": None,
    "penalty_alpha": None,
    "max_time": None,
    "stop_strings": None,
    "token_healing": False,
    "dola_layers": None,
    "watermarking_config": None,
}

_OURS = {f.name for f in fields(GenerationConfig)}


def generation_config_from_hf(
    hf_config: dict[str, Any],
    hf_generation: dict[str, Any] | None,
    config: TransformerConfig,
    source: str,
) -> GenerationConfig:
    """Our `GenerationConfig` for a model imported with `config`; `source` names the file in errors."""
    if hf_generation is None:
        data = {key: hf_config[key] for key in LEGACY_CONFIG_KEYS if key in hf_config}
    else:
        data = dict(hf_generation)
    options: dict[str, Any] = {}
    for key, value in data.items():
        if key in _OURS:
            options[key] = value
        elif key in NO_EFFECT or (key in INACTIVE_VALUES and value == INACTIVE_VALUES[key]):
            continue
        else:
            raise UnsupportedModelError(
                f"{source}: generation setting {key}={value!r} has no equivalent in s2s.generation; remove it "
                f"(or set it to {INACTIVE_VALUES[key]!r}) to decode with the s2s engine"
                if key in INACTIVE_VALUES
                else f"{source}: unknown generation setting {key!r}={value!r}; remove it to decode with the s2s engine"
            )
    for key in ("pad_token_id", "eos_token_id", "decoder_start_token_id", "bos_token_id"):
        if options.get(key) is None:
            options[key] = getattr(config, key)
    try:
        return GenerationConfig(**options)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err


def generation_config_to_hf(generation: GenerationConfig) -> dict[str, Any]:
    """generation_config.json content that transformers reads as the same decoding settings."""
    data = generation.to_dict()
    a, b = data.pop("max_length_a"), data.pop("max_length_b")
    if a or b is not None:
        raise UnsupportedModelError(
            "generation_config.max_length_a / max_length_b (a source-relative length limit) have no equivalent "
            "in transformers; unset them before exporting"
        )
    return {key: value for key, value in data.items() if value is not None}
