"""The evaluation/prediction loop: what goes into ``compute_metrics``, and the eval loss.

Some things differ from Hugging Face's loop on purpose:

- the eval loss is the sum of token losses over the set divided by its target tokens: a corpus-level figure
  that does not depend on how the set was cut into batches (a mean of per-batch means weighs the tokens of a
  short batch more);
- predictions are padded across batches with the pad token id, never -100, so decoding them never crashes
  (a tokenizer cannot decode -100); label ids keep -100 (``Seq2SeqTrainer`` replaces it before metrics);
- batches may come longest-first (tight batches, and an out-of-memory shows at the first one), and
  predictions go back to dataset order before anyone sees them;
- under torch.distributed each process evaluates its shard (every ``world_size``-th example of the order);
  every row carries its dataset index, and the rows gathered from all processes come back in dataset order
  with each example exactly once (a sampler that pads shards with repeats would otherwise count some
  examples twice in the metrics, as Hugging Face's Seq2SeqTrainer does).

The loop knows nothing of the trainer: the override points it calls are the ``EvaluationSteps`` protocol,
and everything else comes in an ``EvaluationSetup``.

``preprocess_logits_for_metrics`` runs on each batch before anything is kept, so an argmax keeps memory flat
in the size of the eval set instead of holding (examples x length x vocabulary) logits.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from s2s import distributed
from s2s.batch import batch_size_of
from s2s.distributed import all_reduce_sum
from s2s.loss import IGNORE_INDEX

Nested = Any  # a tensor/array, or a tuple/list of them (possibly nested)


class EvalPrediction:
    """What ``compute_metrics`` receives: ``predictions`` and ``label_ids`` as numpy arrays (or tuples of
    them), and ``inputs`` with ``include_inputs_for_metrics``. Unpacks like a tuple:
    ``predictions, labels = eval_pred``."""

    def __init__(self, predictions: Nested, label_ids: Nested, inputs: Nested | None = None) -> None:
        self.predictions = predictions
        self.label_ids = label_ids
        self.inputs = inputs

    def _items(self) -> tuple:
        items = (self.predictions, self.label_ids)
        return items if self.inputs is None else (*items, self.inputs)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items())

    def __getitem__(self, index: int) -> Any:
        return self._items()[index]

    def __len__(self) -> int:
        return len(self._items())


@dataclass
class EvalLoopOutput:
    predictions: Nested | None
    label_ids: Nested | None
    metrics: dict[str, float]
    num_samples: int
    inputs: Nested | None = None


@dataclass
class PredictionOutput:
    predictions: Nested | None
    label_ids: Nested | None
    metrics: dict[str, float]

    def __iter__(self) -> Iterator[Any]:  # predictions, label_ids, metrics = trainer.predict(...)
        return iter((self.predictions, self.label_ids, self.metrics))


# ------------------------------------------------------------------------------------------- containers
def nested_map(fn: Callable[[Any], Any], value: Nested) -> Nested:
    if isinstance(value, (tuple, list)):
        return type(value)(nested_map(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: nested_map(fn, v) for k, v in value.items()}
    return fn(value)


def to_numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    value = value.detach()
    if value.dtype == torch.bfloat16:  # numpy has no bfloat16
        value = value.float()
    return value.cpu().numpy()


def pad_and_concatenate(arrays: list[np.ndarray], pad_value: int | float) -> np.ndarray:
    """Concatenate on the first axis, padding every other axis to its maximum with ``pad_value``."""
    return _concatenate_releasing(list(arrays), pad_value)  # a copy of the list: the caller's stays as it is


class BatchAccumulator:
    """Keeps per-batch tensors (or nested tuples of them) and concatenates them at the end, padded with
    ``pad_value``. ``to_cpu()`` converts what it holds to numpy (``eval_accumulation_steps``), freeing the
    device memory. ``result()`` hands its batches over: each is released once copied into the output, so the
    peak is the output plus one batch, not twice the predictions (full logits of a large evaluation are
    gigabytes)."""

    def __init__(self, pad_value: int | float) -> None:
        self.pad_value = pad_value
        self.batches: list[Nested] = []

    def add(self, value: Nested | None) -> None:
        if value is not None:
            self.batches.append(nested_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, value))

    def to_cpu(self) -> None:
        self.batches = [nested_map(to_numpy, b) for b in self.batches]

    def result(self) -> Nested | None:
        """The concatenation of everything added; the accumulator is empty afterwards."""
        if not self.batches:
            return None
        batches, self.batches = self.batches, []
        return _concat_nested(batches, self.pad_value)


def _concat_nested(batches: list[Nested], pad_value: int | float) -> Nested:
    """Concatenate a list of same-structured batches leaf by leaf, emptying ``batches`` as it goes."""
    first = batches[0]
    if isinstance(first, (tuple, list, dict)):
        keys = range(len(first)) if isinstance(first, (tuple, list)) else list(first)
        columns = {k: [b[k] for b in batches] for k in keys}
        batches.clear()  # the columns now hold the only references, and give each one up when it is copied
        merged = {k: _concat_nested(columns.pop(k), pad_value) for k in keys}
        return type(first)(merged[k] for k in keys) if isinstance(first, (tuple, list)) else merged
    return _concatenate_releasing(batches, pad_value)


def _concatenate_releasing(arrays: list[Any], pad_value: int | float) -> np.ndarray:
    """`pad_and_concatenate` for a list of tensors or arrays that it empties: each item is converted to numpy
    (bf16 becomes float32), copied into the preallocated output and dropped before the next one."""
    for i, a in enumerate(arrays):
        if not hasattr(a, "shape"):  # a Python or numpy scalar
            arrays[i] = np.asarray(a)
    shapes = [tuple(a.shape) or (1,) for a in arrays]
    if len({len(shape) for shape in shapes}) != 1:
        raise ValueError(f"cannot concatenate batches of different ranks: {shapes}")
    dtype = np.result_type(*(to_numpy(a[:0] if a.ndim else a.reshape(1)[:0]).dtype for a in arrays))
    trailing = tuple(max(shape[d] for shape in shapes) for d in range(1, len(shapes[0])))
    ragged = any(shape[1:] != trailing for shape in shapes)
    total = sum(shape[0] for shape in shapes)
    # np.empty leaves the pages untouched: memory is committed block by block as the batches are released
    out = np.empty((total, *trailing), dtype)
    row = 0
    for i, shape in enumerate(shapes):
        batch = np.atleast_1d(to_numpy(arrays[i]))
        arrays[i] = None  # release the tensor (and its float32 copy, if bf16) before converting the next
        block = out[row : row + shape[0]]
        if ragged:
            block.fill(pad_value)
        block[(slice(None), *(slice(0, n) for n in shape[1:]))] = batch
        del batch
        row += shape[0]
    arrays.clear()
    return out


def gather_in_dataset_order(
    index: np.ndarray, parts: tuple[Nested | None, ...], *, pad_values: tuple[int | float, ...]
) -> tuple[np.ndarray, tuple[Nested | None, ...]]:
    """Gather ``(dataset index, rows)`` from every process, keep the first row of each index and sort by
    index. So shards of a length-sorted order, or a sampler that pads shards with repeats, still yield each
    example once, in dataset order. ``parts`` are row-aligned with ``index``;
    ``pad_values`` pad each across processes (their rows may have different lengths)."""
    if distributed.is_distributed():
        gathered = distributed.all_gather_object((index, parts))
        index = np.concatenate([g[0] for g in gathered])
        parts = tuple(_concat_gathered([g[1][i] for g in gathered], pad_values[i]) for i in range(len(parts)))
    unique, first = np.unique(index, return_index=True)
    if len(first) == len(index) and np.array_equal(first, np.arange(len(index))):
        return index, parts  # already once each, in order
    return unique, tuple(None if p is None else nested_map(lambda a: a[first], p) for p in parts)


def _concat_gathered(values: list[Nested | None], pad_value: int | float) -> Nested | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, (tuple, list)):
        return type(first)(_concat_gathered([v[i] for v in present], pad_value) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: _concat_gathered([v[k] for v in present], pad_value) for k in first}
    return pad_and_concatenate([np.atleast_1d(np.asarray(v)) for v in present], pad_value)


# ------------------------------------------------------------------------------------------- the loop
class EvaluationSteps(Protocol):
    """The override points the loop calls, so that a subclass changes a step, not the loop. ``Trainer``
    implements them (its public methods of the same names); ``Seq2SeqTrainer`` overrides several."""

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None,
    ) -> tuple[torch.Tensor | None, Any, Any]:
        """(summed loss or None, predictions or None, labels or None) of one batch."""

    def predictions_of_batch(self, logits: Any, labels: Any, *, batch_size: int) -> Any:
        """What is kept of one batch's predictions."""

    def keeps_eval_inputs(self) -> bool:
        """Whether to keep the model's main input of each row."""

    def gather_eval_rows(
        self, index: np.ndarray, parts: tuple[Nested | None, ...], *, pad_values: tuple, sharded: bool
    ) -> tuple[np.ndarray, tuple[Nested | None, ...]]:
        """Every process's rows, each example once, by dataset index."""

    def postprocess_label_ids(self, label_ids: Nested) -> Nested:
        """The gathered labels, before ``compute_metrics`` sees them."""

    def extra_eval_metrics(self, predictions: Nested | None, label_ids: Nested | None) -> dict[str, float]:
        """Metrics of the trainer's own (e.g. ``gen_len``); they win over ``compute_metrics``'s."""


