"""Telling a Hugging Face model folder from one of ours, and importing `transformers` only for one: s2s never
needs it otherwise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def is_hf_model_dir(path: Path) -> bool:
    """A Hugging Face model folder: config.json whose model_type is not ours."""
    from s2s.models import TransformerConfig

    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError):
        return False
    return model_type is not None and model_type != TransformerConfig.model_type


def import_transformers(path: Path) -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError(
            f"{path} is a Hugging Face model folder; loading it needs transformers (pip install transformers)"
        ) from None
    return transformers
