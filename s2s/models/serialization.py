"""Weights to and from `model.safetensors` (no pickle), with errors that name the file, tensor and shapes."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_NAME = "model.safetensors"


def save_weights(model: nn.Module, directory: Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write the state dict to `directory/model.safetensors`.

    Tied weights are stored once: the model keeps one parameter for a shared matrix (no alias in its state
    dict), and any alias that would still appear (same storage) is dropped here and restored by the model."""
    state: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in seen:
            continue
        seen[key] = name
        state[name] = tensor.detach().cpu().contiguous()
    path = directory / WEIGHTS_NAME
    save_file(state, str(path), metadata={"format": "pt", **(metadata or {})})
    return path


def load_weights(model: nn.Module, directory: Path) -> None:
    """Load `directory/model.safetensors` into `model`, strictly: every tensor present, same shapes."""
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no weights at {path}; save the model with save_pretrained (weights are read only from "
            f"{WEIGHTS_NAME}, never from pickled .bin files)"
        )
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error type (and OSError) for corrupt files
        raise ValueError(f"{path} is not a readable safetensors file ({err}); re-save the model") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the model built from its config.json: missing tensors {missing[:10]}, "
            f"unexpected tensors {unexpected[:10]}; the config and weights come from different models"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)} in the file but "
                f"{tuple(expected[name].shape)} in the model built from config.json; the config and the "
                "weights come from different models"
            )
    model.load_state_dict(state, strict=True)
