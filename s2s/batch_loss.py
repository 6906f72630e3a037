"""The summed loss of one batch: what goes into the model's forward, and where the sum comes from.

The trainer normalises by the target tokens of a whole accumulation window, so it needs each batch's loss
*summed* over its tokens. A model that computes its own (mean) loss gives it times the batch's token count;
otherwise, or when the model's loss cannot be the right one (label smoothing, which the model does not know
about; a batch whose ``decoder_input_ids`` the model would rebuild from the labels), the sum comes from the
logits through ``token_cross_entropy_sum``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from s2s.batch import loss_units
from s2s.dataloaders import forward_argument_names
from s2s.loss import IGNORE_INDEX, token_cross_entropy_sum
from s2s.model_outputs import split_outputs


def forward_inputs(
    model: nn.Module, batch: dict[str, Any], *, label_smoothing: float, module: nn.Module
) -> tuple[dict[str, Any], bool]:
    """What goes into ``model(**inputs)`` for ``batch``, and whether the loss is computed from the logits
    (True: with label smoothing, a batch that already carries ``decoder_input_ids``, or a model whose forward
    takes no ``labels``, the labels stay out of forward). An encoder-decoder builds its decoder inputs from the
    labels it is given, so without them they are built here (``module``, the user's model inside any wrapper,
    has ``prepare_decoder_input_ids_from_labels``), or it would decode from nothing."""
    labels = batch.get("labels")
    accepted = forward_argument_names(model)
    own_loss = labels is not None and (
        label_smoothing > 0
        or "decoder_input_ids" in batch
        or (accepted is not None and "labels" not in accepted)
    )
    if not own_loss:
        return batch, False
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    prepare = getattr(module, "prepare_decoder_input_ids_from_labels", None)
    if "decoder_input_ids" not in batch and prepare is not None:
        inputs["decoder_input_ids"] = prepare(labels=labels)
    return inputs, True


def summed_loss(
    model: nn.Module,
    outputs: Any,
    batch: dict[str, Any],
    *,
    from_logits: bool,
    label_smoothing: float,
    label_names: Sequence[str],
) -> torch.Tensor:
    """The loss of ``batch`` summed over its target tokens (or examples, see ``loss_units``): from the logits
    of ``outputs`` when ``from_logits`` (or when the model returned no loss), else the model's mean loss
    times the count. Errors name ``model`` and what its outputs lack."""
    labels = batch.get("labels")
    model_loss, logits = split_outputs(outputs)
    if from_logits or (labels is not None and model_loss is None):
        if logits is None:
            raise ValueError(
                f"{type(model).__name__} returned neither a loss nor logits; cannot compute a loss"
            )
        return token_cross_entropy_sum(logits, labels, label_smoothing=label_smoothing)
    if model_loss is None:
        raise ValueError(
            f"{type(model).__name__} returned no loss and the batch has no 'labels' "
            f"(label_names={label_names}); add labels or return a loss"
        )
    if labels is not None:  # counted on the device: int() of the count would wait for the forward pass
        return model_loss * labels.ne(IGNORE_INDEX).sum()
    return model_loss * loss_units(batch, label_names)
