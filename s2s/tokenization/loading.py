"""`load_tokenizer`: pick the backend from the files a directory holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from s2s.tokenization.base import CONFIG_FILE, FORMAT_VERSION, Tokenizer
from s2s.tokenization.sentencepiece_backend import MODEL_FILE as SP_FILE
from s2s.tokenization.sentencepiece_backend import SentencePieceTokenizer
from s2s.tokenization.tokenizers_backend import MODEL_FILE as HF_FILE
from s2s.tokenization.tokenizers_backend import HFTokenizer

BACKENDS: dict[str, type[Tokenizer]] = {"sentencepiece": SentencePieceTokenizer, "tokenizers": HFTokenizer}
OVERRIDABLE = {"model_max_length", "padding_side", "num_threads"}
EXPECTED = f"{CONFIG_FILE} with {SP_FILE} or {HF_FILE}, as written by Tokenizer.save_pretrained"


def load_tokenizer(path: str | Path, **overrides: Any) -> Tokenizer:
    """Load a tokenizer from a directory written by `save_pretrained`, or from a bare model file.

    A directory is read through its tokenizer_config.json; without one, a lone `*.model` (sentencepiece) or
    `tokenizer.json` is used. A file path may name a sentencepiece `.model` or a `tokenizer.json` directly.
    `overrides` (e.g. `model_max_length=256`) replace the saved settings.
    """
    path = Path(path)
    if path.is_file():
        return _load_bare_file(path, overrides)
    if not path.exists():
        raise FileNotFoundError(
            f"tokenizer path {path} does not exist; expected a directory holding {EXPECTED}"
        )
    config_path = path / CONFIG_FILE
    if config_path.is_file():
        config = _read_config(config_path)
        unknown = sorted(set(overrides) - OVERRIDABLE)
        if unknown:
            raise TypeError(
                f"load_tokenizer got unknown settings {unknown}; it accepts {sorted(OVERRIDABLE)}"
            )
        config.update(overrides)
        backend = config.get("backend")
        if backend not in BACKENDS:
            raise ValueError(
                f"{config_path}: unknown backend {backend!r}; expected one of {sorted(BACKENDS)}"
            )
        model_path = path / config.get("model_file", "")
        if not model_path.is_file():
            raise FileNotFoundError(
                f"{config_path} names the model file {config.get('model_file')!r}, but {model_path} is missing"
            )
        tokenizer = BACKENDS[backend]._from_saved(model_path, config)
        _check_special_ids(tokenizer, config, config_path)
        return tokenizer
    candidates = [path / HF_FILE, *sorted(path.glob("*.model"))]
    found = [c for c in candidates if c.is_file()]
    if len(found) == 1:
        return _load_bare_file(found[0], overrides)
    if not found:
        raise FileNotFoundError(f"no tokenizer in {path}: expected {EXPECTED}")
    raise ValueError(
        f"{path} holds several tokenizer files ({', '.join(f.name for f in found)}) and no {CONFIG_FILE} "
        "to choose between them; load one file directly with load_tokenizer(path / name)"
    )


def _load_bare_file(path: Path, overrides: dict[str, Any]) -> Tokenizer:
    if path.name.endswith(".json"):
        return HFTokenizer.from_file(path, **overrides)
    return SentencePieceTokenizer.from_model_file(path, **overrides)


def _read_config(config_path: Path) -> dict[str, Any]:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{config_path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
            "re-save the tokenizer with save_pretrained"
        ) from err
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object, got {type(config).__name__}")
    version = config.get("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise ValueError(f"{config_path} has format_version {version}; this s2s reads up to {FORMAT_VERSION}")
    return config


def _check_special_ids(tokenizer: Tokenizer, config: dict[str, Any], config_path: Path) -> None:
    """A model file swapped under its config would silently shift every id; refuse it."""
    saved = config.get("special_token_ids") or {}
    actual = {
        "pad_token": tokenizer.pad_token_id,
        "unk_token": tokenizer.unk_token_id,
        "bos_token": tokenizer.bos_token_id,
        "eos_token": tokenizer.eos_token_id,
    }
    wrong = {
        name: (saved[name], actual[name]) for name in saved if name in actual and saved[name] != actual[name]
    }
    if wrong:
        details = ", ".join(f"{name} saved as {a} but the model has {b}" for name, (a, b) in wrong.items())
        raise ValueError(f"{config_path} does not match its model file: {details}")
