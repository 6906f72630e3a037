"""A decaying learning-rate schedule under `--max_train_minutes` decays over the time budget, not over the
`max_steps` cap; the time spent is saved with checkpoints so a resumed run carries on the same decay.

The clock is faked (one second per update) so that the schedule is exact and the tests take no real time."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from recipes import callbacks, training
from s2s.callbacks import TrainerCallback
from s2s.optimization import get_scheduler
from s2s.trainer import Trainer
from tests.s2s.test_trainer_resume import StopAt
from tests.s2s.test_trainer_toys import ToyCollator, ToySeq2Seq, make_examples, toy_args

PEAK = 0.1


def scheduler(name: str, *, warmup: int, total: int):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def advance(lr_scheduler) -> None:
    lr_scheduler.optimizer.step()  # nothing to update; keeps torch's step-order check quiet
    lr_scheduler.step()


def decay_over(budget, lr_scheduler, *, warmup: int, max_steps: int):
    decay = callbacks.TimeBudgetDecay(budget)
    args = SimpleNamespace(get_warmup_steps=lambda steps: warmup)
    decay.on_train_begin(args, SimpleNamespace(max_steps=max_steps), None, lr_scheduler=lr_scheduler)
    return decay


@pytest.mark.parametrize(
    ("name", "shape"),
    [("linear", lambda p: 1 - p), ("cosine", lambda p: 0.5 * (1 + math.cos(math.pi * p)))],
)
def test_after_warmup_the_schedule_follows_the_share_of_the_budget_spent(name, shape):
    budget = callbacks.TimeBudgetCallback(minutes=1.0)
    lr_scheduler = scheduler(name, warmup=4, total=10_000)
    decay_over(budget, lr_scheduler, warmup=4, max_steps=10_000)
    for _ in range(3):  # warm-up counts steps, as before
        advance(lr_scheduler)
    assert lr_scheduler.get_last_lr()[0] == pytest.approx(PEAK * 3 / 4)
    budget.agreed_elapsed = 12.0  # warm-up ends with 20% of the budget spent
    advance(lr_scheduler)
    assert lr_scheduler.get_last_lr()[0] == pytest.approx(PEAK)
    for spent, progress in [(36.0, 0.5), (54.0, 0.875), (60.0, 1.0), (75.0, 1.0)]:
        budget.agreed_elapsed = spent
        advance(lr_scheduler)  # the step count (5, 6, ...) is far from max_steps: only the time matters
        assert lr_scheduler.get_last_lr()[0] == pytest.approx(PEAK * shape(progress), abs=1e-12)


def test_the_schedule_is_wrapped_once_and_its_state_stays_plain_numbers(tmp_path):
    budget = callbacks.TimeBudgetCallback(minutes=1.0)
    lr_scheduler = scheduler("linear", warmup=0, total=100)
    decay = decay_over(budget, lr_scheduler, warmup=0, max_steps=100)
    wrapped = list(lr_scheduler.lr_lambdas)
    decay_over(budget, lr_scheduler, warmup=0, max_steps=100)  # train() again on the same scheduler
    assert lr_scheduler.lr_lambdas == wrapped
    budget.agreed_elapsed = 30.0
    advance(lr_scheduler)
    torch.save(lr_scheduler.state_dict(), tmp_path / "scheduler.pt")
    assert torch.load(tmp_path / "scheduler.pt", weights_only=True)["last_epoch"] == 1
    assert decay.state_dict() == {"warmup_fraction": 0.5}


def test_schedules_that_do_not_decay_to_an_end_are_left_alone():
    trainer = SimpleNamespace(
        args=SimpleNamespace(lr_scheduler_type="inverse_sqrt"),
        added=[],
        add_callback=lambda cb: trainer.added.append(cb),
        pop_callback=lambda cb: None,
    )
    training._add_time_budget(trainer, 1.0)
    assert [type(cb) for cb in trainer.added] == [callbacks.TimeBudgetCallback]
    trainer.args.lr_scheduler_type = "linear"
    trainer.added.clear()
    training._add_time_budget(trainer, 1.0)
    assert [type(cb) for cb in trainer.added] == [callbacks.TimeBudgetCallback, callbacks.TimeBudgetDecay]


def test_a_resumed_budget_counts_the_time_already_spent():
    budget = callbacks.TimeBudgetCallback(minutes=1.0)
    budget.load_state_dict({"spent_seconds": 45.0})
    budget.on_train_begin(None, None, None)
    assert budget.elapsed() >= 45.0 and budget.fraction_spent() == pytest.approx(0.75)
    assert callbacks.TimeBudgetCallback(minutes=1.0).state_dict() == {"spent_seconds": 0.0}  # not started


class FakeClock(TrainerCallback):
    """One second passes per update (listed before the budget, so the budget reads the advanced clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def on_step_end(self, args, state, control, **kwargs):
        self.now += 1.0


class LearningRates(TrainerCallback):
    def __init__(self) -> None:
        self.seen: dict[int, float] = {}

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
        self.seen[state.global_step] = lr_scheduler.get_last_lr()[0]


def budgeted_run(tmp_path, monkeypatch, *, resume=None, stop_at=None):
    clock = FakeClock()
    monkeypatch.setattr(callbacks, "time", SimpleNamespace(monotonic=lambda: clock.now))
    budget = callbacks.TimeBudgetCallback(minutes=20 / 60)  # 20 updates of the fake clock
    rates = LearningRates()
    extra = [StopAt(stop_at)] if stop_at else []
    trainer = Trainer(
        model=ToySeq2Seq(),
        args=toy_args(
            tmp_path,
            lr_scheduler_type="linear",
            warmup_steps=2,
            max_steps=1000,  # only a cap: the budget ends the run at step 20
            save_strategy="steps",
            save_steps=10,
        ),
        train_dataset=make_examples(64),
        data_collator=ToyCollator(),
        callbacks=[clock, budget, callbacks.TimeBudgetDecay(budget), rates, *extra],
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, rates.seen


def test_training_to_a_budget_ends_at_learning_rate_zero_and_resumes_on_the_same_decay(tmp_path, monkeypatch):
    trainer, seen = budgeted_run(tmp_path / "whole", monkeypatch)
    assert trainer.state.global_step == 20
    # The schedule is stepped before the budget reads the clock, so it sees the time of the update before:
    # warm-up ends at step 2 with 1 s of 20 spent, and the decay runs over the 19 s left, linear in time.
    assert seen == pytest.approx(
        {1: PEAK / 2} | {step: PEAK * (1 - (step - 2) / 19) for step in range(2, 21)}
    )

    first, _ = budgeted_run(tmp_path / "parts", monkeypatch, stop_at=10)
    assert first.state.global_step == 10
    # A new process: its clock starts anywhere; the checkpoint says 10 seconds of the budget are gone.
    resumed, seen_resumed = budgeted_run(
        tmp_path / "parts", monkeypatch, resume=str(tmp_path / "parts" / "checkpoint-10")
    )
    assert resumed.state.global_step == 20
    assert seen_resumed == pytest.approx({step: seen[step] for step in range(11, 21)})
