"""What one ``train()`` call has done, for the progress logs and the final training metrics.

The loss sums themselves live in ``TrainerState.loss_accumulators`` (they are checkpointed, so a resumed
run logs the right loss); what is counted here covers this call only: examples and tokens seen (for the
speed figures), real and padded tokens since the last log, and the last finite gradient norm.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from s2s.batch import batch_size_of
from s2s.callbacks import TrainerState
from s2s.evaluation import speed_metrics
from s2s.memory_metrics import peak_memory_metrics
from samplers import batch_padding_counts

AllReduce = Callable[[Any], Any]  # the strategy's sum over processes


class TrainingMeter:
    def __init__(self, *, start_step: int) -> None:
        self.start_time = time.time()
        self.samples = 0  # this process's
        self.tokens = 0  # all processes' (the loop's token counts are already all-reduced)
        self.real_tokens, self.padded_tokens = 0, 0  # since the last log
        self.grad_norm: float | None = None
        self.last_logged_step = start_step

    def count_batch(self, batch: Mapping[str, Any]) -> None:
        self.samples += batch_size_of(batch)
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            real, padded = batch_padding_counts(mask, batch.get("labels"))
            self.real_tokens += real
            self.padded_tokens += padded

    def count_update(self, *, tokens: int) -> None:
        """One optimizer update over ``tokens`` target tokens."""
        self.tokens += tokens

    def progress_logs(self, state: TrainerState, *, learning_rate: float, all_reduce: AllReduce) -> dict:
        """The figures logged every ``logging_steps`` (the loss since the last log, the gradient norm, the
        learning rate, padding efficiency, skipped updates); starts the next logging interval."""
        acc = state.loss_accumulators
        logs: dict[str, float] = {}
        if acc.get("log_units", 0) > 0:
            logs["loss"] = acc["log_loss"] / acc["log_units"]
        if self.grad_norm is not None:
            logs["grad_norm"] = self.grad_norm
        logs["learning_rate"] = learning_rate
        real, padded = all_reduce(self.real_tokens), all_reduce(self.padded_tokens)
        if padded:
            logs["padding_efficiency"] = real / padded
        if state.nonfinite_steps:
            logs["nonfinite_steps"] = state.nonfinite_steps
        acc["log_loss"], acc["log_units"] = 0.0, 0
        self.real_tokens, self.padded_tokens = 0, 0
        self.last_logged_step = state.global_step
        return logs

    def train_metrics(self, state: TrainerState, *, all_reduce: AllReduce, memory: bool) -> dict[str, float]:
        """``train_loss`` (all tokens of the run), speed figures of this call and, with ``memory``, peaks."""
        units = state.loss_accumulators.get("total_units", 0)
        metrics = speed_metrics(
            "train", self.start_time, num_samples=all_reduce(self.samples), num_tokens=self.tokens
        )
        metrics["train_loss"] = (
            state.loss_accumulators.get("total_loss", 0.0) / units if units else float("nan")
        )
        metrics["nonfinite_steps"] = state.nonfinite_steps
        if memory:
            metrics.update(peak_memory_metrics("train"))
        return metrics
