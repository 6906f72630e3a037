"""Loggers are callbacks: each writes what ``Trainer.log`` sends through ``on_log``.

``jsonl`` needs nothing and is always available: one JSON object per log call, in
``<logging_dir or output_dir>/log.jsonl``. ``tensorboard`` writes scalars to ``logging_dir`` when the
tensorboard package is installed. ``report_to`` selects them (``TrainingArguments`` resolves "all"/"none").
"""

from __future__ import annotations

import json
import logging
import math
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


REPORTERS = {"jsonl": JsonlLoggerCallback, "tensorboard": TensorBoardCallback}


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
