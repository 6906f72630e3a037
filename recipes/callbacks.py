"""Training to a wall-clock budget (`--max_train_minutes`): the callback that stops the run when the time is
up, the one that makes a decaying learning-rate schedule end with the budget, and a progress bar that
measures that time instead of steps.

Under a time budget `max_steps` is only a cap the run will usually never reach, so the trainer's step bar
would end at some arbitrary fraction; the budget bar shows elapsed / budget, with the step count beside it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from torch.optim.lr_scheduler import LambdaLR

from s2s.callbacks import ProgressCallback, TrainerCallback

logger = logging.getLogger("recipes")


class TimeBudgetCallback(TrainerCallback):
    """Stops training once `minutes` of wall-clock time have passed since training began, saving a checkpoint
    and evaluating at that step. Under DDP the ranks agree on the time spent (their mean), so all stop on the
    same step and none waits for the others in a collective that never comes.

    The time spent is saved with each checkpoint: a resumed run continues the budget instead of starting a
    new one, so its learning-rate decay (`TimeBudgetDecay`) carries on where it was."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60.0
        self.start: float | None = None
        self.spent_before = 0.0  # seconds the checkpoint this run resumed from had spent
        self.agreed_elapsed = 0.0  # the ranks' elapsed time at the last step end

    def elapsed(self) -> float:
        """Seconds of the budget spent, on this process's clock (0 before training began)."""
        if self.start is None:
            return 0.0
        return self.spent_before + time.monotonic() - self.start

    def fraction_spent(self) -> float:
        """The share of the budget spent at the last step end, in [0, 1], the same on every rank."""
        return min(1.0, self.agreed_elapsed / self.seconds)

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()
        self.agreed_elapsed = self.spent_before

    def on_step_end(self, args, state, control, **kwargs):
        from s2s import distributed

        if self.start is None:
            return control
        elapsed = self.elapsed()
        if distributed.is_distributed():
            elapsed = distributed.all_reduce_sum(elapsed) / distributed.get_world_size()
        self.agreed_elapsed = elapsed
        if elapsed >= self.seconds and not control.should_training_stop:
            logger.info(
                "time budget of %.3g minutes reached at step %d: stopping",
                self.seconds / 60,
                state.global_step,
            )
            control.should_training_stop = True
            control.should_log = True
            control.should_save = str(args.save_strategy) != "no"
            control.should_evaluate = str(args.eval_strategy) != "no"
        return control

    def state_dict(self) -> dict[str, float]:
        return {"spent_seconds": self.elapsed()}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.spent_before = float(state["spent_seconds"])


class TimeBudgetDecay(TrainerCallback):
    """Makes a schedule that decays to an end (linear, cosine, polynomial) decay over the time budget instead
    of over `max_steps`, which under a budget is only a cap the run never reaches.

    Warm-up is unchanged (it counts steps). After it, the step the schedule is asked about is the share of the
    budget spent since warm-up ended, mapped onto the steps from warm-up to `max_steps`: a linear schedule
    reaches 0 when the time runs out, wherever the machine's speed puts that step. Ending a run at a learning
    rate near zero is what lets its last checkpoint settle; cut off part-way, the decay would stop at a
    learning rate the run was never meant to end on.

    The learning rate then depends on the clock, like the step the budget stops on: two runs (or a run and
    its resumption) agree in shape, not bit for bit. The share of the budget at the end of warm-up is saved
    with each checkpoint, and `TimeBudgetCallback` saves the time spent, so a resumed run carries on the
    same decay."""

    def __init__(self, budget: TimeBudgetCallback) -> None:
        self.budget = budget
        self.warmup_fraction: float | None = None  # share of the budget spent when warm-up ended

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        if not isinstance(lr_scheduler, LambdaLR):
            return
        warmup = args.get_warmup_steps(state.max_steps)
        span = state.max_steps - warmup
        if span <= 0 or any(getattr(f, _OVER_THE_BUDGET, False) for f in lr_scheduler.lr_lambdas):
            return
        lr_scheduler.lr_lambdas = [self._over_the_budget(f, warmup, span) for f in lr_scheduler.lr_lambdas]

    def _over_the_budget(self, schedule: Callable[[float], float], warmup: int, span: int) -> Callable:
        # A closure, not an object: LambdaLR.state_dict leaves functions out, so checkpoints stay plain numbers.
        def factor(step: int) -> float:
            if step < warmup:
                return schedule(step)
            return schedule(warmup + self.progress() * span)

        setattr(factor, _OVER_THE_BUDGET, True)
        return factor

    def progress(self) -> float:
        """The share of the post-warm-up time spent, in [0, 1]."""
        spent = self.budget.fraction_spent()
        if self.warmup_fraction is None:
            self.warmup_fraction = spent
        left = 1.0 - self.warmup_fraction
        return 1.0 if left <= 0 else min(1.0, max(0.0, (spent - self.warmup_fraction) / left))

    def state_dict(self) -> dict[str, float | None]:
        return {"warmup_fraction": self.warmup_fraction}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.warmup_fraction = state["warmup_fraction"]


# Marks a schedule factor already wrapped by TimeBudgetDecay (train() may run again on the same scheduler).
_OVER_THE_BUDGET = "_decays_over_time_budget"


class TimeBudgetProgressCallback(ProgressCallback):
    """The trainer's progress display with the training bar measured in seconds of `budget`: elapsed / budget,
    then the step (of the `max_steps` cap) and the update rate. Evaluation bars and log lines are as usual."""

    def __init__(self, budget: TimeBudgetCallback, max_str_len: int = 100) -> None:
        super().__init__(max_str_len=max_str_len)
        self.budget = budget
        self.first_step: int = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from tqdm.auto import tqdm

        total = tqdm.format_interval(round(self.budget.seconds))  # mm:ss, as tqdm shows {elapsed}
        self.first_step = state.global_step
        self.training_bar = tqdm(
            total=round(self.budget.seconds),
            dynamic_ncols=True,
            bar_format="{percentage:3.0f}%|{bar}| {elapsed} of " + total + " [{postfix}]",
        )
        self._show_step(state)

    def on_step_end(self, args, state, control, **kwargs):
        if self.training_bar is None:
            return
        seconds = min(round(self.budget.elapsed()), self.training_bar.total)
        self._show_step(state, refresh=False)
        self.training_bar.update(seconds - self.training_bar.n)

    def _show_step(self, state, *, refresh: bool = True) -> None:
        done = state.global_step - self.first_step
        elapsed = self.budget.elapsed() - self.budget.spent_before  # this process's share: its steps' rate
        rate = f", {done / elapsed:.2f} updates/s" if done and elapsed > 0 else ""
        cap = f"/{state.max_steps}" if state.max_steps else ""
        self.training_bar.set_postfix_str(f"step {state.global_step}{cap}{rate}", refresh=refresh)
