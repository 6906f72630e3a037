"""Hyper-parameter search with optuna: each trial trains a fresh model on a copy of the arguments.

``Trainer.hyperparameter_search`` calls ``run_hyperparameter_search``; the training loop reports the eval
metric to the trial (``report_to_trial``) so that optuna's pruners can stop a bad trial early. The search
uses only the public members of the trainer listed in ``SearchableTrainer``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from s2s.callbacks import TrainerState, best_metric_spec, lookup_metric


class SearchableTrainer(Protocol):
    """What the search uses of a trainer (``Trainer`` is one)."""

    args: Any  # replaced by each trial's copy while the trial runs, put back after it
    state: Any  # a fresh TrainerState per trial, naming the trial and its parameters
    model_init: Callable[..., Any] | None  # builds each trial's fresh model

    def train(self, *, trial: Any = None) -> Any: ...

    def evaluate(self) -> dict[str, float]: ...


class BestRun(NamedTuple):
    run_id: str
    objective: float
    hyperparameters: dict[str, Any]


def default_hp_space(trial: Any) -> dict[str, Any]:
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-3, log=True)}


def default_objective(metrics: dict[str, float]) -> float:
    return metrics.get("eval_loss", float("nan"))


def run_hyperparameter_search(
    trainer: SearchableTrainer,
    hp_space: Callable[[Any], dict[str, Any]] | None = None,
    compute_objective: Callable[[dict[str, float]], float] | None = None,
    n_trials: int = 20,
    direction: str = "minimize",
    backend: str = "optuna",
    **kwargs,
) -> BestRun:
    """Search with optuna: each trial copies ``trainer.args``, applies ``hp_space(trial)``, trains a fresh
    model from ``trainer.model_init`` in ``output_dir/run-<trial>`` and is scored by
    ``compute_objective(eval metrics)`` (default: the eval loss). ``trainer.args`` is restored after each
    trial; ``kwargs`` go to ``optuna.create_study``."""
    if backend != "optuna":
        raise ValueError(f"hyperparameter_search backend={backend!r} is not supported; use backend='optuna'")
    try:
        import optuna  # optional dependency (the optuna extra): needed only for a search
    except ImportError as err:
        raise ImportError("hyperparameter_search needs optuna: pip install 's2s-toolkit[optuna]'") from err
    if trainer.model_init is None:
        raise ValueError(
            "hyperparameter_search needs model_init, so that every trial starts from a fresh model"
        )
    hp_space = hp_space or default_hp_space
    compute_objective = compute_objective or default_objective
    base_args = trainer.args

    def objective(trial) -> float:
        params = hp_space(trial)
        trainer.args = copy.deepcopy(base_args)
        for key, value in params.items():
            if not hasattr(trainer.args, key):
                raise AttributeError(f"hp_space returned {key!r}, which is not a TrainingArguments field")
            setattr(trainer.args, key, value)
        trainer.args.output_dir = os.path.join(base_args.output_dir, f"run-{trial.number}")
        trainer.state = TrainerState(trial_name=f"run-{trial.number}", trial_params=params)
        try:
            trainer.train(trial=trial)
            return compute_objective(trainer.evaluate())
        finally:
            trainer.args = base_args

    study = optuna.create_study(direction=direction, **kwargs)
    study.optimize(objective, n_trials=n_trials)
    best = study.best_trial
    return BestRun(str(best.number), best.value, best.params)


def report_to_trial(trial: Any, metrics: dict[str, float], *, args, step: int) -> None:
    """Tell the trial the metric that picks the best model (``metric_for_best_model``, default the loss)."""
    report = getattr(trial, "report", None)
    value = lookup_metric(metrics, best_metric_spec(args)[0])
    if report is not None and value is not None:
        report(value, step)
