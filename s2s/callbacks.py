"""Callbacks: what the trainer tells the outside world, and how the outside world steers the trainer.

The trainer calls ``CallbackHandler.on_<event>(args, state, control)`` at fixed points of the loop. A
callback reads ``TrainerState`` (where training is) and may flip flags on ``TrainerControl`` (what to do
next: log, evaluate, save, stop). ``DefaultFlowCallback`` is the one that turns the ``*_strategy`` /
``*_steps`` arguments into those flags; the trainer itself never decides when to log, evaluate or save.

``TrainerState`` is saved as ``trainer_state.json`` in every checkpoint, including the state of stateful
callbacks (``EarlyStoppingCallback``'s patience counter), so a resumed run stops exactly where the
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EVENTS = (
    "on_init_end",
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_step_begin",
    "on_substep_end",
    "on_pre_optimizer_step",
    "on_optimizer_step",
    "on_step_end",
    "on_evaluate",
    "on_predict",
    "on_save",
    "on_log",
    "on_prediction_step",
)


@dataclass
class TrainerState:
    """Where training is. Saved as JSON in each checkpoint and restored on resume."""

    epoch: float = 0.0
    """Fractional epoch: 1.5 is half-way through the second epoch."""
    global_step: int = 0
    """Optimizer updates done (skipped non-finite updates count: their data was consumed)."""
    max_steps: int = 0
    num_train_epochs: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    train_batch_size: int | None = None
    num_input_tokens_seen: int = 0
    """Target tokens (labels != -100) trained on, summed over ranks."""
    log_history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_global_step: int | None = None
    best_model_checkpoint: str | None = None
    nonfinite_steps: int = 0
    """Updates skipped because the loss or the gradient norm was NaN/inf."""
    consecutive_nonfinite_steps: int = 0
    loss_accumulators: dict[str, float] = field(default_factory=dict)
    """Running token-loss sums (since the last log, and since the start), so a resumed run logs the same
    losses as an uninterrupted one even when a checkpoint falls between two logging steps."""
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    is_hyper_param_search: bool = False
    trial_name: str | None = None
    trial_params: dict[str, Any] | None = None
    stateful_callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerState:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            logger.warning("ignoring unknown TrainerState keys %s", sorted(unknown))
        return cls(**{k: v for k, v in data.items() if k in known})

    def save_to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load_from_json(cls, path: str | Path) -> TrainerState:
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class TrainerControl:
    """Flags a callback sets to steer the loop; the trainer resets each one once it has acted on it.

    A signal handler (SIGINT/SIGTERM) can set ``should_save`` and ``should_training_stop``: the loop checks
    them after every update, saves a checkpoint and stops cleanly.
    """

    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False

    def reset_for_new_training(self) -> None:
        self.should_training_stop = False

    def reset_for_new_epoch(self) -> None:
        self.should_epoch_stop = False

    def reset_for_new_step(self) -> None:
        self.should_save = False
        self.should_evaluate = False
        self.should_log = False

    def to_dict(self) -> dict[str, bool]:
        return dataclasses.asdict(self)


class TrainerCallback:
    """Base class: override the events you need. Each receives ``(args, state, control, **kwargs)`` where
    kwargs hold ``model``, ``tokenizer``, ``optimizer``, ``lr_scheduler``, ``train_dataloader``,
    ``eval_dataloader``, plus ``metrics`` for ``on_evaluate``/``on_predict`` and ``logs`` for ``on_log``.
    An event may return a ``TrainerControl``; returning None keeps the current one.

    A callback whose state must survive a resume implements ``state_dict()`` and ``load_state_dict()``.
    """

    def on_init_end(self, args, state, control, **kwargs): ...
    def on_train_begin(self, args, state, control, **kwargs): ...
    def on_train_end(self, args, state, control, **kwargs): ...
    def on_epoch_begin(self, args, state, control, **kwargs): ...
    def on_epoch_end(self, args, state, control, **kwargs): ...
    def on_step_begin(self, args, state, control, **kwargs): ...
    def on_substep_end(self, args, state, control, **kwargs): ...
    def on_pre_optimizer_step(self, args, state, control, **kwargs): ...
    def on_optimizer_step(self, args, state, control, **kwargs): ...
    def on_step_end(self, args, state, control, **kwargs): ...
    def on_evaluate(self, args, state, control, **kwargs): ...
    def on_predict(self, args, state, control, **kwargs): ...
    def on_save(self, args, state, control, **kwargs): ...
    def on_log(self, args, state, control, **kwargs): ...
    def on_prediction_step(self, args, state, control, **kwargs): ...


def _is_stateful(callback: Any) -> bool:
    return callable(getattr(callback, "state_dict", None)) and callable(
        getattr(callback, "load_state_dict", None)
    )


class CallbackHandler:
    """Calls every callback, in order, for each event."""

    def __init__(self, callbacks, *, model=None, tokenizer=None, optimizer=None, lr_scheduler=None) -> None:
        self.callbacks: list[TrainerCallback] = []
        for cb in callbacks:
            self.add_callback(cb)
        self.model = model
        self.tokenizer = tokenizer
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.train_dataloader = None
        self.eval_dataloader = None

    def add_callback(self, callback) -> None:
        cb = callback() if isinstance(callback, type) else callback
        cb_class = type(cb)
        if any(type(c) is cb_class for c in self.callbacks):
            logger.warning(
                "adding a second %s; the callbacks are now %s", cb_class.__name__, self.callback_list
            )
        self.callbacks.append(cb)

    def pop_callback(self, callback):
        """Remove and return the callback (an instance, or the first instance of a class); None if absent."""
        for cb in self.callbacks:
            if cb is callback or (isinstance(callback, type) and isinstance(cb, callback)):
                self.callbacks.remove(cb)
                return cb
        return None

    def remove_callback(self, callback) -> None:
        self.pop_callback(callback)

    @property
    def callback_list(self) -> str:
        return ", ".join(type(cb).__name__ for cb in self.callbacks)

    def state_dicts(self) -> dict[str, dict[str, Any]]:
        """States of the stateful callbacks, keyed by class name, for ``TrainerState.stateful_callbacks``."""
        return {type(cb).__name__: cb.state_dict() for cb in self.callbacks if _is_stateful(cb)}

    def load_state_dicts(self, states: dict[str, dict[str, Any]]) -> None:
        for cb in self.callbacks:
            name = type(cb).__name__
            if _is_stateful(cb) and name in states:
                cb.load_state_dict(states[name])

    def call_event(self, event: str, args, state, control, **kwargs) -> TrainerControl:
        for cb in self.callbacks:
            result = getattr(cb, event)(
                args,
                state,
                control,
                model=self.model,
                tokenizer=self.tokenizer,
                optimizer=self.optimizer,
                lr_scheduler=self.lr_scheduler,
                train_dataloader=self.train_dataloader,
                eval_dataloader=self.eval_dataloader,
                **kwargs,
            )
            if result is not None:
                control = result
        return control

    def __getattr__(self, name: str):
        # on_train_begin(args, state, control, **kwargs) etc.: one method per event, without 15 copies.
        if name in EVENTS:
            return lambda args, state, control, **kwargs: self.call_event(
                name, args, state, control, **kwargs
            )
        raise AttributeError(name)


class DefaultFlowCallback(TrainerCallback):
    """Turns the logging/evaluation/saving strategies into control flags, and stops at ``max_steps``.

    Reads the resolved step intervals from ``state`` (the trainer turns ratio arguments such as
    ``logging_steps=0.1`` into step counts there).
    """

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step == 1 and args.logging_first_step:
            control.should_log = True
        if (
            _strategy(args.logging_strategy) == "steps"
            and state.logging_steps > 0
            and step % state.logging_steps == 0
        ):
            control.should_log = True
        if (
            _strategy(args.eval_strategy) == "steps"
            and state.eval_steps > 0
            and step % state.eval_steps == 0
            and (args.eval_delay or 0) <= step
        ):
            control.should_evaluate = True
        if _strategy(args.save_strategy) == "steps" and state.save_steps > 0 and step % state.save_steps == 0:
            control.should_save = True
        if step >= state.max_steps:
            control.should_training_stop = True
            # The final state of a step-saving run is always checkpointed.
            if _strategy(args.save_strategy) == "steps":
                control.should_save = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if _strategy(args.logging_strategy) == "epoch":
            control.should_log = True
        if _strategy(args.eval_strategy) == "epoch" and (args.eval_delay or 0) <= state.epoch:
            control.should_evaluate = True
        if _strategy(args.save_strategy) == "epoch":
            control.should_save = True
        return control


def _strategy(value: Any) -> str:
    """Strategy arguments may be plain strings or str-valued enums."""
    return str(getattr(value, "value", value))


class ProgressCallback(TrainerCallback):
    """tqdm bars for training (by update) and for evaluation/prediction (by batch); logs written below."""

    def __init__(self, max_str_len: int = 100) -> None:
        self.training_bar = None
        self.prediction_bar = None
        self.max_str_len = max_str_len

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.training_bar = tqdm(total=state.max_steps, initial=state.global_step, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            self.training_bar.update(state.global_step - self.training_bar.n)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if not state.is_world_process_zero or eval_dataloader is None:
            return
        if self.prediction_bar is None:
            from tqdm.auto import tqdm

            total = len(eval_dataloader) if hasattr(eval_dataloader, "__len__") else None
            self.prediction_bar = tqdm(total=total, leave=self.training_bar is None, dynamic_ncols=True)
        self.prediction_bar.update(1)

    def _close_prediction_bar(self) -> None:
        if self.prediction_bar is not None:
            self.prediction_bar.close()
        self.prediction_bar = None

    def on_evaluate(self, args, state, control, **kwargs):
        self._close_prediction_bar()

    def on_predict(self, args, state, control, **kwargs):
        self._close_prediction_bar()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs:
            shown = {
                k: (v if len(str(v)) <= self.max_str_len else f"{str(v)[: self.max_str_len]}...")
                for k, v in logs.items()
            }
            self.training_bar.write(str(shown))

    def on_train_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            self.training_bar.close()
            self.training_bar = None


class PrinterCallback(TrainerCallback):
    """Prints each log dict (used instead of the progress bars when ``disable_tqdm``)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            print({k: v for k, v in logs.items() if k != "total_flos"})


