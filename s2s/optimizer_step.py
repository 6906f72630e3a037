"""One optimizer update after the gradients of its accumulation window are in: clip, step unless the loss or
the gradient norm is NaN/inf, step the schedule, and keep the books of skipped updates and of the loss sums.

A non-finite update is skipped rather than applied (one bad batch must not destroy the weights), counted in
``state.nonfinite_steps``, and training stops with ``NonFiniteLossError`` after
``max_consecutive_nonfinite_steps`` of them in a row.

Reading a GPU value on the host (``.item()``, ``float(t)``, ``if t:``) waits until the device has finished
all the work queued so far, and the device then idles while Python prepares the next step. So the update
stays on the device: ``clip_and_step_on_device`` decides "finite or not" as a device tensor and skips the
update without reading it, through the ``found_inf`` input of torch's fused optimizers (the one
``torch.amp.GradScaler`` uses); other optimizers cost one host read per update. ``UpdateLedger`` sums the
losses, counts and flags on the device and reads them in one go every ``settle_every`` updates (the trainer
passes ``logging_steps``) and whenever the trainer logs or saves: so the consecutive-non-finite stop is
checked at those points, and a run of bad updates is noticed at the next one (the updates in between were
skipped, so the weights are unharmed; only their compute is lost).
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/inf losses or gradients for too many updates in a row."""


class DeviceOutcome(NamedTuple):
    """One update as device tensors (0-dim), so that producing it reads nothing on the host."""

    loss: Tensor  # the window's summed loss
    grad_norm: Tensor  # before clipping
    finite: Tensor  # bool; False: the update was skipped


class StepOutcome(NamedTuple):
    """One update read on the host."""

    loss: float  # the window's summed loss
    grad_norm: float  # before clipping
    finite: bool  # False: the update was skipped


def clip_and_step_on_device(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    loss_sum: Tensor,
    max_grad_norm: float | None,
    scaler: torch.amp.GradScaler | None = None,
) -> DeviceOutcome:
    """Unscale (fp16), clip the gradient norm to ``max_grad_norm`` (None or <= 0: measure only), and step
    unless the loss or the norm is NaN/inf, without reading anything on the host when the optimizer is a
    fused torch one (``optim="adamw_torch_fused"``, the default). With a scaler an inf norm is the scaler's
    business (fp16 overflows are routine): it skips the step itself, lowers its scale, and the update is not
    counted as non-finite; a NaN/inf loss is handed to the scaler as an overflow, so it skips that step too.
    """
    loss_sum = loss_sum.detach()
    loss_finite = torch.isfinite(loss_sum)
    if scaler is not None:
        _report_loss_as_overflow(optimizer, loss_finite)
        scaler.unscale_(optimizer)
    grad_norm = _clip_grad_norm(model, max_grad_norm).detach()
    if scaler is not None:
        scaler.step(optimizer)  # skips by itself when the gradients (or the loss, see above) overflowed
        scaler.update()
        return DeviceOutcome(loss_sum, grad_norm, loss_finite)
    finite = loss_finite & torch.isfinite(grad_norm)
    step_unless(optimizer, skip=~finite)
    return DeviceOutcome(loss_sum, grad_norm, finite)


def clip_and_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    loss_sum: Tensor,
    max_grad_norm: float | None,
    scaler: torch.amp.GradScaler | None = None,
) -> StepOutcome:
    """``clip_and_step_on_device``, read on the host (one device sync): for a loop that wants plain numbers
    at every update. The trainer books device outcomes in an ``UpdateLedger`` instead."""
    outcome = clip_and_step_on_device(
        model, optimizer, loss_sum=loss_sum, max_grad_norm=max_grad_norm, scaler=scaler
    )
    device = outcome.loss.device
    loss, grad_norm, finite = torch.stack([t.to(device, torch.float64) for t in outcome]).tolist()
    return StepOutcome(loss, grad_norm, bool(finite))


def _clip_grad_norm(model: nn.Module, max_grad_norm: float | None) -> Tensor:
    max_norm = max_grad_norm if max_grad_norm and max_grad_norm > 0 else math.inf
    if hasattr(model, "clip_grad_norm_"):  # FSDP shards gradients: it must compute the norm itself
        return torch.as_tensor(model.clip_grad_norm_(max_norm))
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if math.isinf(max_norm):  # measure only: scaling every gradient by 1.0 would be a wasted pass
        return nn.utils.get_total_norm(grads)
    # clip_grad_norm_ scales by min(1, max_norm / norm) on the device, reading nothing
    return nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm)


