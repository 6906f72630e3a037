"""The loop of ``Trainer.train()``: epochs of accumulation windows, one optimizer update per window.

For each window (the micro-batches of one update) the target tokens of the whole window are counted across
all processes; each micro-batch back-propagates its *summed* token loss divided by that count; then the
update clips, steps and schedules. So k micro-batches of b examples train exactly like one batch of k * b,
whatever the target lengths.

``TrainingLoop`` is the trainer's collaborator for one ``train()`` call, once the trainer has chosen the model
and what to resume from: it starts the run (a fresh ``state``, the wrapped model, the optimizer, the resumed
checkpoint), runs the epochs and reports. It calls the trainer's override points
(``create_optimizer_and_scheduler``, ``training_step``, ``evaluate``, ``log``), keeps the trainer's ``state``
and training objects up to date, and sends every event to the callbacks through ``fire``, which also updates
``trainer.control``. The ``LoopHost`` protocol lists everything it uses; nothing private.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from s2s.batch import loss_units
from s2s.callbacks import CallbackHandler, TrainerControl, TrainerState, best_metric_spec, lookup_metric
from s2s.checkpointer import Checkpointer, TrainingParts
from s2s.hyperparameter_search import report_to_trial
from s2s.optimization import is_metric_scheduler
from s2s.optimizer_step import UpdateLedger, clip_and_step_on_device, step_scheduler
from s2s.signals import GracefulInterrupt
from s2s.strategy import DistributionStrategy
from s2s.training_meter import TrainingMeter
from s2s.training_plan import TrainingPlan, accumulation_windows, plan_training

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LoopHost(Protocol):
    """What the loop uses of the trainer (``Trainer`` is one)."""

    args: Any
    state: TrainerState  # a fresh one per run, then updated in place: steps, epoch, loss sums
    control: TrainerControl  # read after each event: the callbacks' decisions
    strategy: DistributionStrategy
    checkpointer: Checkpointer
    callback_handler: CallbackHandler  # told the run's objects; its stateful callbacks go into checkpoints
    model: nn.Module  # the user's module
    model_wrapped: nn.Module  # set here: the module that trains
    optimizer: torch.optim.Optimizer  # set by create_optimizer_and_scheduler
    lr_scheduler: Any
    scaler: Any
    tokenizer: Any

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None: ...

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: int
    ) -> torch.Tensor:
        """Forward and backward of one micro-batch; returns its summed loss."""

    def evaluate(self) -> dict[str, float]: ...

    def log(self, logs: dict[str, float]) -> None: ...


class TrainingLoop:
    """The epochs of one ``train()`` call of ``host``; ``fire(event, **kwargs)`` calls the callbacks."""

    def __init__(
        self, host: LoopHost, *, fire: Callable[..., None], data_seed: int, trial: Any = None
    ) -> None:
        self.host = host
        self.args = host.args
        self.strategy = host.strategy
        self.fire = fire
        self.data_seed = data_seed
        self.trial = trial
        self.meter = TrainingMeter(start_step=0)
        self.ledger = self._new_ledger()

    def run(
        self, loader: DataLoader, *, sampler: Any, batch_size: int, resume: Path | None
    ) -> dict[str, float]:
        """Train on ``loader`` (read through ``sampler``, None for an iterable dataset, in batches of
        ``batch_size``) from the beginning or from checkpoint ``resume``, until ``max_steps`` updates or a
        callback stops it; return the training metrics. A SIGINT/SIGTERM saves a checkpoint after the
        current update and raises ``TrainingInterrupted``."""
        host = self.host
        plan = plan_training(loader, self.args)
        self._start(plan, loader, sampler=sampler, batch_size=batch_size, resume=resume)
        self.fire("on_train_begin")
        host.model_wrapped.zero_grad(set_to_none=True)
        with GracefulInterrupt() as interrupt:
            position = host.checkpointer.position
            start_epoch, skip = position.epoch, position.micro_batches
            for epoch in range(start_epoch, plan.num_epochs):
                if host.state.global_step >= host.state.max_steps:
                    break
                self._run_epoch(
                    loader, plan, epoch, done=skip if epoch == start_epoch else 0, interrupt=interrupt
                )
                if host.control.should_training_stop:
                    break
        self._settle()
        host.checkpointer.load_best(host.model_wrapped, host.state)
        metrics = self.meter.train_metrics(
            host.state, all_reduce=self.strategy.all_reduce_sum, memory=not self.args.skip_memory_metrics
        )
        host.log(metrics)
        self.fire("on_train_end")
        return metrics

    def _start(self, plan: TrainingPlan, loader: DataLoader, *, sampler, batch_size: int, resume) -> None:
        """A fresh state and control, the wrapped model, the optimizer, then the resumed checkpoint."""
        host, args = self.host, self.args
        host.state = TrainerState(
            max_steps=plan.max_steps,
            num_train_epochs=plan.num_epochs,
            logging_steps=args.logging_steps,
            eval_steps=args.eval_steps or args.logging_steps,
            save_steps=args.save_steps,
            train_batch_size=batch_size,
            is_local_process_zero=host.state.is_local_process_zero,
            is_world_process_zero=host.state.is_world_process_zero,
            is_hyper_param_search=self.trial is not None,
        )
        host.control = TrainerControl()
        # Wrap first: FSDP replaces the parameters' storage with shards, and the optimizer must see those.
        host.model_wrapped = self.strategy.wrap(host.model)
        host.create_optimizer_and_scheduler(num_training_steps=plan.max_steps)
        handler = host.callback_handler
        handler.model, handler.optimizer, handler.lr_scheduler = host.model, host.optimizer, host.lr_scheduler
        handler.train_dataloader = loader
        host.checkpointer.position.start(sampler, batch_size=batch_size)
        if resume is not None:
            handler.load_state_dicts(
                host.checkpointer.resume(resume, self._parts(), host.state).stateful_callbacks
            )
        logger.info(
            "training %s (run %s): %d updates, per-device batch %s x accumulation %d x %d processes, sampler %s, "
            "%s on %s",
            type(self.strategy.unwrap(host.model)).__name__,
            args.run_name,
            plan.max_steps,
            f"<= {args.max_tokens_per_batch} tokens" if args.max_tokens_per_batch else batch_size,
            args.gradient_accumulation_steps,
            self.strategy.world_size,
            type(sampler).__name__ if sampler is not None else "none (iterable)",
            # bf16="auto" is decided by the hardware, so say what it became
            "bf16 autocast" if args.bf16 else "fp16 autocast" if args.fp16 else "fp32",
            args.device.type,
        )
        self.meter = TrainingMeter(start_step=host.state.global_step)
        self.ledger = self._new_ledger()

    def _run_epoch(
        self, loader: DataLoader, plan: TrainingPlan, epoch: int, *, done: int, interrupt: GracefulInterrupt
    ) -> None:
        """One epoch, after its first ``done`` micro-batches (those a resumed run already trained on)."""
        host, position = self.host, self.host.checkpointer.position
        batches = position.epoch_batches(
            loader, epoch=epoch, done=done, batches_per_epoch=plan.batches_per_epoch, data_seed=self.data_seed
        )
        self.fire("on_epoch_begin")
        for window in accumulation_windows(batches, self.args.gradient_accumulation_steps):
            self.fire("on_step_begin")
            loss_sum, units = self._train_window(host.model_wrapped, window)
            done += len(window)
            position.advance(epoch, done)
            self._optimizer_update(host.model_wrapped, loss_sum, units)
            host.state.global_step += 1
            host.state.epoch = epoch + done / plan.batches_per_epoch
            self.fire("on_step_end")
            self._maybe_log_save_evaluate()
            self._stop_if_interrupted(interrupt)
            if host.control.should_epoch_stop or host.control.should_training_stop:
                break
        if not host.control.should_training_stop and done >= plan.batches_per_epoch:
            position.advance(epoch + 1, 0)
        self.fire("on_epoch_end")
        self._maybe_log_save_evaluate()
        host.control.reset_for_new_epoch()

    def _train_window(self, model: nn.Module, window: list[dict[str, Any]]) -> tuple[torch.Tensor, int]:
        """Forward/backward every micro-batch of one update. Returns the window's summed loss and its
        token count, both summed over processes."""
        units = self.strategy.all_reduce_sum(sum(loss_units(b, self.args.label_names) for b in window))
        loss_sum = torch.zeros((), device=self.args.device)
        for i, batch in enumerate(window):
            last = i == len(window) - 1
            # Gradients are all-reduced once per window: on the last micro-batch's backward only.
            with contextlib.nullcontext() if last else self.strategy.accumulating(model):
                loss_sum += self.host.training_step(model, batch, units)
            self.meter.count_batch(batch)
            if not last:
                self.fire("on_substep_end")
        return self.strategy.all_reduce_sum(loss_sum), units

    def _optimizer_update(self, model: nn.Module, loss_sum: torch.Tensor, units: int) -> None:
        """Clip, step (unless the loss or gradient is NaN/inf), schedule, zero the gradients, book-keep."""
        host, args = self.host, self.args
        self.fire("on_pre_optimizer_step")
        outcome = clip_and_step_on_device(
            model, host.optimizer, loss_sum=loss_sum, max_grad_norm=args.max_grad_norm, scaler=host.scaler
        )
        self.fire("on_optimizer_step")
        if not is_metric_scheduler(host.lr_scheduler):
            step_scheduler(host.lr_scheduler)  # also on skipped updates: the schedule follows global_step
        model.zero_grad(set_to_none=True)
        self.meter.count_update(tokens=units)
        self.ledger.record(host.state, outcome, units=units)  # read on the host only when settled

    # ------------------------------------------------------------------------------------------ between updates
    def _new_ledger(self) -> UpdateLedger:
        """The device-side books of the updates, read every ``logging_steps`` updates and before a log, a
        checkpoint or the final metrics (see ``s2s.optimizer_step``)."""
        args = self.args
        return UpdateLedger(
            max_consecutive_nonfinite_steps=args.max_consecutive_nonfinite_steps,
            logging_nan_inf_filter=args.logging_nan_inf_filter,
            settle_every=max(1, args.logging_steps),
        )

    def _settle(self) -> None:
        self.ledger.settle(self.host.state)
        self.meter.grad_norm = self.ledger.last_grad_norm

    def _maybe_log_save_evaluate(self) -> None:
        host = self.host
        if host.control.should_log or host.control.should_save:
            self._settle()
        if host.control.should_log and host.state.global_step > self.meter.last_logged_step:
            learning_rate = float(host.optimizer.param_groups[0]["lr"])
            all_reduce = self.strategy.all_reduce_sum
            host.log(self.meter.progress_logs(host.state, learning_rate=learning_rate, all_reduce=all_reduce))
        if host.control.should_evaluate:
            self._evaluate()
        if host.control.should_save:
            host.checkpointer.save(self._parts(), self._state_for_checkpoint())
            self.fire("on_save")
        host.control.reset_for_new_step()

    def _evaluate(self) -> None:
        """Evaluate; the metrics pick the best checkpoint, step a plateau schedule and inform a search trial."""
        host = self.host
        metrics = host.evaluate()
        host.checkpointer.note_evaluation(host.state, metrics)
        if is_metric_scheduler(host.lr_scheduler):
            name = best_metric_spec(self.args)[0]
            value = lookup_metric(metrics, name)
            if value is None:
                raise KeyError(
                    f"reduce_lr_on_plateau needs {name!r} in the evaluation metrics {sorted(metrics)}"
                )
            host.lr_scheduler.step(value)
        if self.trial is not None:
            report_to_trial(self.trial, metrics, args=self.args, step=host.state.global_step)

    def _stop_if_interrupted(self, interrupt: GracefulInterrupt) -> None:
        """SIGINT/SIGTERM arrived (on any process): save a checkpoint after this complete update, then stop."""
        if not self.strategy.any_process(interrupt.requested):
            return
        if not interrupt.requested:
            interrupt.request()  # another process received the signal
        self._settle()
        path = self.host.checkpointer.save_for_exit(self._parts(), self._state_for_checkpoint())
        interrupt.exit(step=self.host.state.global_step, checkpoint=path)

    def _parts(self) -> TrainingParts:
        host = self.host
        return TrainingParts(
            host.model_wrapped, host.optimizer, host.lr_scheduler, host.scaler, host.tokenizer
        )

    def _state_for_checkpoint(self) -> TrainerState:
        self.host.state.stateful_callbacks = self.host.callback_handler.state_dicts()
        return self.host.state


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
    )


def retry_halving_batch_size(run: Callable[[int], T], batch_size: int, *, reset: Callable[[], None]) -> T:
    """``auto_find_batch_size``: ``run(batch_size)``; after an out-of-memory error, ``reset()`` and run again
    with half the batch size, down to 1."""
    while True:
        try:
            return run(batch_size)
        except Exception as err:
            if not is_out_of_memory(err) or batch_size == 1:
                raise
            batch_size //= 2
            logger.warning("out of memory; retrying with per-device batch size %d", batch_size)
            reset()