@dataclass(frozen=True)
class EvaluationSetup:
    """Everything else the loop needs, passed in by the trainer."""

    model: nn.Module  # ready to evaluate (eval mode, cast for full half-precision evaluation)
    pad_id: int  # pads predictions and inputs across batches (never -100, so decoding them never fails)
    main_input_name: str  # the input kept per row with ``keeps_eval_inputs``
    loss_units: Callable[[Mapping[str, Any]], int]  # what a batch's summed loss is summed over
    compute_metrics: Callable[[EvalPrediction], dict[str, float]] | None
    include_inputs_for_metrics: bool
    eval_accumulation_steps: int | None  # move predictions to the CPU every this many batches
    on_prediction_step: Callable[[], None] = lambda: None  # after each batch (the callbacks' hook)


def prediction_pad_id(tokenizer: Any, model: nn.Module) -> int:
    """The id that pads predictions across batches: the tokenizer's pad id, else the model config's, or 0."""
    for source in (tokenizer, getattr(model, "config", None)):
        pad = getattr(source, "pad_token_id", None)
        if pad is not None:
            return int(pad)
    return 0


def keys_to_ignore_at_inference(model: nn.Module) -> list[str]:
    """The output keys a model's config says to leave out of the predictions (Hugging Face's
    ``keys_to_ignore_at_inference``, e.g. cached key/values); none without a config."""
    return list(getattr(getattr(model, "config", None), "keys_to_ignore_at_inference", []) or [])


