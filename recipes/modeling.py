"""The job's model: a saved one (s2s or Hugging Face) or a new `TransformerForConditionalGeneration` sized for
the tokenizer, checked against the tokenizer and the length limits; and the decoding defaults saved with it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from recipes.arguments import DataArguments, ModelArguments
from recipes.hf_models import is_hf_model_dir, load_model_folder

logger = logging.getLogger("recipes")


def load_or_build_model(model_args: ModelArguments, data_args: DataArguments, tokenizer: Any) -> Any:
    """A saved model (s2s, or a Hugging Face folder on `model_engine`), or a new
    `TransformerForConditionalGeneration` sized for the tokenizer; checks that the tokenizer fits the model and
    the length limits fit its positions."""
    path = Path(model_args.model_name_or_path) if model_args.model_name_or_path else None
    engine = model_args.model_engine
    if path is None and engine != "s2s":
        raise ValueError(
            f"--model_engine {engine} chooses how a Hugging Face folder given as --model_name_or_path runs; "
            "without one the job builds a new s2s model: drop --model_engine or pass --model_name_or_path"
        )
    model = _load_model(path, engine) if path is not None else _new_model(model_args, tokenizer)
    _check_tokenizer_fits(model, tokenizer, path)
    _check_positions(model, data_args)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %s, %s parameters", type(model).__name__, f"{n_params:,}")
    return model


def _load_model(path: Path, engine: str) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"model_name_or_path={str(path)!r}: no such folder")
    if is_hf_model_dir(path):
        logger.info(
            "%s is a Hugging Face folder: %s",
            path,
            "imported into the s2s engine" if engine == "s2s" else "kept as the transformers model",
        )
    return load_model_folder(path, engine)


def _new_model(model_args: ModelArguments, tokenizer: Any) -> Any:
    """A model of `model_preset` size whose vocabulary and special ids are the tokenizer's."""
    from s2s.models import TransformerConfig, TransformerForConditionalGeneration

    from_tokenizer = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.bos_token_id,
    }
    config = TransformerConfig.preset(
        model_args.model_preset, **{**from_tokenizer, **dict(model_args.model_overrides or {})}
    )
    return TransformerForConditionalGeneration(config)


def _check_positions(model: Any, data_args: DataArguments) -> None:
    """Learned position embeddings stop at max_position_embeddings: longer inputs would index past them.
    Relative positions (T5) have no such end."""
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(
        data_args.max_source_length, data_args.max_target_length, data_args.val_max_target_length or 0
    )
    if (
        limit is not None
        and getattr(model.config, "position_embedding", "learned") not in ("sinusoidal", "relative")
        and longest > limit
    ):
        raise ValueError(
            f"the model has {limit} positions but max_source_length/max_target_length ask for {longest}; "
            "lower them, or use a model with more positions (for a new model: "
            'model_overrides {"max_position_embeddings": N})'
        )


def _check_tokenizer_fits(model: Any, tokenizer: Any, path: Path | None) -> None:
    vocab = getattr(model.config, "vocab_size", None)
    where = f"the model at {path}" if path else "the model"
    if vocab is not None and len(tokenizer) > vocab:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} ids but {where} has vocab_size {vocab}: ids past the vocabulary "
            "would crash the embedding lookup; use the tokenizer saved with the model (leave "
            "--tokenizer_name_or_path unset)"
        )
    model_pad = getattr(model.config, "pad_token_id", None)
    if model_pad is not None and tokenizer.pad_token_id is not None and model_pad != tokenizer.pad_token_id:
        raise ValueError(
            f"the tokenizer pads with id {tokenizer.pad_token_id} but {where} with {model_pad}: they were not "
            "trained together; use the tokenizer saved with the model"
        )


def configure_generation(
    model: Any, data_args: DataArguments, *, new_model: bool, training_args: Any = None
) -> None:
    """Save the evaluation/prediction defaults in the model's generation config (and so in output_dir):
    the settings of `--generation_config` (e.g. `no_repeat_ngram_size` for summaries), then the output length
    and `num_beams`, so that `recipes.generate` decodes as the final evaluation did.

    A loaded model keeps the output length it was saved with unless `val_max_target_length` is given."""
    config = model.generation_config
    if training_args is not None and hasattr(training_args, "explicit_generation_settings"):
        for name, value in training_args.explicit_generation_settings().items():
            setattr(config, name, value)
    length = data_args.val_max_target_length or (data_args.max_target_length if new_model else None)
    if length is not None:
        config.max_new_tokens = length
        if getattr(config, "max_length", None) is not None:
            config.max_length = None  # max_new_tokens decides; a stale max_length would cut outputs short
    if data_args.num_beams is not None:
        config.num_beams = data_args.num_beams
    if hasattr(config, "validate"):
        config.validate()