def _report_loss_as_overflow(optimizer: torch.optim.Optimizer, loss_finite: Tensor) -> None:
    """Make one gradient entry NaN when the loss is NaN/inf, so the scaler's own overflow check, which looks
    at the gradients only, skips the step too (adding 0 otherwise). A device-side way to say "skip" to
    ``GradScaler.step``, which takes no flag of ours."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.grad is not None:
                first = param.grad.view(-1)[:1]
                first.add_(torch.where(loss_finite, 0.0, math.nan).to(first.dtype))
                return


def takes_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` reads ``optimizer.found_inf`` and skips itself when it is 1: torch's
    fused Adam/AdamW/SGD/Adagrad (``_step_supports_amp_scaling``; GradScaler relies on the same contract).
    Optimizers that want a ``grad_scaler`` argument instead (the older contract) are not among them."""
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        return False
    return "grad_scaler" not in inspect.signature(optimizer.step).parameters


def step_unless(optimizer: torch.optim.Optimizer, *, skip: Tensor) -> None:
    """``optimizer.step()`` unless ``skip`` (a bool device tensor): inside the fused kernel without a host
    read where the optimizer takes ``found_inf`` (its step counts are restored too), else after one read."""
    if takes_found_inf(optimizer):
        optimizer.found_inf = skip.to(torch.float32)
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not bool(skip):  # one host read per update
        optimizer.step()