def model_for_evaluation(model: nn.Module, args, *, in_training: bool) -> nn.Module:
    """``model`` in eval mode; cast to bf16/fp16 with ``bf16_full_eval``/``fp16_full_eval``, which changes
    the weights, so only outside training."""
    if not in_training:
        if args.bf16_full_eval:
            model = model.to(dtype=torch.bfloat16)
        elif args.fp16_full_eval:
            model = model.to(dtype=torch.float16)
    model.eval()
    return model


class _Rows:
    """What the loop accumulates over the batches of this process."""

    def __init__(self, pad_id: int) -> None:
        self.predictions = BatchAccumulator(pad_id)
        self.labels = BatchAccumulator(IGNORE_INDEX)
        self.inputs = BatchAccumulator(pad_id)
        self.indices: list[np.ndarray] = []  # each row's dataset index
        self.loss_sum, self.loss_tokens, self.seen = 0.0, 0, 0

    def to_cpu(self) -> None:
        for acc in (self.predictions, self.labels, self.inputs):
            acc.to_cpu()

    def index(self) -> np.ndarray:
        return np.concatenate(self.indices) if self.indices else np.zeros(0, dtype=np.int64)


def run_evaluation_loop(
    steps: EvaluationSteps,
    dataloader,
    setup: EvaluationSetup,
    *,
    prediction_loss_only: bool,
    ignore_keys: list[str] | None,
    metric_key_prefix: str,
) -> EvalLoopOutput:
    """The body of ``Trainer.evaluation_loop``: predict every batch of this process's shard, gather the rows
    of all processes in dataset order, then metrics (see the module docstring)."""
    rows = _predict_batches(steps, dataloader, setup, prediction_loss_only, ignore_keys)
    # Each process evaluated its shard: sum the loss statistics, gather the rows by dataset index.
    loss_sum, loss_tokens = all_reduce_sum(rows.loss_sum), all_reduce_sum(rows.loss_tokens)
    order = getattr(getattr(dataloader, "sampler", None), "order", None)
    index, (all_preds, all_labels, all_inputs) = steps.gather_eval_rows(
        rows.index(),
        (rows.predictions.result(), rows.labels.result(), rows.inputs.result()),
        pad_values=(setup.pad_id, IGNORE_INDEX, setup.pad_id),
        sharded=order is not None,
    )
    if all_labels is not None:
        all_labels = steps.postprocess_label_ids(all_labels)
    metrics: dict[str, Any] = {}
    if setup.compute_metrics is not None and all_preds is not None and all_labels is not None:
        inputs = all_inputs if setup.include_inputs_for_metrics else None
        metrics = dict(setup.compute_metrics(EvalPrediction(all_preds, all_labels, inputs=inputs)))
    # The trainer's own metrics win over a compute_metrics entry of the same name.
    metrics.update(steps.extra_eval_metrics(all_preds, all_labels))
    if loss_tokens > 0:
        metrics["loss"] = loss_sum / loss_tokens
    metrics = prefix_metrics(metrics, metric_key_prefix)
    return EvalLoopOutput(all_preds, all_labels, metrics, len(index), inputs=all_inputs)


