"""One optimizer update after the gradients of its accumulation window are in: clip, step unless the loss or
the gradient norm is NaN/inf, step the schedule, and keep count of skipped updates and of the loss sums.

A non-finite update is skipped rather than applied (one bad batch must not destroy the weights), counted in
``state.nonfinite_steps``, and training stops with ``NonFiniteLossError`` after
``max_consecutive_nonfinite_steps`` of them in a row.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, NamedTuple

import torch
from torch import nn

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/inf losses or gradients for too many updates in a row."""


class StepOutcome(NamedTuple):
    loss: float  # the window's summed loss
    grad_norm: float  # before clipping
    finite: bool  # False: the update was skipped


def clip_and_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    loss_sum: torch.Tensor,
    max_grad_norm: float | None,
    scaler: torch.amp.GradScaler | None = None,
) -> StepOutcome:
    """Unscale (fp16), clip the gradient norm to ``max_grad_norm`` (None or <= 0: measure only), and step
    unless the loss or the norm is NaN/inf. With a scaler, an inf norm is the scaler's business: it skips the
    step itself and lowers its scale."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    max_norm = max_grad_norm if max_grad_norm and max_grad_norm > 0 else math.inf
    if hasattr(model, "clip_grad_norm_"):  # FSDP shards gradients: it must compute the norm itself
        grad_norm = model.clip_grad_norm_(max_norm)
    else:
        grad_norm = nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm)
    grad_norm = float(grad_norm)  # .item() syncs the device once per update
    loss_value = float(loss_sum)
    finite = math.isfinite(loss_value) and (math.isfinite(grad_norm) or scaler is not None)
    if scaler is not None:
        if finite:
            scaler.step(optimizer)  # skips by itself when fp16 gradients overflowed
        scaler.update()
    elif finite:
        optimizer.step()
    return StepOutcome(loss_value, grad_norm, finite)


def step_scheduler(scheduler: Any) -> None:
    """Step the schedule, also after a skipped update: it follows global_step, so torch's warning about a
    scheduler step without an optimizer step does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        scheduler.step()


def record_update(
    state: Any,
    outcome: StepOutcome,
    *,
    units: int,
    max_consecutive_nonfinite_steps: int | None,
    logging_nan_inf_filter: bool,
) -> None:
    """Book the update in ``state`` (a ``TrainerState`` before its ``global_step`` moves on): the non-finite
    counters, the loss sums for logging (``log_*``, non-finite losses left out with
    ``logging_nan_inf_filter``) and for the final train loss (``total_*``), and the tokens seen."""
    acc = state.loss_accumulators
    if outcome.finite:
        state.consecutive_nonfinite_steps = 0
    else:
        state.nonfinite_steps += 1
        state.consecutive_nonfinite_steps += 1
        logger.warning(
            "step %d: non-finite loss (%s) or gradient norm (%s); update skipped (%d in a row)",
            state.global_step + 1,
            outcome.loss,
            outcome.grad_norm,
            state.consecutive_nonfinite_steps,
        )
        limit = max_consecutive_nonfinite_steps
        if limit and state.consecutive_nonfinite_steps >= limit:
            raise NonFiniteLossError(
                f"{limit} updates in a row had a NaN/inf loss or gradient (last at step "
                f"{state.global_step + 1}); lower learning_rate, set max_grad_norm, use bf16 instead of "
                "fp16, check the data for empty targets, or raise max_consecutive_nonfinite_steps"
            )
    if outcome.finite or not logging_nan_inf_filter:
        acc["log_loss"] = acc.get("log_loss", 0.0) + outcome.loss
        acc["log_units"] = acc.get("log_units", 0) + units
    if outcome.finite:
        acc["total_loss"] = acc.get("total_loss", 0.0) + outcome.loss
        acc["total_units"] = acc.get("total_units", 0) + units
    state.num_input_tokens_seen += units
