"""s2s.optimizer_step on its own: a non-finite update is skipped and counted, the limit stops training, and
the loss sums keep (or filter) what the logs and the final train loss should see."""

import math

import pytest
import torch
from torch import nn

from s2s.callbacks import TrainerState
from s2s.optimizer_step import NonFiniteLossError, StepOutcome, clip_and_step, record_update


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