def _predict_batches(
    steps: EvaluationSteps,
    dataloader,
    setup: EvaluationSetup,
    prediction_loss_only: bool,
    ignore_keys: list[str] | None,
) -> _Rows:
    rows = _Rows(setup.pad_id)
    keep_inputs = steps.keeps_eval_inputs()
    # The dataset index of every row this process evaluates (its shard of a possibly length-sorted order).
    order = getattr(getattr(dataloader, "sampler", None), "order", None)
    for step, inputs in enumerate(dataloader):
        n = batch_size_of(inputs)
        units = setup.loss_units(inputs)
        loss, logits, labels = steps.prediction_step(
            setup.model, inputs, prediction_loss_only, ignore_keys=ignore_keys
        )
        if loss is not None:
            rows.loss_sum += float(loss)
            rows.loss_tokens += units
        rows.predictions.add(steps.predictions_of_batch(logits, labels, batch_size=n))
        rows.labels.add(labels)
        if keep_inputs:
            rows.inputs.add(inputs.get(setup.main_input_name))
        positions = order[rows.seen : rows.seen + n] if order is not None else range(rows.seen, rows.seen + n)
        rows.indices.append(np.asarray(positions, dtype=np.int64))
        rows.seen += n
        setup.on_prediction_step()
        if setup.eval_accumulation_steps is not None and (step + 1) % setup.eval_accumulation_steps == 0:
            rows.to_cpu()
    return rows


def write_predictions_jsonl(output: EvalLoopOutput, path: Path) -> None:
    """One JSON line per example: ``id`` (dataset index), ``prediction`` and, with labels, ``label`` (the
    first array of each when they are tuples)."""
    preds = output.predictions[0] if isinstance(output.predictions, (tuple, list)) else output.predictions
    labels = output.label_ids[0] if isinstance(output.label_ids, (tuple, list)) else output.label_ids
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i, pred in enumerate(preds):
            record = {"id": i, "prediction": np.asarray(pred).tolist()}
            if labels is not None:
                record["label"] = np.asarray(labels[i]).tolist()
            f.write(json.dumps(record) + "\n")


def prefix_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``{"bleu": 30}`` -> ``{"eval_bleu": 30}``; keys that already carry the prefix are kept."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        out[key if key.startswith(f"{prefix}_") else f"{prefix}_{key}"] = value
    return out


def speed_metrics(
    prefix: str,
    start_time: float,
    *,
    num_samples: int | None = None,
    num_steps: int | None = None,
    num_tokens: int | None = None,
) -> dict[str, float]:
    """``<prefix>_runtime`` and, when counts are given, samples/steps/tokens per second."""
    runtime = time.time() - start_time
    out = {f"{prefix}_runtime": round(runtime, 4)}
    if runtime <= 0:
        return out
    if num_samples is not None:
        out[f"{prefix}_samples_per_second"] = round(num_samples / runtime, 3)
    if num_steps is not None:
        out[f"{prefix}_steps_per_second"] = round(num_steps / runtime, 3)
    if num_tokens is not None:
        out[f"{prefix}_tokens_per_second"] = round(num_tokens / runtime, 3)
    return out


def evaluation_speed(
    prefix: str, start_time: float, num_samples: int, total_batch_size: int
) -> dict[str, float]:
    """``speed_metrics`` of an evaluation whose processes ran batches of ``total_batch_size`` examples in
    all side by side (each its own shard): a step is one such round, as Hugging Face counts them."""
    steps = num_batches(num_samples, total_batch_size)
    return speed_metrics(prefix, start_time, num_samples=num_samples, num_steps=steps)


def num_batches(num_samples: int, batch_size: int) -> int:
    return math.ceil(num_samples / batch_size) if batch_size else 0
