"""The evaluation/prediction loop: what goes into ``compute_metrics``, and the eval loss.

Three things differ from Hugging Face's loop on purpose:

- the eval loss is the sum of token losses over the set divided by its target tokens (a corpus-level
  figure), not a mean of per-batch means (ANCHORS F8);
- predictions are padded across batches with the pad token id, never -100, so decoding them never crashes
  (F7); label ids keep -100 (``Seq2SeqTrainer`` replaces it before metrics);
- batches may come longest-first, and predictions go back to dataset order before anyone sees them (F13);
- under torch.distributed each process evaluates its shard (every ``world_size``-th example of the order);
  every row carries its dataset index, and the rows gathered from all processes come back in dataset order
  with each example exactly once (Hugging Face's Seq2SeqTrainer returns padding duplicates, F4).

``preprocess_logits_for_metrics`` runs on each batch before anything is kept, so an argmax keeps memory flat
in the size of the eval set instead of holding (examples x length x vocabulary) logits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from s2s import distributed
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
    example once, in dataset order (ANCHORS F4, F13). ``parts`` are row-aligned with ``index``;
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
def batch_size_of(inputs: dict[str, Any]) -> int:
    for value in inputs.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError(f"cannot tell the batch size: no tensor among the batch keys {sorted(inputs)}")


def run_evaluation_loop(
    trainer,
    dataloader,
    *,
    description: str,
    prediction_loss_only: bool,
    ignore_keys: list[str] | None,
    metric_key_prefix: str,
) -> EvalLoopOutput:
    """The body of ``Trainer.evaluation_loop``. The trainer supplies the model, the callbacks,
    ``compute_metrics`` and these override points, so that a subclass changes a step, not the loop:

    - ``prediction_step(model, inputs, prediction_loss_only, ignore_keys)``: loss, predictions, labels;
    - ``predictions_of_batch(logits, labels, batch_size=n)``: what is kept of one batch's predictions;
    - ``gather_eval_rows(index, parts, pad_values=..., sharded=...)``: every process's rows, by dataset index;
    - ``postprocess_label_ids(label_ids)``: the gathered labels, before ``compute_metrics`` sees them;
    - ``extra_eval_metrics(predictions, label_ids)``: metrics of the trainer's own (e.g. ``gen_len``);
    - ``keeps_eval_inputs()``: whether to keep the model's main input for each row."""
    args = trainer.args
    model = trainer._model_for_evaluation()
    trainer.callback_handler.eval_dataloader = dataloader
    trainer._past = None

    pad = trainer.prediction_pad_id
    predictions, labels_acc, inputs_acc = (
        BatchAccumulator(pad),
        BatchAccumulator(IGNORE_INDEX),
        BatchAccumulator(pad),
    )
    keep_inputs = trainer.keeps_eval_inputs()
    main_input = getattr(trainer.model, "main_input_name", "input_ids")
    # The dataset index of every row this process evaluates (its shard of a possibly length-sorted order).
    order = getattr(getattr(dataloader, "sampler", None), "order", None)
    indices: list[np.ndarray] = []
    loss_sum, loss_tokens, seen = 0.0, 0, 0

    for step, inputs in enumerate(dataloader):
        n = batch_size_of(inputs)
        loss_units = trainer._loss_units(inputs)
        loss, logits, labels = trainer.prediction_step(
            model, inputs, prediction_loss_only, ignore_keys=ignore_keys
        )
        if loss is not None:
            loss_sum += float(loss)
            loss_tokens += loss_units
        predictions.add(trainer.predictions_of_batch(logits, labels, batch_size=n))
        labels_acc.add(labels)
        if keep_inputs:
            inputs_acc.add(inputs.get(main_input))
        rows = order[seen : seen + n] if order is not None else range(seen, seen + n)
        indices.append(np.asarray(rows, dtype=np.int64))
        seen += n
        trainer.control = trainer.callback_handler.on_prediction_step(args, trainer.state, trainer.control)
        if args.eval_accumulation_steps is not None and (step + 1) % args.eval_accumulation_steps == 0:
            for acc in (predictions, labels_acc, inputs_acc):
                acc.to_cpu()

    # Each process evaluated its shard: sum the loss statistics, gather the rows by dataset index.
    loss_sum = all_reduce_sum(loss_sum)
    loss_tokens = all_reduce_sum(loss_tokens)
    index = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    index, (all_preds, all_labels, all_inputs) = trainer.gather_eval_rows(
        index,
        (predictions.result(), labels_acc.result(), inputs_acc.result()),
        pad_values=(pad, IGNORE_INDEX, pad),
        sharded=order is not None,
    )
    if all_labels is not None:
        all_labels = trainer.postprocess_label_ids(all_labels)

    metrics: dict[str, Any] = {}
    if trainer.compute_metrics is not None and all_preds is not None and all_labels is not None:
        eval_pred = EvalPrediction(
            all_preds, all_labels, inputs=all_inputs if args.include_inputs_for_metrics else None
        )
        metrics = dict(trainer.compute_metrics(eval_pred))
    # The trainer's own metrics win over a compute_metrics entry of the same name.
    metrics.update(trainer.extra_eval_metrics(all_preds, all_labels))
    if loss_tokens > 0:
        metrics["loss"] = loss_sum / loss_tokens
    metrics = prefix_metrics(metrics, metric_key_prefix)
    return EvalLoopOutput(all_preds, all_labels, metrics, len(index), inputs=all_inputs)


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


def num_batches(num_samples: int, batch_size: int) -> int:
    return math.ceil(num_samples / batch_size) if batch_size else 0