def step_scheduler(scheduler: Any) -> None:
    """Step the schedule, also after a skipped update: it follows global_step, so torch's warning about a
    scheduler step without an optimizer step does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        scheduler.step()


# Positions in the ledger's device vector (float64: exact for counts up to 2**53).
_LOG_LOSS, _LOG_UNITS, _LOG_UPDATES, _TOTAL_LOSS, _TOTAL_UNITS, _TOTAL_UPDATES = range(6)
_SKIPPED, _RUN, _LIMIT_STEP, _LAST_NORM = range(6, 10)
_INTERVAL_SUMS = slice(_LOG_LOSS, _SKIPPED + 1)  # zeroed at each settlement


class UpdateLedger:
    """The books of the updates since the last settlement, kept on the device and read in one go.

    ``record`` adds one update (a ``DeviceOutcome``, or plain numbers) without reading the device;
    ``settle`` reads everything once and folds it into the ``TrainerState``: the loss sums for logging
    (``log_*``, non-finite losses left out with ``logging_nan_inf_filter``) and for the final train loss
    (``total_*``), the non-finite counters, the grad norm of the last finite update, and the stop after
    ``max_consecutive_nonfinite_steps`` bad updates in a row. ``record`` settles by itself every
    ``settle_every`` updates, so the stop is checked at least that often whatever the trainer logs."""

    def __init__(
        self,
        *,
        max_consecutive_nonfinite_steps: int | None,
        logging_nan_inf_filter: bool,
        settle_every: int = 1,
    ) -> None:
        if settle_every < 1:
            raise ValueError(f"settle_every must be >= 1, got {settle_every}")
        self.limit = max_consecutive_nonfinite_steps or 0
        self.filter_nonfinite_logs = logging_nan_inf_filter
        self.settle_every = settle_every
        self.last_grad_norm: float | None = None
        """The gradient norm of the last finite update, as of the last settlement."""
        self._books: Tensor | None = None  # created on the device of the first outcome
        self._pending = 0
        self._first_pending_step = 0

    def record(self, state: Any, outcome: DeviceOutcome | StepOutcome, *, units: int) -> None:
        """Book one update of ``units`` loss units (target tokens) in ``state`` (a ``TrainerState`` before its
        ``global_step`` moves on). Settles (one host read) when ``settle_every`` updates are pending."""
        step = state.global_step + 1
        loss, grad_norm, finite = self._as_tensors(outcome)
        books = self._open_books(state, device=loss.device)
        loss = loss.double()
        zero = torch.zeros((), dtype=torch.float64, device=books.device)
        logged = torch.ones_like(finite) if not self.filter_nonfinite_logs else finite
        run = torch.where(finite, zero, books[_RUN] + 1)
        reached = (run >= self.limit) & (books[_LIMIT_STEP] < 0) if self.limit else torch.zeros_like(finite)
        update = torch.stack(
            [
                torch.where(logged, loss, zero),
                torch.where(logged, float(units), zero),
                logged.double(),
                torch.where(finite, loss, zero),
                torch.where(finite, float(units), zero),
                finite.double(),
                (~finite).double(),
            ]
        )
        books[_INTERVAL_SUMS] += update
        books[_RUN] = run
        books[_LIMIT_STEP] = torch.where(reached, float(step), books[_LIMIT_STEP])
        usable_norm = finite & torch.isfinite(grad_norm)
        books[_LAST_NORM] = torch.where(usable_norm, grad_norm.double(), books[_LAST_NORM])
        state.num_input_tokens_seen += units
        if self._pending == 0:
            self._first_pending_step = step
        self._pending += 1
        if self._pending >= self.settle_every:
            self.settle(state)

    def settle(self, state: Any) -> None:
        """Read the pending books (one host read) into ``state``; raise ``NonFiniteLossError`` when a run of
        ``max_consecutive_nonfinite_steps`` bad updates was reached since the last settlement."""
        if self._books is None or self._pending == 0:
            return
        books = self._books.tolist()
        self._books[_INTERVAL_SUMS] = 0.0
        self._books[_LIMIT_STEP] = -1.0
        first_step, last_step = self._first_pending_step, self._first_pending_step + self._pending - 1
        self._pending = 0
        acc = state.loss_accumulators
        if books[_LOG_UPDATES]:
            acc["log_loss"] = acc.get("log_loss", 0.0) + books[_LOG_LOSS]
            acc["log_units"] = acc.get("log_units", 0) + int(books[_LOG_UNITS])
        if books[_TOTAL_UPDATES]:
            acc["total_loss"] = acc.get("total_loss", 0.0) + books[_TOTAL_LOSS]
            acc["total_units"] = acc.get("total_units", 0) + int(books[_TOTAL_UNITS])
        if not math.isnan(books[_LAST_NORM]):
            self.last_grad_norm = books[_LAST_NORM]
        skipped = int(books[_SKIPPED])
        state.nonfinite_steps += skipped
        state.consecutive_nonfinite_steps = int(books[_RUN])
        if skipped:
            logger.warning(
                "%d update(s) between steps %d and %d skipped for a non-finite loss or gradient norm "
                "(%d in a row now)",
                skipped,
                first_step,
                last_step,
                state.consecutive_nonfinite_steps,
            )
        if books[_LIMIT_STEP] >= 0:
            raise NonFiniteLossError(
                f"{self.limit} updates in a row had a NaN/inf loss or gradient (the run reached {self.limit} at "
                f"step {int(books[_LIMIT_STEP])}); lower learning_rate, set max_grad_norm, use bf16 instead of "
                "fp16, check the data for empty targets, or raise max_consecutive_nonfinite_steps"
            )

    def _open_books(self, state: Any, *, device: torch.device) -> Tensor:
        if self._books is None or self._books.device != device:
            books = torch.zeros(_LAST_NORM + 1, dtype=torch.float64, device=device)
            books[_RUN] = state.consecutive_nonfinite_steps  # a resumed run continues its count
            books[_LIMIT_STEP] = -1.0
            books[_LAST_NORM] = math.nan
            self._books = books
        return self._books

    @staticmethod
    def _as_tensors(outcome: DeviceOutcome | StepOutcome) -> tuple[Tensor, Tensor, Tensor]:
        loss = torch.as_tensor(outcome.loss)
        grad_norm = torch.as_tensor(outcome.grad_norm, device=loss.device)
        finite = torch.as_tensor(outcome.finite, device=loss.device).bool()
        return loss, grad_norm, finite


def record_update(
    state: Any,
    outcome: DeviceOutcome | StepOutcome,
    *,
    units: int,
    max_consecutive_nonfinite_steps: int | None,
    logging_nan_inf_filter: bool,
) -> None:
    """Book one update in ``state`` at once (see ``UpdateLedger``, which settles here after every update)."""
    ledger = UpdateLedger(
        max_consecutive_nonfinite_steps=max_consecutive_nonfinite_steps,
        logging_nan_inf_filter=logging_nan_inf_filter,
    )
    ledger.record(state, outcome, units=units)
