"""Training to a wall-clock budget (`--max_train_minutes`): the callback that stops the run when the time is
up, and a progress bar that measures that time instead of steps.

Under a time budget `max_steps` is only a cap the run will usually never reach, so the trainer's step bar
would end at some arbitrary fraction; the budget bar shows elapsed / budget, with the step count beside it.
"""

from __future__ import annotations

import logging
import time

from s2s.callbacks import ProgressCallback, TrainerCallback

logger = logging.getLogger("recipes")


class TimeBudgetCallback(TrainerCallback):
    """Stops training once `minutes` of wall-clock time have passed since training began, saving a checkpoint
    and evaluating at that step. Under DDP the ranks agree (any rank over budget stops all), so none waits for
    the others in a collective that never comes."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60.0
        self.start: float | None = None

    def elapsed(self) -> float:
        """Seconds since training began (0 before it has)."""
        return 0.0 if self.start is None else time.monotonic() - self.start

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        from s2s import distributed

        over = self.start is not None and self.elapsed() >= self.seconds
        if distributed.is_distributed():
            over = distributed.all_reduce_sum(int(over)) > 0
        if over and not control.should_training_stop:
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
        elapsed = self.budget.elapsed()
        rate = f", {done / elapsed:.2f} updates/s" if done and elapsed > 0 else ""
        cap = f"/{state.max_steps}" if state.max_steps else ""
        self.training_bar.set_postfix_str(f"step {state.global_step}{cap}{rate}", refresh=refresh)
