"""s2s.optimizer_step on its own: a non-finite update is skipped and counted, the limit stops training, and
the loss sums keep (or filter) what the logs and the final train loss should see."""

import math

import pytest
import torch
from torch import nn

from s2s.callbacks import TrainerState
from s2s.optimizer_step import (
    DeviceOutcome,
    NonFiniteLossError,
    StepOutcome,
    UpdateLedger,
    clip_and_step,
    clip_and_step_on_device,
    record_update,
    takes_found_inf,
)


def _model_with_grad(value: float) -> tuple[nn.Linear, torch.optim.Optimizer]:
    model = nn.Linear(2, 1, bias=False)
    model.weight.grad = torch.full_like(model.weight, value)
    return model, torch.optim.SGD(model.parameters(), lr=1.0)


def test_finite_update_is_clipped_and_applied():
    model, optimizer = _model_with_grad(3.0)  # norm 3 * sqrt(2)
    before = model.weight.detach().clone()
    outcome = clip_and_step(model, optimizer, loss_sum=torch.tensor(2.0), max_grad_norm=1.0)
    assert outcome.finite and outcome.grad_norm == pytest.approx(3 * math.sqrt(2))
    assert torch.linalg.vector_norm(before - model.weight.detach()).item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize(("grad", "loss"), [(float("nan"), 1.0), (1.0, float("inf"))])
def test_nonfinite_update_leaves_the_weights_alone(grad, loss):
    model, optimizer = _model_with_grad(grad)
    before = model.weight.detach().clone()
    outcome = clip_and_step(model, optimizer, loss_sum=torch.tensor(loss), max_grad_norm=None)
    assert not outcome.finite
    assert torch.equal(model.weight.detach(), before)


def test_record_update_counts_filters_and_stops():
    state = TrainerState()
    options = dict(max_consecutive_nonfinite_steps=2, logging_nan_inf_filter=True)
    record_update(state, StepOutcome(4.0, 1.0, True), units=8, **options)
    record_update(state, StepOutcome(float("nan"), 1.0, False), units=5, **options)
    acc = state.loss_accumulators
    assert (acc["log_loss"], acc["log_units"], acc["total_loss"], acc["total_units"]) == (4.0, 8, 4.0, 8)
    assert state.nonfinite_steps == 1 and state.num_input_tokens_seen == 13
    record_update(state, StepOutcome(1.0, 1.0, True), units=2, **options)
    assert state.consecutive_nonfinite_steps == 0  # a good update resets the run
    record_update(state, StepOutcome(float("nan"), 1.0, False), units=1, **options)
    with pytest.raises(NonFiniteLossError, match="2 updates in a row"):
        record_update(state, StepOutcome(float("inf"), 1.0, False), units=1, **options)


def test_unfiltered_logging_keeps_the_nonfinite_loss():
    state = TrainerState()
    record_update(
        state,
        StepOutcome(float("nan"), 1.0, False),
        units=3,
        max_consecutive_nonfinite_steps=None,
        logging_nan_inf_filter=False,
    )
    assert math.isnan(state.loss_accumulators["log_loss"]) and "total_loss" not in state.loss_accumulators


# ------------------------------------------------------------------------- device-side skipping and books
def _nan_in_the_middle(optimizer_factory) -> tuple[nn.Linear, torch.optim.Optimizer, list[bool]]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = optimizer_factory(model.parameters())
    finite = []
    for scale in (1.0, float("nan"), 1.0, 1.0):
        loss = model(torch.arange(6.0).view(2, 3)).pow(2).sum() * scale
        loss.backward()
        outcome = clip_and_step_on_device(model, optimizer, loss_sum=loss.detach(), max_grad_norm=0.5)
        finite.append(bool(outcome.finite))
        model.zero_grad(set_to_none=True)
    return model, optimizer, finite


@pytest.mark.parametrize(
    "make",
    [
        lambda params, fused: torch.optim.AdamW(params, lr=0.1, weight_decay=0.1, fused=fused),
        lambda params, fused: torch.optim.SGD(params, lr=0.1, momentum=0.9, fused=fused),
    ],
    ids=["adamw", "sgd-momentum"],
)
def test_fused_skip_equals_not_stepping(make):
    """The fused path (found_inf, no host read) leaves weights and optimizer state as if the skipped update
    never ran: the same result as the plain optimizer, which is skipped after a host read."""
    fused_model, fused_opt, finite = _nan_in_the_middle(lambda params: make(params, fused=True))
    plain_model, plain_opt, _ = _nan_in_the_middle(lambda params: make(params, fused=False))
    assert finite == [True, False, True, True]
    assert takes_found_inf(fused_opt) and not takes_found_inf(plain_opt)
    for fused_param, plain_param in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(fused_param, plain_param)
        for key, value in plain_opt.state[plain_param].items():
            torch.testing.assert_close(fused_opt.state[fused_param][key], value, check_dtype=False)


def test_ledger_reads_the_device_only_when_it_settles():
    state = TrainerState()
    ledger = UpdateLedger(max_consecutive_nonfinite_steps=2, logging_nan_inf_filter=True, settle_every=3)
    good = DeviceOutcome(torch.tensor(6.0), torch.tensor(0.5), torch.tensor(True))
    bad = DeviceOutcome(torch.tensor(float("nan")), torch.tensor(float("inf")), torch.tensor(False))
    ledger.record(state, good, units=3)
    state.global_step += 1
    ledger.record(state, bad, units=2)
    state.global_step += 1
    assert state.nonfinite_steps == 0 and not state.loss_accumulators  # nothing read yet
    assert state.num_input_tokens_seen == 5  # known on the host already
    with pytest.raises(NonFiniteLossError, match=r"2 updates in a row .* reached 2 at step 3"):
        ledger.record(state, bad, units=2)  # the third update settles: the run of 2 is found here
    assert state.nonfinite_steps == 2 and state.consecutive_nonfinite_steps == 2
    acc = state.loss_accumulators
    assert (acc["log_loss"], acc["log_units"], acc["total_loss"], acc["total_units"]) == (6.0, 3, 6.0, 3)
    assert ledger.last_grad_norm == 0.5  # of the last finite update


def test_ledger_continues_a_resumed_run_of_bad_updates():
    state = TrainerState(consecutive_nonfinite_steps=2)
    ledger = UpdateLedger(max_consecutive_nonfinite_steps=3, logging_nan_inf_filter=True)
    with pytest.raises(NonFiniteLossError, match="3 updates in a row"):
        ledger.record(state, StepOutcome(float("nan"), 1.0, False), units=1)


def test_grad_scaler_skips_a_nonfinite_loss_with_finite_gradients():
    """With a scaler, an infinite loss is handed to its overflow check, so the step is skipped although the
    gradients are finite (here made so by hand), and the scale goes down as for an overflow."""
    model, optimizer = _model_with_grad(1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(torch.ones(()))  # the scale is created with the first scaled loss
    model.weight.grad *= scaler.get_scale()  # as a scaled backward would leave it
    before = model.weight.detach().clone()
    outcome = clip_and_step_on_device(
        model, optimizer, loss_sum=torch.tensor(float("inf")), max_grad_norm=None, scaler=scaler
    )
    assert not bool(outcome.finite)
    assert torch.equal(model.weight.detach(), before)
    assert scaler.get_scale() < 4.0
