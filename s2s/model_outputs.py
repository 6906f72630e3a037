"""Reading a model's outputs, whatever their shape: a ``ModelOutput``-like object or dict, a tuple, or a
bare tensor. The trainer needs the loss and logits for training, and the rest for metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def split_outputs(outputs: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(loss, logits)`` of a model's output: a dict-like/dataclass output with those fields, a tuple
    ``(loss, logits, ...)`` whose first item is a scalar, a tuple ``(logits, ...)``, or a bare tensor."""
    if isinstance(outputs, torch.Tensor):
        return None, outputs
    if isinstance(outputs, (tuple, list)):
        if outputs and isinstance(outputs[0], torch.Tensor) and outputs[0].dim() == 0:
            return outputs[0], outputs[1] if len(outputs) > 1 else None
        return None, outputs[0] if outputs else None
    if isinstance(outputs, Mapping) or hasattr(outputs, "keys"):
        keys = list(outputs.keys())
        return (outputs["loss"] if "loss" in keys else None), (
            outputs["logits"] if "logits" in keys else None
        )
    return getattr(outputs, "loss", None), getattr(outputs, "logits", None)


def logits_for_metrics(outputs: Any, ignore_keys: list[str], *, has_loss: bool) -> Any:
    """The model outputs worth keeping for metrics: every field except the loss and ``ignore_keys``; a
    single tensor when only one is left."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, (tuple, list)):
        has_loss = has_loss and split_outputs(outputs)[0] is not None
        values = tuple(outputs[1:] if has_loss else outputs)
    elif isinstance(outputs, Mapping) or hasattr(outputs, "items"):
        values = tuple(
            v for k, v in outputs.items() if k not in ignore_keys and k != "loss" and v is not None
        )
    else:
        values = (outputs.logits,)
    return values[0] if len(values) == 1 else values
