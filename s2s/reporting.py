"""Loggers are callbacks: each writes what ``Trainer.log`` sends through ``on_log``.

``jsonl`` needs nothing and is always available: one JSON object per log call, in
``<logging_dir or output_dir>/log.jsonl``. ``tensorboard`` writes scalars to ``logging_dir``, ``mlflow`` and
``wandb`` send the run to MLflow and Weights & Biases; each of these three is an optional extra, imported only
when asked for. ``report_to`` selects them (``TrainingArguments`` resolves "all"/"none").

The MLflow and W&B loggers read the same environment variables as Hugging Face's, so a run configured for a
Hugging Face script (tracking URI, experiment, project) lands in the same place.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from s2s.callbacks import TrainerCallback

logger = logging.getLogger(__name__)


class JsonlLoggerCallback(TrainerCallback):
    """Appends ``{"step", "epoch", "time", **logs}`` lines to ``log.jsonl`` on the main process."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None

    def _resolve_path(self, args) -> Path:
        if self.path is None:
            self.path = Path(args.logging_dir or args.output_dir) / "log.jsonl"
        return self.path

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            path = self._resolve_path(args)
            path.parent.mkdir(parents=True, exist_ok=True)
            run = {"event": "train_begin", "run_name": args.run_name, "max_steps": state.max_steps}
            self._write(run | {"step": state.global_step, "time": time.time()})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self._resolve_path(args).parent.mkdir(parents=True, exist_ok=True)
        self._write({"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs})

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n")


def _json_value(value: Any) -> Any:
    # JSON has no NaN/inf; write them as strings so the file stays valid for every reader.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class TensorBoardCallback(TrainerCallback):
    """Scalars of every log call to TensorBoard under ``logging_dir``; the arguments as text once."""

    def __init__(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch's writer needs the tensorboard package
            raise ImportError(
                "report_to='tensorboard' needs the tensorboard package: pip install 's2s-toolkit[tensorboard]'"
            ) from err
        self._writer_class = SummaryWriter
        self.writer = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.writer is None:
            self.writer = self._writer_class(log_dir=args.logging_dir)
            self.writer.add_text("args", args.to_json_string())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if self.writer is None:
            self.writer = self._writer_class(log_dir=args.logging_dir)
        for key, value in logs.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, state.global_step)
        self.writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _import_extra(package: str, reporter: str) -> Any:
    """The optional package a reporter needs, or an ImportError naming what to install."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ImportError(
            f"report_to={reporter!r} needs the {package} package: pip install 's2s-toolkit[{reporter}]' "
            "(or remove it from report_to)"
        ) from err


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "TRUE", "YES", "ON"}


def run_parameters(args, model) -> dict[str, Any]:
    """The run's parameters for a tracker: the model config (when the model has one) under the training
    arguments, which win on a shared name, as Hugging Face sends them."""
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    model_config = to_dict() if callable(to_dict) else {}
    return {**model_config, **args.to_dict()}


def numeric_logs(logs: dict[str, Any]) -> dict[str, float]:
    """The entries a metrics backend can plot: ints and floats (one-element tensors as numbers); strings and
    other values are left out."""
    numbers = {}
    for key, value in logs.items():
        if hasattr(value, "numel") and value.numel() == 1:
            value = value.item()
        if isinstance(value, int | float) and not isinstance(value, bool):
            numbers[key] = value
        else:
            logger.debug("not sending %s=%r to the tracker: not a number", key, value)
    return numbers


class MLflowCallback(TrainerCallback):
    """Sends the run to MLflow on the main process: the arguments and model config as parameters once, every
    numeric log as a metric at the current global step.

    Environment, as for Hugging Face: ``MLFLOW_TRACKING_URI`` (where runs are stored; MLflow reads it),
    ``MLFLOW_EXPERIMENT_NAME`` (created when missing), ``MLFLOW_RUN_ID`` (reattach to a run, e.g. after a
    resume), ``MLFLOW_NESTED_RUN`` (start a nested run inside the active one), ``MLFLOW_TAGS`` (a JSON object of
    run tags) and ``HF_MLFLOW_LOG_ARTIFACTS`` (copy each saved checkpoint folder into the run's artifacts).
    The run this callback starts ends with training; an evaluation logged afterwards reopens it, so the final
    evaluation lands in the same run.
    """

    def __init__(self) -> None:
        self._mlflow = _import_extra("mlflow", "mlflow")
        validation = importlib.import_module("mlflow.utils.validation")
        self._max_param_length = getattr(validation, "MAX_PARAM_VAL_LENGTH", 250)
        self._max_batch = getattr(validation, "MAX_PARAMS_TAGS_PER_BATCH", 100)
        self._initialized = False
        self._run_id: str | None = None  # the run this callback started, to end and reopen

    def setup(self, args, state, model) -> None:
        self._initialized = True
        if not state.is_world_process_zero:
            return
        mlflow = self._mlflow
        nested = _env_flag("MLFLOW_NESTED_RUN")
        if mlflow.active_run() is None or nested or os.environ.get("MLFLOW_RUN_ID"):
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME")
            if experiment:
                mlflow.set_experiment(experiment)
            self._run_id = mlflow.start_run(run_name=args.run_name, nested=nested).info.run_id
        self._log_parameters(run_parameters(args, model))
        tags = os.environ.get("MLFLOW_TAGS")
        if tags:
            try:
                mlflow.set_tags(json.loads(tags))
            except json.JSONDecodeError as err:
                raise ValueError(f"MLFLOW_TAGS must be a JSON object of tags, got {tags!r}: {err}") from err

    def _log_parameters(self, params: dict[str, Any]) -> None:
        # MLflow stores parameters as strings of bounded length, at most _max_batch per call.
        too_long = [name for name, value in params.items() if len(str(value)) > self._max_param_length]
        if too_long:
            logger.warning(
                "not logging %s to MLflow: longer than its %d-character limit for a parameter",
                too_long,
                self._max_param_length,
            )
        items = [(name, value) for name, value in params.items() if name not in too_long]
        for start in range(0, len(items), self._max_batch):
            self._mlflow.log_params(dict(items[start : start + self._max_batch]))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self._initialized:
            self.setup(args, state, model)

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not self._initialized:
            self.setup(args, state, model)
        if not state.is_world_process_zero or not logs:
            return
        if self._run_id is not None and self._mlflow.active_run() is None:
            self._mlflow.start_run(run_id=self._run_id)  # evaluation after training: back into our run
        # MLflow refuses some characters in metric names (e.g. parentheses)
        metrics = {re.sub(r"[^0-9A-Za-z_\-\.\ :/]", "_", k): v for k, v in numeric_logs(logs).items()}
        self._mlflow.log_metrics(metrics, step=state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if self._initialized and state.is_world_process_zero and _env_flag("HF_MLFLOW_LOG_ARTIFACTS"):
            name = f"checkpoint-{state.global_step}"
            self._mlflow.log_artifacts(str(Path(args.output_dir) / name), artifact_path=name)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self._run_id is not None and self._mlflow.active_run() is not None:
            self._mlflow.end_run()


class WandbCallback(TrainerCallback):
    """Sends the run to Weights & Biases on the main process: the arguments and model config as the run
    config, every log at ``train/global_step`` (``eval_*`` under ``eval/``, ``predict_*``/``test_*`` under
    theirs, the rest under ``train/``), whole-run totals such as ``train_runtime`` in the run summary.

    Environment: ``WANDB_PROJECT`` (default "s2s"), ``WANDB_WATCH`` ("gradients", "parameters" or "all":
    also log those histograms), and W&B's own (``WANDB_MODE=offline``, ``WANDB_DIR``, ...). Model upload
    (``WANDB_LOG_MODEL``) is not done: a warning says so when it is set. The run stays open after training so
    the final evaluation joins it; W&B closes it when the process exits.
    """

    SUMMARY_KEYS = (
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "train_loss",
        "total_flos",
    )

    def __init__(self) -> None:
        self._wandb = _import_extra("wandb", "wandb")
        self._initialized = False
        if os.environ.get("WANDB_LOG_MODEL", "false").strip().lower() not in ("", "false", "0"):
            logger.warning(
                "WANDB_LOG_MODEL is set, but s2s does not upload models to W&B; unset it to silence this"
            )

    def setup(self, args, state, model) -> None:
        self._initialized = True
        if not state.is_world_process_zero:
            return
        wandb = self._wandb
        if wandb.run is None:
            names = (
                {"name": state.trial_name, "group": args.run_name}
                if state.trial_name
                else {"name": args.run_name}
            )
            wandb.init(project=os.environ.get("WANDB_PROJECT", "s2s"), **names)
        wandb.config.update(run_parameters(args, model), allow_val_change=True)
        wandb.define_metric("train/global_step")
        wandb.define_metric("*", step_metric="train/global_step", step_sync=True)
        watch = os.environ.get("WANDB_WATCH", "false")
        if watch in ("gradients", "parameters", "all") and model is not None:
            wandb.watch(model, log=watch, log_freq=max(100, args.logging_steps))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_hyper_param_search and self._initialized:  # one W&B run per trial
            self._wandb.finish()
            self._initialized = False
        if not self._initialized:
            self.setup(args, state, model)

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not self._initialized:
            self.setup(args, state, model)
        if not state.is_world_process_zero or not logs:
            return
        run = self._wandb.run
        for key in self.SUMMARY_KEYS:
            if key in logs:
                run.summary[key] = logs[key]
        series = {_wandb_name(k): v for k, v in logs.items() if k not in self.SUMMARY_KEYS}
        self._wandb.log({**series, "train/global_step": state.global_step})


def _wandb_name(key: str) -> str:
    """``eval_bleu`` -> ``eval/bleu``; ``loss`` -> ``train/loss``: one W&B panel section per split."""
    for split in ("eval", "predict", "test"):
        if key.startswith(f"{split}_"):
            return f"{split}/{key[len(split) + 1 :]}"
    return f"train/{key}"


REPORTERS = {
    "jsonl": JsonlLoggerCallback,
    "tensorboard": TensorBoardCallback,
    "mlflow": MLflowCallback,
    "wandb": WandbCallback,
}


def reporting_callbacks(report_to: list[str] | str | None) -> list[TrainerCallback]:
    """One callback per name in ``report_to`` (already resolved by TrainingArguments to a list)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    callbacks = []
    for name in names:
        if name == "none":
            continue
        if name not in REPORTERS:
            raise ValueError(f"report_to={name!r} is not supported; choose from {sorted(REPORTERS)}")
        callbacks.append(REPORTERS[name]())
    return callbacks
