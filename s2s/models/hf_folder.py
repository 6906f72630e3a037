"""Reading and writing the files of a Hugging Face model folder without `transformers`: config.json, the
weights (safetensors, single or sharded; a pickled .bin only on request), generation_config.json, and the
size of the tokenizer's vocabulary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from s2s.json_files import read_json_object

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
PICKLE_INDEX_FILE = "pytorch_model.bin.index.json"


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def read_config(folder: Path) -> dict[str, Any]:
    return read_json_object(
        folder / CONFIG_FILE,
        missing=f"{folder} has no {CONFIG_FILE}; pass the folder of a Hugging Face model saved with save_pretrained",
    )


def read_generation_config(folder: Path) -> dict[str, Any] | None:
    """generation_config.json as a dict, or None when the folder has none."""
    path = folder / GENERATION_CONFIG_FILE
    return read_json_object(path) if path.is_file() else None


def read_weights(folder: Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weights, by name.

    Looked for in this order: model.safetensors, model.safetensors.index.json (shards listed in its
    weight_map), then pytorch_model.bin (or its index), which is a pickle: it can run code when loaded, so it is
    read only with `allow_pickle=True`, and then with `torch.load(weights_only=True)`."""
    single, index = folder / SAFETENSORS_FILE, folder / SAFETENSORS_INDEX_FILE
    if single.is_file():
        return _load_safetensors(single)
    if index.is_file():
        return _load_shards(index, _load_safetensors)
    pickled = [path for path in (folder / PICKLE_FILE, folder / PICKLE_INDEX_FILE) if path.is_file()]
    if pickled:
        if not allow_pickle:
            raise ValueError(
                f"{pickled[0]} is a pickle, which can run arbitrary code when loaded; it is read only with "
                "allow_pickle=True (then through torch.load(weights_only=True)). Better: re-save the model as "
                "safetensors (save_pretrained(..., safe_serialization=True))"
            )
        if pickled[0].name == PICKLE_INDEX_FILE:
            return _load_shards(pickled[0], _load_pickle)
        return _load_pickle(pickled[0])
    raise FileNotFoundError(
        f"{folder} holds no weights: expected {SAFETENSORS_FILE} or {SAFETENSORS_INDEX_FILE} "
        f"(or {PICKLE_FILE} with allow_pickle=True)"
    )


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error type (and OSError) for corrupt files
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from err


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} could not be read with torch.load(weights_only=True) ({err})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return state


def _load_shards(index: Path, load: Any) -> dict[str, torch.Tensor]:
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index}: expected a non-empty 'weight_map' of tensor name -> shard file")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        path = index.parent / shard
        if not path.is_file():
            raise FileNotFoundError(f"{index} lists the shard {shard}, which is not in {index.parent}")
        state.update(load(path))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise ValueError(f"{index}: tensors {missing[:5]} are listed but not in their shard files")
    return state


def write_weights(folder: Path, state: dict[str, torch.Tensor]) -> Path:
    path = folder / SAFETENSORS_FILE
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def tokenizer_vocabulary_size(folder: Path) -> tuple[int, Path] | None:
    """(number of token ids the folder's tokenizer can produce, the file that says so), or None when the
    folder holds no tokenizer file this can read (tokenizer.json, or vocab.json of sentencepiece tokenizers)."""
    path = folder / "tokenizer.json"
    if path.is_file():
        data = read_json_object(path)
        vocab = (data.get("model") or {}).get("vocab")
        ids: list[int] = []
        if isinstance(vocab, dict):
            ids += [int(i) for i in vocab.values()]
        elif isinstance(vocab, list):  # unigram models: a list of (piece, score)
            ids.append(len(vocab) - 1)
        ids += [int(token["id"]) for token in data.get("added_tokens") or [] if "id" in token]
        return (max(ids) + 1, path) if ids else None
    path = folder / "vocab.json"
    if path.is_file():
        vocab = read_json_object(path)
        return (max(int(i) for i in vocab.values()) + 1, path) if vocab else None
    return None
