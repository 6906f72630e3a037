"""The two toolkits behind one small interface: their trainer classes, their arguments, a timing callback.

`load_toolkit("ours")` gives `s2s` (Trainer, Seq2SeqTrainer, arguments, callback base class),
`load_toolkit("theirs")` gives `transformers`'. Both take the same settings here, so a comparison differs
only in what it means to compare: the toolkit. The optimizer is the same fused AdamW on both sides (it is
Hugging Face's default in 4.57.6), logging, saving and progress bars are off.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIDES = ("ours", "theirs")


# What both sides of every training comparison share: the same optimizer and schedule inputs, and none of the
# work (logging, checkpoints, progress bars, loader workers) that would time something other than training.
SHARED_SETTINGS: dict[str, Any] = {
    "optim": "adamw_torch_fused",
    "learning_rate": 5e-4,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "logging_steps": 10**6,
    "save_strategy": "no",
    "report_to": "none",
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
    "remove_unused_columns": False,
    "seed": 0,
}


@dataclass
class Toolkit:
    side: str
    """"ours" (s2s) or "theirs" (transformers)."""
    Trainer: type
    Seq2SeqTrainer: type | None
    """None while s2s.seq2seq_trainer is not written: the comparisons that need it leave our cells empty."""
    TrainingArguments: type
    Seq2SeqTrainingArguments: type
    TrainerCallback: type
    DataCollatorForSeq2Seq: type
    missing: str | None = None
    """Why `Seq2SeqTrainer` is None."""

    def seq2seq_trainer(self) -> type:
        if self.Seq2SeqTrainer is None:
            raise ImportError(f"{self.side}: no Seq2SeqTrainer ({self.missing})")
        return self.Seq2SeqTrainer

    def arguments(
        self, output_dir: Path, *, seq2seq: bool = False, precision: str = "fp32", **overrides: Any
    ):
        """Training arguments with the settings both sides share; `overrides` are passed through."""
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        settings: dict[str, Any] = {
            "output_dir": str(output_dir),
            "use_cpu": True,
            "bf16": precision == "bf16",
            "dataloader_pin_memory": False,
            **SHARED_SETTINGS,
        }
        settings.update(overrides)
        cls = self.Seq2SeqTrainingArguments if seq2seq else self.TrainingArguments
        return cls(**settings)


def load_toolkit(side: str) -> Toolkit:
    """The toolkit of one side; ImportError (with what is missing) when it cannot be used here."""
    if side == "ours":
        names = {
            "Trainer": "s2s.trainer",
            "Seq2SeqTrainer": "s2s.seq2seq_trainer",
            "TrainingArguments": "s2s.training_args",
            "Seq2SeqTrainingArguments": "s2s.seq2seq_training_args",
            "TrainerCallback": "s2s.callbacks",
            "DataCollatorForSeq2Seq": "s2s.data_collator",
        }
        classes: dict[str, Any] = {}
        for name, module in names.items():
            try:
                classes[name] = getattr(importlib.import_module(module), name)
            except ImportError as err:
                if name != "Seq2SeqTrainer":
                    raise
                classes.update(Seq2SeqTrainer=None, missing=f"{type(err).__name__}: {err}")
    elif side == "theirs":
        transformers = importlib.import_module("transformers")
        importlib.import_module("accelerate")  # transformers' Trainer refuses to run without it
        classes = {
            name: getattr(transformers, name)
            for name in (
                "Trainer",
                "Seq2SeqTrainer",
                "TrainingArguments",
                "Seq2SeqTrainingArguments",
                "TrainerCallback",
                "DataCollatorForSeq2Seq",
            )
        }
    else:
        raise ValueError(f"side must be 'ours' or 'theirs', got {side!r}")
    return Toolkit(side=side, **classes)


def available_toolkits() -> tuple[dict[str, Toolkit], dict[str, str]]:
    """The toolkits that import, and what is missing (e.g. s2s.seq2seq_trainer not written yet)."""
    found, missing = {}, {}
    for side in SIDES:
        try:
            found[side] = load_toolkit(side)
        except ImportError as err:
            missing[side] = f"{type(err).__name__}: {err}"
            continue
        if found[side].missing:
            missing[side] = f"Seq2SeqTrainer only: {found[side].missing}"
    return found, missing


def with_seq2seq(toolkits: dict[str, Toolkit]) -> dict[str, Toolkit]:
    """The toolkits that have a Seq2SeqTrainer."""
    return {side: toolkit for side, toolkit in toolkits.items() if toolkit.Seq2SeqTrainer is not None}


def step_timer(
    toolkit: Toolkit, *, start_step: int, end_step: int, synchronize: Callable[[], None] | None = None
):
    """A callback that times optimizer steps start_step+1 .. end_step (from the end of step `start_step` to
    the end of step `end_step`), so trainer set-up and warm-up steps are left out, then stops training.

    On a GPU the end of a step on the host is not the end of its work: a trainer that never waits on the
    device runs ahead of it. `synchronize` (e.g. `torch.cuda.synchronize`) is called before each clock
    reading, so the time covers the device's work of exactly those steps."""
    wait = synchronize or (lambda: None)

    class StepTimer(toolkit.TrainerCallback):
        def __init__(self) -> None:
            self.started: float | None = None
            self.seconds: float | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == start_step:
                wait()
                self.started = time.perf_counter()
            elif state.global_step == end_step and self.started is not None:
                wait()
                self.seconds = time.perf_counter() - self.started
                control.should_training_stop = True
            return control

    if start_step < 1 or end_step <= start_step:
        raise ValueError(
            f"need 1 <= start_step < end_step (at least one warm-up step), got {start_step}, {end_step}"
        )
    return StepTimer()


def wall_clock_limit(toolkit: Toolkit, *, seconds: float):
    """A callback that stops training after `seconds` of training (measured from on_train_begin)."""

    class WallClockLimit(toolkit.TrainerCallback):
        def __init__(self) -> None:
            self.started = 0.0
            self.elapsed = 0.0
            self.steps = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            return control

        def on_step_end(self, args, state, control, **kwargs):
            self.elapsed = time.perf_counter() - self.started
            self.steps = state.global_step
            if self.elapsed >= seconds:
                control.should_training_stop = True
            return control

    return WallClockLimit()
