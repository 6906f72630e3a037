"""What the trainer, its loop and evaluation need to know about a batch: how many examples it holds, its
labels, and what its loss is summed over.

The loss of a batch is a *sum* over its target tokens (or, for a model trained on other labels, over its
examples); dividing by the count of a whole accumulation window, or of a whole evaluation set, gives a mean
that does not depend on how the examples were cut into batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from s2s.loss import count_target_tokens


def batch_size_of(batch: Mapping[str, Any]) -> int:
    """The number of examples: the first dimension of the batch's first tensor with one."""
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError(f"cannot tell the batch size: no tensor among the batch keys {sorted(batch)}")


def loss_units(batch: Mapping[str, Any], label_names: Sequence[str]) -> int:
    """What the loss of ``batch`` is summed over: its target tokens (``labels`` != -100), or its examples
    for a model trained on other label names (e.g. a classification label); 0 without labels."""
    if batch.get("labels") is not None:
        return count_target_tokens(batch["labels"])
    return batch_size_of(batch) if any(batch.get(name) is not None for name in label_names) else 0


def batch_labels(batch: Mapping[str, Any], label_names: Sequence[str]) -> Any:
    """The batch's labels (a tuple with several ``label_names``), or None unless it has all of them."""
    if not all(batch.get(name) is not None for name in label_names):
        return None
    return batch[label_names[0]] if len(label_names) == 1 else tuple(batch[name] for name in label_names)
