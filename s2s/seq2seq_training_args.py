"""Seq2SeqTrainingArguments: TrainingArguments plus the settings of evaluation by generation."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2s.training_args import TrainingArguments

if TYPE_CHECKING:
    from s2s.generation import GenerationConfig


@dataclass
class Seq2SeqTrainingArguments(TrainingArguments):
    """Arguments of `s2s.Seq2SeqTrainer`: all of `TrainingArguments`, plus the sampler choice and the
    generation settings used when evaluating with `predict_with_generate`."""

    sortish_sampler: bool = False
    """Train with `samplers.SortishSampler`: chunks of shuffled examples sorted by length, so batches need
    little padding but the order stays random. (In Hugging Face this flag does nothing; here it does.)"""

    predict_with_generate: bool = False
    """Evaluate and predict by generating with `model.generate` (needed for BLEU/ROUGE), instead of taking
    the argmax of teacher-forced logits."""

    generation_max_length: int | None = None
    """`max_length` for generation during evaluation and prediction; defaults to the generation config's."""

    generation_num_beams: int | None = None
    """`num_beams` for generation during evaluation and prediction; defaults to the generation config's."""

    generation_config: str | dict[str, Any] | None = None
    """Generation settings for evaluation: a `GenerationConfig`, a dict (or JSON string) of its fields, or the
    path to a saved one (a folder with generation_config.json, or the JSON file); checked at construction.
    Call kwargs,
    `generation_max_length` and `generation_num_beams` take precedence over it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sortish_sampler and self.group_by_length:
            raise ValueError(
                "sortish_sampler and group_by_length both choose the training order; keep one of them"
            )
        if self.sortish_sampler and self.max_tokens_per_batch is not None:
            raise ValueError(
                "sortish_sampler and max_tokens_per_batch both choose the training batches; keep one of them "
                "(max_tokens_per_batch already batches examples of similar length)"
            )
        for name in ("generation_max_length", "generation_num_beams"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.generation_config = self._check_generation_config(self.generation_config)
        self.resolve_generation_config()  # a bad setting fails now, not after an hour of training

    @staticmethod
    def _check_generation_config(value: Any) -> Any:
        """Early checks that need no `s2s.generation`: JSON strings become dicts, paths must exist."""
        if value is None or isinstance(value, dict):
            return value
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as err:
                raise ValueError(f"generation_config is not valid JSON ({err}): {value!r}") from None
            if not isinstance(parsed, dict):
                raise ValueError(f"generation_config must be a JSON object, got {value!r}")
            return parsed
        if isinstance(value, str | os.PathLike):
            path = Path(value)
            if not path.exists():
                raise ValueError(
                    f"generation_config={os.fspath(value)!r}: no such file or folder; give the folder holding "
                    "generation_config.json, the JSON file itself, or a dict of settings"
                )
            return os.fspath(value)
        if hasattr(value, "to_dict") and hasattr(value, "validate"):
            return value  # a GenerationConfig object
        raise ValueError(
            f"generation_config must be a GenerationConfig, a dict, a JSON string or a path, got "
            f"{type(value).__name__}"
        )

    def explicit_generation_settings(self) -> dict[str, Any]:
        """The settings `generation_config` sets explicitly: all keys of a dict or saved file, or the fields of
        a config object that differ from the defaults. Only these override a model's own generation config."""
        value = self.generation_config
        if value is None:
            return {}
        if isinstance(value, dict):
            return dict(value)
        config = self.resolve_generation_config()
        if isinstance(value, str):
            from s2s.generation.configuration import CONFIG_NAME

            path = Path(value)
            data = json.loads((path / CONFIG_NAME if path.is_dir() else path).read_text())
            return {k: getattr(config, k) for k in data if hasattr(config, k)}
        default = type(config)().to_dict()
        return {k: v for k, v in config.to_dict().items() if k in default and default[k] != v}

    def resolve_generation_config(self) -> GenerationConfig | None:
        """`generation_config` as a validated `s2s.generation.GenerationConfig` (None when unset): loads a
        path, builds one from a dict (unknown keys are an error), or validates the object given. The
        trainer calls this when it is built, so a bad setting fails before training starts."""
        value = self.generation_config
        if value is None:
            return None
        from s2s.generation import GenerationConfig  # imported here: s2s.generation may import torch models

        if isinstance(value, str):
            config = GenerationConfig.from_pretrained(value)
        elif isinstance(value, dict):
            config = GenerationConfig.from_dict(value)
        else:
            config = value
        config.validate()
        return config
