"""``Seq2SeqTrainer``: the generic ``Trainer`` plus evaluation by generation, done right.

What it adds, and why:

- ``sortish_sampler=True`` really trains in ``samplers.SortishSampler`` order (in Hugging Face nothing reads
  the flag, so it silently trains in random order), and the sampler and generation settings are logged when
  training starts;
- generation settings merge with a fixed precedence, checked when the trainer is built: call kwargs >
  ``generation_max_length``/``generation_num_beams`` > ``args.generation_config`` > the model's own config;
- ``prediction_step`` generates, and also computes the teacher-forced loss when the batch has labels, as
  Hugging Face does (``compute_generate_loss=False`` skips it), summed over tokens so that the eval loss is a
  corpus-level figure;
- evaluation runs longest source first (tight ``generate`` batches), sharded across processes without
  padding; every row carries its dataset index, so the gathered predictions come back in dataset order with
  each example exactly once;
- generated ids and labels are padded with the pad id, never -100, so ``batch_decode`` never crashes;
- ``eval_gen_len`` is the mean number of generated tokens (start token and pads not counted), and
  ``save_predictions`` writes ``{prefix}_predictions.jsonl`` (id, source, reference, hypothesis).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import inspect
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import IterableDataset

from s2s.callbacks import TrainerCallback
from s2s.dataloaders import dataset_lengths
from s2s.evaluation import EvalLoopOutput, Nested, nested_map
from s2s.evaluation import gather_in_dataset_order as gather_in_dataset_order  # re-exported: tests import it
from s2s.loss import IGNORE_INDEX
from s2s.models.packed import fixed_weights
from s2s.seq2seq_training_args import Seq2SeqTrainingArguments
from s2s.stream_position import is_resumable_stream
from s2s.trainer import Trainer
from samplers import SortishSampler, eval_order, lengths_from_dataset

logger = logging.getLogger(__name__)

# A call that sets one of these replaces both: with "smallest limit wins" semantics a lower layer's
# max_new_tokens would otherwise silently beat a higher layer's max_length.
_LENGTH_LIMITS = ("max_length", "max_new_tokens")


def _refuse_sortish_for(dataset: Any, args: Seq2SeqTrainingArguments) -> None:
    """``sortish_sampler`` orders a map-style dataset by its examples' lengths; an iterable dataset has no
    index to order. A stream that cuts its own batches (``StreamingTokenBatches``) already sorts by length,
    so the message says that instead of suggesting it lacks lengths."""
    if not args.sortish_sampler or not isinstance(dataset, IterableDataset):
        return
    name = type(dataset).__name__
    if is_resumable_stream(dataset):
        raise ValueError(
            f"sortish_sampler=True does not apply to {name}: a streamed dataset cuts its own token-budget "
            "batches, already sorted by length inside its look-ahead windows (window_size, max_tokens); set "
            "sortish_sampler=False and tune the stream's window_size for tighter batches"
        )
    raise ValueError(
        f"sortish_sampler=True needs a map-style train_dataset (it sorts examples by length), but {name} is "
        "an IterableDataset with no index: set sortish_sampler=False, or use a map-style dataset (or "
        "samplers.streaming.StreamingTokenBatches, which batches a stream by length itself)"
    )


class Seq2SeqTrainer(Trainer):
    """``Trainer`` for encoder-decoder models evaluated by generation (any model with ``generate``: the
    project's ``TransformerForConditionalGeneration`` or a Hugging Face seq2seq model).

    ``processing_class`` is Hugging Face's newer name for ``tokenizer`` (give one of them).

    ``compute_generate_loss``: with ``predict_with_generate``, also compute the teacher-forced loss of batches
    that have labels (``eval_loss`` / ``predict_loss``, as Hugging Face reports them): one forward pass per
    batch, cheap next to generation. False runs ``generate`` alone, when nothing reads the loss (it cannot
    be False when ``metric_for_best_model`` is a loss).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args=None,
        data_collator: Callable | None = None,
        train_dataset=None,
        eval_dataset=None,
        tokenizer=None,
        model_init: Callable[..., nn.Module] | None = None,
        compute_metrics: Callable | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, Any] = (None, None),
        preprocess_logits_for_metrics: Callable | None = None,
        *,
        processing_class=None,
        compute_generate_loss: bool = True,
    ) -> None:
        if args is None:
            args = Seq2SeqTrainingArguments(output_dir="tmp_trainer")
        for name in ("sortish_sampler", "predict_with_generate", "generation_max_length"):
            if not hasattr(args, name):
                raise TypeError(
                    f"Seq2SeqTrainer needs Seq2SeqTrainingArguments, got {type(args).__name__} (no {name!r}); "
                    "use s2s.Seq2SeqTrainingArguments"
                )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            tokenizer=tokenizer,
            model_init=model_init,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            processing_class=processing_class,
        )
        self.compute_generate_loss = compute_generate_loss
        best = args.metric_for_best_model  # also what a reduce_lr_on_plateau schedule steps on
        if not compute_generate_loss and args.predict_with_generate and best and best.endswith("loss"):
            raise ValueError(
                f"compute_generate_loss=False but metric_for_best_model={best!r} reads the evaluation loss "
                "(to keep the best checkpoint, stop early or step a plateau schedule); leave "
                "compute_generate_loss=True or choose a generation metric"
            )
        _refuse_sortish_for(train_dataset, args)
        if args.predict_with_generate and not callable(getattr(self._generation_model(), "generate", None)):
            raise ValueError(
                f"predict_with_generate=True but {type(self._generation_model()).__name__} has no generate(); "
                "use a model with generate or set predict_with_generate=False"
            )
        # A bad generation setting (alone or in combination) fails here, not after an hour of training.
        self._gen_config = self.build_generation_config()

    # -------------------------------------------------------------------------------------- generation
    def _generation_model(self) -> nn.Module:
        return self.strategy.unwrap(self.model)

    def build_generation_config(self, **gen_kwargs: Any) -> Any:
        """The merged, validated generation config: the model's ``generation_config`` updated by
        ``args.generation_config`` (its explicitly set fields), then ``generation_max_length`` /
        ``generation_num_beams``, then ``gen_kwargs``. Setting either length limit in a layer resets the
        other one from the layers below. Unknown options raise, naming them. A model without a
        ``generation_config`` gets a plain dict of the settings (passed to ``generate`` as kwargs)."""
        args = self.args
        layers: list[tuple[str, dict[str, Any]]] = [
            ("args.generation_config", args.explicit_generation_settings()),
            (
                "generation_max_length/generation_num_beams",
                {
                    k: v
                    for k, v in (
                        ("max_length", args.generation_max_length),
                        ("num_beams", args.generation_num_beams),
                    )
                    if v is not None
                },
            ),
            ("evaluate()/predict() keyword arguments", dict(gen_kwargs)),
        ]
        base = getattr(self._generation_model(), "generation_config", None)
        if base is None:
            merged: dict[str, Any] = {}
            for _, settings in layers:
                merged.update(settings)
            return merged
        config = copy.deepcopy(base)
        known = set(config.to_dict())
        default = type(config)()
        overrides: dict[str, Any] = {}
        for source, settings in layers:
            unknown = [k for k in settings if k not in known]
            if unknown:
                raise ValueError(_unknown_options_message(unknown, known, source, type(config).__name__))
            if any(k in settings for k in _LENGTH_LIMITS):
                for name in _LENGTH_LIMITS:
                    overrides[name] = getattr(default, name)
            overrides.update(settings)
        config.update(**overrides)
        _validate(config)
        return config

    def _decoder_start_id(self) -> int | None:
        for source in (self._gen_config, getattr(self._generation_model(), "config", None)):
            value = (
                source.get("decoder_start_token_id")
                if isinstance(source, dict)
                else getattr(source, "decoder_start_token_id", None)
            )
            if value is not None:
                return int(value)
        return None

    def _num_return_sequences(self) -> int:
        config = self._gen_config
        value = (
            config.get("num_return_sequences") if isinstance(config, dict) else config.num_return_sequences
        )
        return int(value or 1)

    def _describe_generation(self) -> str:
        config = self._gen_config
        values = config if isinstance(config, dict) else config.to_dict()
        keys = ("max_length", "max_new_tokens", "max_length_a", "max_length_b", "num_beams", "length_penalty",
                "early_stopping", "no_repeat_ngram_size", "num_return_sequences", "do_sample")  # fmt: skip
        return ", ".join(f"{k}={values[k]}" for k in keys if k in values)

    # -------------------------------------------------------------------------------------- training
    def get_train_sampler(self, dataset):
        """``SortishSampler`` over (source, target) lengths with ``sortish_sampler=True``; else the
        generic choice (token budget, length-grouped or random)."""
        if not self.args.sortish_sampler:
            return super().get_train_sampler(dataset)
        _refuse_sortish_for(dataset, self.args)  # a dataset set after the trainer was built
        lengths = dataset_lengths(
            dataset,
            length_column_name=self.args.length_column_name,
            input_name=getattr(self.model, "main_input_name", "input_ids"),
        )
        sampler = SortishSampler(
            lengths,
            self._train_batch_size,
            seed=self._data_seed,
            num_replicas=self.strategy.world_size,
            rank=self.strategy.rank,
        )
        logger.info(
            "sortish_sampler=True: training order from SortishSampler (%d examples, batch %d, chunks of %d "
            "batches)", sampler.num_examples, sampler.batch_size, sampler.chunk_mult
        )  # fmt: skip
        return sampler

    def train(self, *args: Any, **kwargs: Any):
        if self.args.predict_with_generate:
            logger.info("evaluation generates with: %s", self._describe_generation())
        else:
            logger.info("evaluation is teacher-forced (predict_with_generate=False): no generation")
        return super().train(*args, **kwargs)

    # -------------------------------------------------------------------------------------- evaluate/predict
    def evaluate(
        self,
        eval_dataset=None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
        **gen_kwargs: Any,
    ) -> dict[str, float]:
        """Evaluate; ``gen_kwargs`` (``max_new_tokens``, ``num_beams``, ``length_penalty``, ...) override
        every other generation setting for this call only (None values are ignored)."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):  # one evaluation per named set, each with the same gen_kwargs
            metrics: dict[str, float] = {}
            for name, part in dataset.items():
                metrics.update(self.evaluate(part, ignore_keys, f"{metric_key_prefix}_{name}", **gen_kwargs))
            return metrics
        with self._generation_settings(gen_kwargs):
            return super().evaluate(dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(
        self,
        test_dataset,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "test",
        **gen_kwargs,
    ):
        """Predictions (generated ids with ``predict_with_generate``) in dataset order, label ids (pad id
        where the collator put -100) and metrics; ``gen_kwargs`` as in ``evaluate``."""
        with self._generation_settings(gen_kwargs):
            return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    @contextlib.contextmanager
    def _generation_settings(self, gen_kwargs: dict[str, Any]) -> Iterator[None]:
        """Use ``gen_kwargs`` on top of the trainer's settings for one evaluate/predict call. A None value
        means "not given" (Hugging Face's examples pass ``num_beams=None``): that setting comes from the
        layers below (``generation_max_length``/``generation_num_beams``, then the generation config)."""
        gen_kwargs = {name: value for name, value in gen_kwargs.items() if value is not None}
        if gen_kwargs and not self.args.predict_with_generate:
            raise ValueError(
                f"generation options {sorted(gen_kwargs)} only apply with predict_with_generate=True; "
                "set it or drop them"
            )
        saved, self._gen_config = self._gen_config, self.build_generation_config(**gen_kwargs)
        try:
            # the weights do not change while the loop decodes: generate calls share one weight pack
            with fixed_weights(self._generation_model()):
                yield
        finally:
            self._gen_config = saved

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, Any, Any]:
        """With ``predict_with_generate``: ``(summed token loss or None, generated ids, labels)``. The loss
        is a teacher-forced forward pass, run when the batch has labels unless ``compute_generate_loss`` is
        False."""
        if not self.args.predict_with_generate or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        loss = None
        with torch.no_grad(), self._autocast(evaluating=True):
            if labels is not None and self.compute_generate_loss:
                loss = self.compute_loss(model, inputs).detach().float()
            generated = self._generate(inputs)
        return loss, generated, labels

    def _generate(self, inputs: dict[str, Any]) -> torch.Tensor:
        model = self._generation_model()  # generate lives on the module, not on its DDP wrapper
        main = getattr(model, "main_input_name", "input_ids")
        if main not in inputs:
            raise KeyError(
                f"predict_with_generate needs {main!r} in the batch; its keys are {sorted(inputs)}"
            )
        config = self._gen_config
        options = config if isinstance(config, dict) else {"generation_config": config}
        out = model.generate(inputs[main], attention_mask=inputs.get("attention_mask"), **options)
        return out if isinstance(out, torch.Tensor) else out.sequences

    # -------------------------------------------------------------------------------------- loop steps
    def get_eval_order(self, dataset) -> list[int]:
        """Longest source first with generation (tight ``generate`` batches) or ``group_by_length``; else
        dataset order. Each process takes every ``world_size``-th example of it: no padding repeats."""
        order = list(range(len(dataset)))
        main = getattr(self.model, "main_input_name", "input_ids")
        sort = self.args.predict_with_generate or self.args.group_by_length
        if sort and order and main in _columns(dataset):
            order, _ = eval_order(lengths_from_dataset(dataset, column=main))
        return order

    def predictions_of_batch(self, logits: Any, labels: Any, *, batch_size: int) -> Any:
        """As in ``Trainer``, then n-best generations (``num_return_sequences``) as ``(n, k, length)``, so
        that every example keeps one row."""
        preds = super().predictions_of_batch(logits, labels, batch_size=batch_size)
        n_best = isinstance(preds, torch.Tensor) and preds.shape[0] != batch_size
        if n_best and self.args.predict_with_generate:
            preds = preds.view(batch_size, -1, preds.shape[-1])
        return preds

    def keeps_eval_inputs(self) -> bool:
        """Also with ``save_predictions``, which writes each source next to its hypothesis."""
        return self.args.include_inputs_for_metrics or self.args.save_predictions

    def gather_eval_rows(self, index, parts, *, pad_values, sharded):
        """As in ``Trainer`` for shards of one order; an iterable dataset, which every process evaluated
        whole, keeps this process's rows without a gather."""
        if not sharded:
            return index, parts
        return super().gather_eval_rows(index, parts, pad_values=pad_values, sharded=sharded)

    def postprocess_label_ids(self, label_ids: Nested) -> Nested:
        """The pad id where the collator put -100, so that ``batch_decode`` in ``compute_metrics`` never
        crashes (a tokenizer cannot decode -100)."""
        pad = self.prediction_pad_id
        return nested_map(lambda a: _replace_ignore(a, pad), label_ids)

    def extra_eval_metrics(self, predictions: Nested | None, label_ids: Nested | None) -> dict[str, float]:
        """``gen_len`` with generation: ours, defined exactly, wins over a ``compute_metrics`` "gen_len"
        (which may count the start token)."""
        if not self.args.predict_with_generate or predictions is None:
            return {}
        start = self._decoder_start_id()
        return {"gen_len": mean_generated_length(predictions, pad_id=self.prediction_pad_id, start_id=start)}

    def save_predictions(self, output: EvalLoopOutput, metric_key_prefix: str) -> None:
        """``{metric_key_prefix}_predictions.jsonl`` in output_dir: ``id`` (dataset index), ``source``,
        ``reference`` and ``hypothesis``, decoded with the trainer's tokenizer when there is one (ids
        otherwise)."""
        if not self.args.should_save or output.predictions is None:
            return
        preds = _first(output.predictions)
        if np.issubdtype(preds.dtype, np.floating) and preds.ndim >= 3:
            preds = preds.argmax(-1)  # teacher-forced logits: their argmax ids
        refs, srcs = _first(output.label_ids), _first(output.inputs)
        path = Path(self.args.output_dir) / f"{metric_key_prefix}_predictions.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for i in range(len(preds)):
                record = {
                    "id": i,
                    "source": self._decode(srcs[i]) if srcs is not None else None,
                    "reference": self._decode(refs[i]) if refs is not None else None,
                    "hypothesis": self._decode(preds[i]),
                }
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        logger.info("wrote %d predictions to %s", len(preds), path)

    def _decode(self, ids: np.ndarray) -> Any:
        ids = np.asarray(ids)
        if self.tokenizer is None or not hasattr(self.tokenizer, "batch_decode"):
            return ids.tolist()
        rows = ids.reshape(-1, ids.shape[-1]).tolist()  # n-best predictions: one text per sequence
        texts = [t.strip() for t in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]
        return texts[0] if ids.ndim == 1 else texts


# ------------------------------------------------------------------------------------------------ helpers
def mean_generated_length(predictions: Nested, *, pad_id: int, start_id: int | None) -> float:
    """Mean number of generated tokens per sequence: pads do not count, nor the decoder start token in the
    first column (generate's outputs begin with it)."""
    ids = np.asarray(_first(predictions))
    if ids.size == 0:
        return 0.0
    ids = ids.reshape(-1, ids.shape[-1])
    if start_id is not None and start_id != pad_id and ids.shape[1] and np.all(ids[:, 0] == start_id):
        ids = ids[:, 1:]
    return float(np.count_nonzero(ids != pad_id) / len(ids))


def _replace_ignore(array: Any, pad_id: int) -> Any:
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer):
        return np.where(array == IGNORE_INDEX, pad_id, array)
    return array


def _first(value: Nested | None) -> Any:
    return value[0] if isinstance(value, (tuple, list)) else value


def _columns(dataset: Any) -> set[str]:
    if hasattr(dataset, "column_names"):
        return set(dataset.column_names)
    first = dataset[0] if len(dataset) else {}
    return set(first) if isinstance(first, Mapping) else set()


def _validate(config: Any) -> None:
    if "strict" in inspect.signature(config.validate).parameters:
        config.validate(strict=True)  # Hugging Face: its warnings become errors
    else:
        config.validate()  # s2s GenerationConfig: always strict


def _unknown_options_message(unknown: list[str], known: set[str], source: str, kind: str) -> str:
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"{source}: unknown generation option(s) {', '.join(parts)} for {kind}"
