"""Hugging Face model folders in the recipes: telling one from ours, and loading it on the engine the user
chose. By default the folder is imported into our `TransformerForConditionalGeneration` (no `transformers`
needed for the model); `--model_engine transformers` keeps Hugging Face's own model, and only then is
`transformers` imported for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENGINES = ("s2s", "transformers")


def is_hf_model_dir(path: Path) -> bool:
    """A Hugging Face model folder: config.json whose model_type is not ours."""
    from s2s.models import TransformerConfig

    model_type = _model_type(path)
    return model_type is not None and model_type != TransformerConfig.model_type


def is_s2s_model_dir(path: Path) -> bool:
    """A folder our `from_pretrained` reads: config.json with our model_type."""
    from s2s.models import TransformerConfig

    return _model_type(path) == TransformerConfig.model_type


def _model_type(path: Path) -> str | None:
    config = path / "config.json"
    if not config.is_file():
        return None
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError):
        return None
    return model_type if isinstance(model_type, str) else None


def holds_hf_tokenizer(path: Path) -> bool:
    """A folder whose tokenizer `transformers` saved: its tokenizer_config.json names a tokenizer class and no
    backend of ours (ours always records its backend). A recipe that trains an imported folder saves the
    folder's tokenizer this way beside our model, so the model folder alone does not tell."""
    config = path / "tokenizer_config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "backend" not in data and "tokenizer_class" in data


def import_transformers(path: Path) -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError(
            f"{path} is a Hugging Face folder; loading it as a Hugging Face model (or its Hugging Face "
            "tokenizer) needs transformers (pip install transformers)"
        ) from None
    return transformers


def load_model_folder(path: Path, engine: str) -> Any:
    """The model saved in `path` on `engine`: an s2s folder as ours; a Hugging Face folder imported into ours
    ("s2s") or as Hugging Face's own model ("transformers")."""
    from s2s.models import TransformerForConditionalGeneration

    if engine not in ENGINES:
        raise ValueError(f"--model_engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if not is_hf_model_dir(path):
        if engine == "transformers":
            raise ValueError(
                f"--model_engine transformers: {path} holds an s2s model (config.json model_type "
                f"{_model_type(path)!r}), which transformers cannot load; drop --model_engine transformers, "
                "or export it first with s2s.models.to_transformers"
            )
        return TransformerForConditionalGeneration.from_pretrained(path)
    if engine == "transformers":
        transformers = import_transformers(path)
        return transformers.AutoModelForSeq2SeqLM.from_pretrained(str(path), local_files_only=True)
    return import_hf_folder(path)


def import_hf_folder(path: Path) -> Any:
    """The folder as our model, with its generation settings (decoder start, forced BOS, lengths, beams);
    a family we cannot stand in for is refused with the way to keep it as it is."""
    from s2s.models import UnsupportedModelError, from_transformers

    _refuse_pickled_weights(path)
    try:
        model = from_transformers(path)
    except UnsupportedModelError as err:
        raise UnsupportedModelError(
            f"{err}; --model_engine transformers keeps the Hugging Face model as it is (needs transformers)"
        ) from err
    return model.train()  # the mode of a model from from_pretrained, so both kinds of folder load alike


def _refuse_pickled_weights(path: Path) -> None:
    """The recipes read weights through safetensors only: a pytorch_model.bin is a pickle, which can run code
    when loaded. The import's own refusal points at its Python opt-in, which has no command-line form here."""
    from s2s.models.hf_folder import PICKLE_FILE, PICKLE_INDEX_FILE, SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE

    if any((path / name).is_file() for name in (SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE)):
        return
    pickled = [path / name for name in (PICKLE_FILE, PICKLE_INDEX_FILE) if (path / name).is_file()]
    if pickled:
        raise ValueError(
            f"{pickled[0]} is a pickle, which can run arbitrary code when loaded, and the recipes read weights "
            "only from safetensors: re-save the folder once with transformers "
            "(AutoModelForSeq2SeqLM.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)), "
            "or import it in Python with s2s.models.from_transformers(folder, allow_pickle=True) and "
            "save_pretrained the result"
        )
