"""The generic ``Trainer``: a training loop normalised by tokens, evaluation, checkpoints and callbacks.

The loss of each optimizer update is the summed token loss of all its micro-batches on all processes divided
by their target tokens, so k micro-batches of b examples train exactly like one batch of k * b, whatever the
target lengths and with label smoothing (a mean of per-micro-batch means would weigh the tokens of short
micro-batches more). Its override points are Hugging Face's, so ``Seq2SeqTrainer`` stays a small subclass.

The Trainer wires its collaborators (docs/architecture.md draws them): callbacks decide when to log, evaluate
and save; ``self.strategy`` (one process, DDP or FSDP) places, wraps and unwraps the model and does every
collective; ``self.checkpointer`` resumes, saves, rotates and keeps the best checkpoint and the data
position; ``s2s.training_loop`` runs a ``train()`` call, ``s2s.evaluation`` the prediction loop,
``s2s.dataloaders`` builds loaders. Hugging Face's report methods write through ``s2s.run_reports``.
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from s2s import dataloaders, evaluation, model_card, run_reports
from s2s.batch import batch_labels, loss_units
from s2s.batch_loss import forward_inputs, summed_loss
from s2s.callbacks import (
    CallbackHandler,
    DefaultFlowCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)
from s2s.checkpointer import Checkpointer, TrainingParts
from s2s.data_collator import DataCollatorWithPadding, default_data_collator
from s2s.evaluation import EvalLoopOutput, Nested
from s2s.hyperparameter_search import BestRun, run_hyperparameter_search
from s2s.model_outputs import logits_for_metrics
from s2s.optimization import create_optimizer, create_scheduler
from s2s.optimizer_step import NonFiniteLossError
from s2s.precision import autocast_context, grad_scaler, install_overflow_hooks
from s2s.reporting import reporting_callbacks
from s2s.seeding import set_seed
from s2s.strategy import choose_strategy
from s2s.training_args import TrainingArguments
from s2s.training_loop import TrainingLoop, retry_halving_batch_size

logger = logging.getLogger(__name__)

# NonFiniteLossError and BestRun live with their jobs; importable here, where the trainer raises/returns them
__all__ = ["BestRun", "NonFiniteLossError", "TrainOutput", "Trainer", "set_seed"]


class TrainOutput(NamedTuple):
    global_step: int
    training_loss: float
    metrics: dict[str, float]


class Trainer:
    """Train, evaluate and predict with any ``nn.Module`` whose ``forward(**batch)`` returns an object (or
    tuple) with ``loss`` and ``logits``; a model that returns no loss gets one from ``labels``."""

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
    ) -> None:
        if processing_class is not None and tokenizer is not None:  # Hugging Face's newer name for it
            raise ValueError("give the tokenizer as tokenizer= or as processing_class=, not both")
        tokenizer = processing_class if processing_class is not None else tokenizer
        if args is None:
            args = TrainingArguments(output_dir="tmp_trainer")
            logger.info("no TrainingArguments given; using defaults with output_dir=tmp_trainer")
        self.args = args
        self.strategy = choose_strategy(args)  # creates the process group of a torchrun launch
        self._setup_logging()
        set_seed(args.seed, full_determinism=args.full_determinism)
        self.model_init = model_init
        self.model = self._prepare_model(self._initial_model(model, model_init, optimizer=optimizers[0]))
        self.model_wrapped = self.model  # the module that trains: DDP/FSDP/compiled around self.model
        self.optimizer, self.lr_scheduler = optimizers
        if data_collator is None:
            data_collator = (
                DataCollatorWithPadding(tokenizer) if tokenizer is not None else default_data_collator
            )
        self.data_collator = data_collator
        self.train_dataset, self.eval_dataset, self.tokenizer = train_dataset, eval_dataset, tokenizer
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.scaler = grad_scaler(args)
        if "underflow_overflow" in args.debug:
            install_overflow_hooks(self.model, current_step=lambda: self.state.global_step)
        self.checkpointer = Checkpointer(args, self.strategy)
        defaults = [DefaultFlowCallback(), *reporting_callbacks(args.report_to)]
        defaults.append(PrinterCallback() if args.disable_tqdm else ProgressCallback())
        self.callback_handler = CallbackHandler(
            [*defaults, *(callbacks or [])],
            model=self.model,
            tokenizer=tokenizer,
            optimizer=self.optimizer,
            lr_scheduler=self.lr_scheduler,
        )
        self.state = TrainerState(
            is_local_process_zero=self.strategy.is_local_process_zero,
            is_world_process_zero=self.strategy.is_world_process_zero,
        )
        self.control = TrainerControl()
        self._train_batch_size = args.train_batch_size
        self.is_in_train = False
        self._past = None  # the model's memories with past_index >= 0, fed back as "mems"
        self._train_sampler = None
        self._callback("on_init_end")

    # ------------------------------------------------------------------------------------------ set-up
    processing_class = property(lambda self: self.tokenizer, doc="The tokenizer (Hugging Face's name).")

    @property
    def args(self):
        return self._args

    @args.setter
    def args(self, args) -> None:  # a search trial runs on a copy: the collaborators must read it too
        self._args = args
        for part in (getattr(self, "strategy", None), getattr(self, "checkpointer", None)):
            if part is not None:
                part.args = args

    def _setup_logging(self) -> None:
        args = self.args
        main = self.strategy.is_local_process_zero if args.log_on_each_node else self.strategy.rank == 0
        name = args.log_level if main else args.log_level_replica
        if name != "passive":
            logging.getLogger("s2s").setLevel(getattr(logging, name.upper()))

    def _initial_model(self, model: nn.Module | None, model_init: Callable | None, *, optimizer) -> nn.Module:
        if model is not None and model_init is not None:
            raise ValueError(
                "give either model or model_init, not both: model_init builds a fresh model per train()"
            )
        if model is None and model_init is None:
            raise ValueError("Trainer needs a model, or a model_init function that returns one")
        if optimizer is not None and model_init is not None:
            raise ValueError(
                "optimizers=(...) cannot be combined with model_init: the optimizer would hold the old model"
            )
        return model if model is not None else self._call_model_init(model_init)

    def _call_model_init(self, model_init: Callable, trial: Any = None) -> nn.Module:
        takes_trial = len(inspect.signature(model_init).parameters) >= 1
        model = model_init(trial) if takes_trial else model_init()
        if model is None:
            raise ValueError("model_init returned None; it must return an nn.Module")
        return model

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        model = self.strategy.place(model)
        if self.args.gradient_checkpointing:
            enable = getattr(model, "gradient_checkpointing_enable", None)
            if enable is None:
                raise ValueError(
                    f"gradient_checkpointing=True but {type(model).__name__} has no gradient_checkpointing_enable(); "
                    "use a model that supports it (e.g. s2s TransformerForConditionalGeneration) or remove the flag"
                )
            enable()
        return model

    # ------------------------------------------------------------------------------------------ callbacks
    def add_callback(self, callback) -> None:
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback):
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback) -> None:
        self.callback_handler.remove_callback(callback)

    def _callback(self, event: str, **kwargs: Any) -> None:
        """Call ``event`` on every callback; they steer the loop through the returned control flags."""
        self.control = self.callback_handler.call_event(event, self.args, self.state, self.control, **kwargs)

    # ------------------------------------------------------------------------------------------ data
    def _prune_columns(self, dataset, description: str):
        if self.args.remove_unused_columns:
            dataset = dataloaders.drop_length_column(
                dataset, self.model, column=self.args.length_column_name, description=description
            )
            return dataloaders.remove_unused_columns(
                dataset, self.model, label_names=self.args.label_names, description=description
            )
        return dataset

    @property
    def _data_seed(self) -> int:
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def get_train_sampler(self, dataset):
        """The training sampler: token budget, length-grouped or random (see ``s2s.dataloaders``).
        ``Seq2SeqTrainer`` overrides this to pick ``SortishSampler``."""
        return dataloaders.default_train_sampler(
            dataset,
            self.args,
            batch_size=self._train_batch_size,
            seed=self._data_seed,
            num_replicas=self.strategy.world_size,
            rank=self.strategy.rank,
            input_name=getattr(self.model, "main_input_name", "input_ids"),
        )

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer.train() needs a train_dataset")
        # The sampler first, on every column: it reads the stored lengths (length_column_name), which are
        # then dropped with the other columns the model does not take.
        self._train_sampler = self.get_train_sampler(self.train_dataset)
        dataset = self._prune_columns(self.train_dataset, "train_dataset")
        return dataloaders.build_train_loader(
            dataset,
            self._train_sampler,
            batch_size=self._train_batch_size,
            collate_fn=self.data_collator,
            args=self.args,
            seed=self._data_seed,
        )

    def get_eval_order(self, dataset) -> list[int]:
        """Dataset indices in the order evaluation runs them (each process takes every ``world_size``-th):
        dataset order, or longest first by ``max(source, target)`` with ``group_by_length``; predictions go
        back to dataset order. ``Seq2SeqTrainer`` overrides this to sort by source length for generation."""
        return dataloaders.default_eval_order(
            dataset, args=self.args, sort_by_length=self.args.group_by_length
        )

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluation needs an eval_dataset (in the Trainer or passed to evaluate())")
        return self._eval_loader(self._prune_columns(dataset, "eval_dataset"))

    def get_test_dataloader(self, test_dataset) -> DataLoader:
        return self._eval_loader(self._prune_columns(test_dataset, "test_dataset"))

    def _eval_loader(self, dataset) -> DataLoader:
        order = None if isinstance(dataset, IterableDataset) else self.get_eval_order(dataset)
        return dataloaders.build_eval_loader(
            dataset,
            batch_size=self.args.eval_batch_size,
            collate_fn=self.data_collator,
            args=self.args,
            order=order,
            num_replicas=self.strategy.world_size,
            rank=self.strategy.rank,
        )

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        inputs = self.strategy.place_batch(inputs)
        if self.args.past_index >= 0 and self._past is not None:
            inputs["mems"] = self._past
        return inputs

    def _autocast(self, *, evaluating: bool = False):
        return autocast_context(self.args, evaluating=evaluating)

    # ------------------------------------------------------------------------------------------ loss
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False):
        """The **summed** loss of one batch (over target tokens, or examples; see ``s2s.batch.loss_units``).

        With label smoothing, a batch that already carries ``decoder_input_ids``, or a model that takes no
        ``labels``, the labels are kept out of ``forward`` and the loss comes from the logits here; otherwise
        the model's mean loss times the token count."""
        args, module = self.args, self.strategy.unwrap(model)
        names, smoothing = args.label_names, args.label_smoothing_factor
        model_inputs, own = forward_inputs(model, inputs, label_smoothing=smoothing, module=module)
        outputs = model(**model_inputs)
        if args.past_index >= 0:
            self._past = outputs[args.past_index]
        loss = summed_loss(
            model, outputs, inputs, from_logits=own, label_smoothing=smoothing, label_names=names
        )
        return (loss, outputs) if return_outputs else loss

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: int
    ) -> torch.Tensor:
        """Forward and backward of one micro-batch; ``num_items_in_batch`` is the target-token count of the
        whole accumulation window over all processes. Returns the summed loss (detached)."""
        model.train()
        inputs = self._prepare_inputs(inputs)
        with self._autocast():
            loss_sum = self.compute_loss(model, inputs)
        # DDP and FSDP average gradients over processes; scaling by world_size turns that average back into a sum,
        # so the gradient is exactly d(sum of all token losses) / (all tokens of the window).
        loss = loss_sum * (self.strategy.world_size / max(num_items_in_batch, 1))
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        return loss_sum.detach()

    # ------------------------------------------------------------------------------------------ optimizer
    def create_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self.optimizer = create_optimizer(self.model, self.args)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            self.lr_scheduler = create_scheduler(optimizer or self.optimizer, self.args, num_training_steps)
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self.create_optimizer()
        self.create_scheduler(num_training_steps, self.optimizer)

    # ------------------------------------------------------------------------------------------ train
    def train(
        self, resume_from_checkpoint: str | Path | bool | None = None, trial: Any = None, **kwargs
    ) -> TrainOutput:
        """Train; ``resume_from_checkpoint`` is a checkpoint folder, or True for the newest complete one in
        ``output_dir`` (default: ``args.resume_from_checkpoint``). When torchrun has restarted the job after a
        worker died and none is given, the job's newest complete checkpoint (see ``s2s.elastic``)."""
        if kwargs:
            raise TypeError(f"train() got unexpected keyword arguments {sorted(kwargs)}")
        resume = self.checkpointer.starting_point(resume_from_checkpoint, search_trial=trial is not None)
        self.is_in_train = True
        if self.model_init is not None:
            set_seed(self.args.seed, full_determinism=self.args.full_determinism)
            self.model = self._prepare_model(self._call_model_init(self.model_init, trial))
            self.model_wrapped = self.model
            self.optimizer, self.lr_scheduler = None, None
        try:
            if not self.args.auto_find_batch_size:
                return self._inner_training_loop(resume=resume, trial=trial)
            return self._train_halving_on_oom(resume, trial)
        finally:
            self.is_in_train = False

    def _train_halving_on_oom(self, resume: Path | None, trial: Any) -> TrainOutput:
        initial_state = copy.deepcopy(self.strategy.unwrap(self.model).state_dict())

        def run(batch_size: int) -> TrainOutput:
            self._train_batch_size = batch_size
            return self._inner_training_loop(resume=resume, trial=trial)

        def reset() -> None:  # the model as it was before the failed try, and a fresh optimizer for it
            self.strategy.unwrap(self.model).load_state_dict(initial_state)
            self.optimizer, self.lr_scheduler = None, None
            self.model.zero_grad(set_to_none=True)
            self.strategy.release_cached_memory()

        return retry_halving_batch_size(run, self._train_batch_size, reset=reset)

    def _parts(self) -> TrainingParts:
        return TrainingParts(
            self.model_wrapped, self.optimizer, self.lr_scheduler, self.scaler, self.tokenizer
        )

    def _inner_training_loop(self, *, resume: Path | None, trial: Any) -> TrainOutput:
        loader = self.get_train_dataloader()
        self._past = None
        loop = TrainingLoop(self, fire=self._callback, data_seed=self._data_seed, trial=trial)
        sampler, batch_size = self._train_sampler, self._train_batch_size
        metrics = loop.run(loader, sampler=sampler, batch_size=batch_size, resume=resume)
        # Hugging Face's key, over the updates of this call (as the samples per second count this call's)
        updates = self.state.global_step - (self.checkpointer.resumed_step if resume is not None else 0)
        if metrics["train_runtime"] > 0:
            metrics.setdefault("train_steps_per_second", round(updates / metrics["train_runtime"], 3))
        return TrainOutput(self.state.global_step, metrics["train_loss"], metrics)

    # ------------------------------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float]) -> None:
        """Record ``logs`` (with the step) in the log history and send them to the loggers. ``epoch`` goes
        into ``logs`` itself, as in Hugging Face: the metrics of ``train()`` and ``evaluate()`` carry it."""
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self._callback("on_log", logs=logs)

    def is_world_process_zero(self) -> bool:
        """Whether this is the main process of the whole run (the one that writes reports)."""
        return self.strategy.is_world_process_zero

    def is_local_process_zero(self) -> bool:
        """Whether this is the main process of its machine."""
        return self.strategy.is_local_process_zero

    def log_metrics(self, split: str, metrics: dict[str, Any]) -> None:
        """Print ``metrics`` as the ``***** {split} metrics *****`` table. This and the other report methods
        may be called on every process; only the main one prints or writes."""
        run_reports.log_metrics(split, metrics, is_main=self.is_world_process_zero())

    def save_metrics(self, split: str, metrics: dict[str, Any], combined: bool = True) -> None:
        """Write ``{split}_results.json`` in output_dir; with ``combined``, merge it into all_results.json."""
        if self.is_world_process_zero():
            run_reports.save_metrics(self.args.output_dir, split, metrics, combined=combined)

    def save_state(self) -> None:
        """Write ``trainer_state.json`` (steps, log history, best metric) in output_dir."""
        if self.is_world_process_zero():
            run_reports.save_state(self.state, self.args.output_dir)

    def create_model_card(
        self, language=None, license=None, tags=None, model_name=None, finetuned_from=None, tasks=None,
        dataset_tags=None, dataset=None, dataset_args=None,
    ) -> Path | None:  # fmt: skip
        """Write a draft ``README.md`` model card in output_dir from the run (metadata, results, settings);
        unset arguments are read from the model and dataset. Returns its path (None on other processes)."""
        if not self.is_world_process_zero():
            return None
        return model_card.create_model_card(
            self.args.output_dir, args=self.args, log_history=self.state.log_history, language=language,
            source_dataset=self.eval_dataset if self.eval_dataset is not None else self.train_dataset,
            model=self.strategy.unwrap(self.model), license=license, tags=tags, model_name=model_name,
            finetuned_from=finetuned_from, tasks=tasks, dataset_tags=dataset_tags, dataset=dataset,
            dataset_args=dataset_args,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------ checkpoints
    def load_weights(self, path: str | Path) -> None:
        """Load the safetensors weights in folder ``path`` (a checkpoint, or what `save_model` wrote) into the
        model, into its shards under FSDP. Errors name the tensors that do not fit."""
        self.checkpointer.load_weights(self.model_wrapped, path)

    def save_model(self, output_dir: str | None = None) -> None:
        """Save the weights (safetensors), config and tokenizer to ``output_dir`` (default ``args.output_dir``)."""
        self.checkpointer.save_model(self._parts(), output_dir)

    # ------------------------------------------------------------------------------------------ evaluation
    @property
    def prediction_pad_id(self) -> int:
        """Pads predictions across batches: the tokenizer's pad id, else the model config's, else 0."""
        return evaluation.prediction_pad_id(self.tokenizer, self.strategy.unwrap(self.model))

    def evaluate(
        self, eval_dataset=None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Evaluate on ``eval_dataset`` (default: the trainer's); a dict of datasets is evaluated one by one
        with metrics named ``<prefix>_<name>_<metric>``."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):
            metrics: dict[str, float] = {}
            for name, part in dataset.items():
                prefix = f"{metric_key_prefix}_{name}"
                metrics.update(self.evaluate(part, ignore_keys=ignore_keys, metric_key_prefix=prefix))
            return metrics
        loader = self.get_eval_dataloader(dataset)
        loss_only = True if self.compute_metrics is None else None  # without metrics only the loss is needed
        output = self._timed_evaluation(
            loader, "Evaluation", metric_key_prefix, ignore_keys=ignore_keys, prediction_loss_only=loss_only
        )
        self.log(output.metrics)
        self._callback("on_evaluate", metrics=output.metrics)
        return output.metrics

    def predict(
        self, test_dataset, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
    ) -> evaluation.PredictionOutput:
        """Predictions (in dataset order), label ids and metrics for ``test_dataset``."""
        loader = self.get_test_dataloader(test_dataset)
        output = self._timed_evaluation(loader, "Prediction", metric_key_prefix, ignore_keys=ignore_keys)
        self._callback("on_predict", metrics=output.metrics)
        return evaluation.PredictionOutput(output.predictions, output.label_ids, output.metrics)

    def _timed_evaluation(
        self, loader: DataLoader, description: str, prefix: str, **options
    ) -> EvalLoopOutput:
        """``evaluation_loop`` on the full parameters (every process alone, see ``s2s.strategy``), plus the
        speed figures; writes the predictions with ``save_predictions``."""
        start = time.time()
        with self.strategy.full_parameters(self.model_wrapped):
            output = self.evaluation_loop(
                loader, description=description, metric_key_prefix=prefix, **options
            )
        per_round = self.args.eval_batch_size * self.strategy.world_size  # every process's batch at once
        output.metrics.update(evaluation.evaluation_speed(prefix, start, output.num_samples, per_round))
        if self.args.save_predictions:
            self.save_predictions(output, prefix)
        return output

    def evaluation_loop(
        self,
        dataloader: DataLoader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        if prediction_loss_only is None:
            prediction_loss_only = self.args.prediction_loss_only
        setup = evaluation.EvaluationSetup(
            model=evaluation.model_for_evaluation(self.model, self.args, in_training=self.is_in_train),
            pad_id=self.prediction_pad_id,
            main_input_name=getattr(self.model, "main_input_name", "input_ids"),
            loss_units=lambda batch: loss_units(batch, self.args.label_names),
            compute_metrics=self.compute_metrics,
            include_inputs_for_metrics=self.args.include_inputs_for_metrics,
            eval_accumulation_steps=self.args.eval_accumulation_steps,
            on_prediction_step=lambda: self._callback("on_prediction_step"),
        )
        self.callback_handler.eval_dataloader = dataloader
        self._past = None
        with torch.no_grad():
            return evaluation.run_evaluation_loop(
                self,
                dataloader,
                setup,
                prediction_loss_only=prediction_loss_only,
                ignore_keys=ignore_keys,
                metric_key_prefix=metric_key_prefix,
            )

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, Any, Any]:
        """``(summed loss or None, logits or None, labels or None)`` for one batch; the evaluation loop
        divides the summed losses by the target tokens of the whole set."""
        inputs = self._prepare_inputs(inputs)
        labels = batch_labels(inputs, self.args.label_names)
        if ignore_keys is None:
            ignore_keys = evaluation.keys_to_ignore_at_inference(self.strategy.unwrap(model))
        with torch.no_grad(), self._autocast(evaluating=True):
            if labels is not None:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                loss = loss.detach().float()
            else:
                loss, outputs = None, model(**inputs)
        if prediction_loss_only:
            return loss, None, None
        return loss, logits_for_metrics(outputs, ignore_keys, has_loss=loss is not None), labels

    # Override points of the evaluation loop (``s2s.evaluation.EvaluationSteps``): each default is the
    # generic behaviour; ``Seq2SeqTrainer`` overrides them instead of repeating the loop.
    def predictions_of_batch(self, logits: Any, labels: Any, *, batch_size: int) -> Any:
        """What the evaluation loop keeps of one batch's predictions (before anything is accumulated):
        the outputs through ``preprocess_logits_for_metrics`` when one is given (e.g. an argmax)."""
        if logits is not None and self.preprocess_logits_for_metrics is not None:
            logits = self.preprocess_logits_for_metrics(logits, labels)
        return logits

    def keeps_eval_inputs(self) -> bool:
        """Whether the evaluation loop keeps each row's main input (``include_inputs_for_metrics``)."""
        return self.args.include_inputs_for_metrics

    def gather_eval_rows(
        self, index: np.ndarray, parts: tuple[Nested | None, ...], *, pad_values: tuple, sharded: bool
    ) -> tuple[np.ndarray, tuple[Nested | None, ...]]:
        """The rows of every process, each example once, in dataset order (``index`` holds each row's
        dataset index; ``parts`` are (predictions, label ids, inputs)). ``sharded`` is False for an
        iterable dataset, which every process evaluates whole: the gather then keeps one copy."""
        return evaluation.gather_in_dataset_order(index, parts, pad_values=pad_values)

    def postprocess_label_ids(self, label_ids: Nested) -> Nested:
        """The gathered label ids as ``compute_metrics`` and the output receive them (here unchanged,
        -100 included)."""
        return label_ids

    def extra_eval_metrics(self, predictions: Nested | None, label_ids: Nested | None) -> dict[str, float]:
        """Metrics the trainer adds itself after ``compute_metrics`` (same names win over its); none here."""
        return {}

    def save_predictions(self, output: EvalLoopOutput, metric_key_prefix: str) -> None:
        """save_predictions: one JSON line per example (index, prediction, label) in
        ``output_dir/{metric_key_prefix}_predictions.jsonl``."""
        if self.args.should_save and output.predictions is not None:
            path = Path(self.args.output_dir) / f"{metric_key_prefix}_predictions.jsonl"
            evaluation.write_predictions_jsonl(output, path)

    # ------------------------------------------------------------------------------------------ search
    def hyperparameter_search(
        self,
        hp_space: Callable[[Any], dict[str, Any]] | None = None,
        compute_objective: Callable[[dict[str, float]], float] | None = None,
        n_trials: int = 20,
        direction: str = "minimize",
        backend: str = "optuna",
        **kwargs,
    ) -> BestRun:
        """Search hyper-parameters with optuna: each trial copies the arguments, applies ``hp_space(trial)``,
        trains a fresh model from ``model_init`` and is scored by ``compute_objective(eval metrics)``
        (default: the eval loss). See ``s2s.hyperparameter_search``."""
        return run_hyperparameter_search(
            self, hp_space, compute_objective, n_trials, direction, backend, **kwargs
        )