class EarlyStoppingCallback(TrainerCallback):
    """Stop when ``metric_for_best_model`` (default ``loss``) has not improved by more than
    ``early_stopping_threshold`` for ``early_stopping_patience`` evaluations in a row.

    Its counter is saved in ``TrainerState.stateful_callbacks``, so a resumed run stops on the same step.
    """

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0) -> None:
        if early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience must be >= 1, got {early_stopping_patience}")
        if early_stopping_threshold < 0:
            raise ValueError(f"early_stopping_threshold must be >= 0, got {early_stopping_threshold}")
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        self.patience_counter = 0
        self.best_value: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if _strategy(args.eval_strategy) == "no":
            raise ValueError(
                "EarlyStoppingCallback needs evaluations: set eval_strategy to 'steps' or 'epoch' "
                "(it is 'no')"
            )

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name, greater_is_better = best_metric_spec(args)
        value = lookup_metric(metrics or {}, name)
        if value is None:
            logger.warning(
                "early stopping needs metric %r but the evaluation returned %s; it is disabled for this "
                "evaluation",
                name,
                sorted(metrics or {}),
            )
            return
        if self.best_value is None or is_improvement(
            value,
            self.best_value,
            greater_is_better=greater_is_better,
            threshold=self.early_stopping_threshold,
        ):
            self.best_value = value
            self.patience_counter = 0
        else:
            self.patience_counter += 1
        if self.patience_counter >= self.early_stopping_patience:
            logger.info(
                "early stopping at step %d: %s has not improved for %d evaluations",
                state.global_step,
                name,
                self.patience_counter,
            )
            control.should_training_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {
            "early_stopping_patience": self.early_stopping_patience,
            "early_stopping_threshold": self.early_stopping_threshold,
            "patience_counter": self.patience_counter,
            "best_value": self.best_value,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.patience_counter = int(state["patience_counter"])
        self.best_value = state.get("best_value")


def best_metric_spec(args) -> tuple[str, bool]:
    """``(metric name, greater_is_better)`` from the arguments; default: eval loss, lower is better."""
    name = args.metric_for_best_model or "loss"
    greater = args.greater_is_better
    if greater is None:
        greater = not name.endswith("loss")
    return name, bool(greater)


def lookup_metric(metrics: dict[str, Any], name: str) -> float | None:
    """The value of ``name`` in an evaluation's metrics, with or without its ``eval_`` prefix."""
    for key in (name, f"eval_{name}"):
        if key in metrics and metrics[key] is not None:
            return float(metrics[key])
    return None


def is_improvement(value: float, best: float, *, greater_is_better: bool, threshold: float = 0.0) -> bool:
    if math.isnan(value):
        return False
    return value - best > threshold if greater_is_better else best - value > threshold
