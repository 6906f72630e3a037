"""The generic ``Trainer``: a training loop normalised by tokens, evaluation, checkpoints and callbacks.

The loop, in one sentence: for each accumulation window (the micro-batches of one optimizer update), count
the target tokens of the whole window across all processes, back-propagate each micro-batch's *summed*
token loss divided by that count, then clip, step and schedule. So k micro-batches of b examples train
exactly like one batch of k * b, whatever the target lengths and with label smoothing (ANCHORS F5, P10).

Override points (as in Hugging Face, so ``Seq2SeqTrainer`` stays a small subclass): ``compute_loss``,
``training_step``, ``prediction_step``, ``evaluation_loop``, ``create_optimizer``, ``create_scheduler``,
``get_train_dataloader``, ``get_eval_dataloader``, ``get_test_dataloader``, ``get_train_sampler``; and the
steps of the evaluation loop: ``get_eval_order``, ``predictions_of_batch``, ``keeps_eval_inputs``,
``gather_eval_rows``, ``postprocess_label_ids``, ``extra_eval_metrics``, ``save_predictions``.

Who decides what: ``DefaultFlowCallback`` turns strategies into control flags (log/evaluate/save/stop);
``s2s.checkpointing`` writes and reads checkpoints; ``s2s.dataloaders`` builds loaders and samplers;
``s2s.evaluation`` runs the prediction loop; ``s2s.optimizer_step`` clips, steps and skips non-finite
updates; ``s2s.precision`` holds autocast and the fp16 scaler; ``s2s.hyperparameter_search`` runs optuna
trials; ``s2s.distributed`` wraps torch.distributed, ``s2s.fsdp`` the fully sharded engine (see
docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from s2s import checkpointing, distributed, fsdp
from s2s.callbacks import (
    CallbackHandler,
    DefaultFlowCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    best_metric_spec,
    is_improvement,
    lookup_metric,
)
from s2s.dataloaders import (
    build_eval_loader,
    build_train_loader,
    default_eval_order,
    default_train_sampler,
    forward_argument_names,
    is_batch_sampler,
    remove_unused_columns,
)
from s2s.evaluation import (
    EvalLoopOutput,
    Nested,
    PredictionOutput,
    gather_in_dataset_order,
    num_batches,
    run_evaluation_loop,
    speed_metrics,
)
from s2s.hyperparameter_search import BestRun, report_to_trial, run_hyperparameter_search
from s2s.loss import count_target_tokens, token_cross_entropy_sum
from s2s.memory_metrics import peak_memory_metrics
from s2s.model_outputs import logits_for_metrics, split_outputs
from s2s.optimizer_step import NonFiniteLossError, clip_and_step, record_update, step_scheduler
from s2s.precision import autocast_context, grad_scaler, install_overflow_hooks
from s2s.reporting import reporting_callbacks
from s2s.signals import GracefulInterrupt

logger = logging.getLogger(__name__)

# NonFiniteLossError and BestRun live with their jobs (s2s.optimizer_step, s2s.hyperparameter_search); they are
# importable from here too, where the trainer raises and returns them.
__all__ = ["BestRun", "NonFiniteLossError", "TrainOutput", "Trainer", "set_seed"]


class TrainOutput(NamedTuple):
    global_step: int
    training_loss: float
    metrics: dict[str, float]


def set_seed(seed: int, *, full_determinism: bool = False) -> None:
    """Seed python, numpy and torch (all devices); with ``full_determinism`` also ask torch for
    deterministic kernels (slower; raises on an op that has none)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if full_determinism:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
    )


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
    ) -> None:
        if args is None:
            from s2s.training_args import TrainingArguments

            args = TrainingArguments(output_dir="tmp_trainer")
            logger.info("no TrainingArguments given; using defaults with output_dir=tmp_trainer")
        self.args = args
        self._setup_logging()
        distributed.init_distributed(args)
        set_seed(args.seed, full_determinism=args.full_determinism)

        if model is not None and model_init is not None:
            raise ValueError(
                "give either model or model_init, not both: model_init builds a fresh model per train()"
            )
        if model is None:
            if model_init is None:
                raise ValueError("Trainer needs a model, or a model_init function that returns one")
            model = self._call_model_init(model_init)
        self.model_init = model_init
        self.model = self._prepare_model(model)

        if data_collator is None:
            from s2s.data_collator import DataCollatorWithPadding, default_data_collator

            data_collator = (
                DataCollatorWithPadding(tokenizer) if tokenizer is not None else default_data_collator
            )
        self.data_collator = data_collator
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.tokenizer = tokenizer
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        if self.optimizer is not None and model_init is not None:
            raise ValueError(
                "optimizers=(...) cannot be combined with model_init: the optimizer would hold the old model"
            )
        self.scaler = grad_scaler(args)
        self._check_backend_options()

        default_callbacks: list[TrainerCallback] = [
            DefaultFlowCallback(),
            *reporting_callbacks(args.report_to),
        ]
        default_callbacks.append(PrinterCallback() if args.disable_tqdm else ProgressCallback())
        self.callback_handler = CallbackHandler(
            [*default_callbacks, *(callbacks or [])],
            model=self.model,
            tokenizer=tokenizer,
            optimizer=self.optimizer,
            lr_scheduler=self.lr_scheduler,
        )
        self.state = TrainerState(
            is_local_process_zero=distributed.get_local_rank() == 0,
            is_world_process_zero=distributed.is_main_process(),
        )
        self.control = TrainerControl()
        self._train_batch_size = args.train_batch_size
        self.is_in_train = False
        self._past = None
        self._train_sampler = None
        self._data_position = (0, 0)  # (epoch, micro-batches of it consumed), for checkpoints
        self._last_saved_step, self._last_checkpoint = -1, None
        self.control = self.callback_handler.on_init_end(args, self.state, self.control)

    # ------------------------------------------------------------------------------------------ set-up
    def _setup_logging(self) -> None:
        args = self.args
        main = (distributed.get_local_rank() if args.log_on_each_node else distributed.get_rank()) == 0
        name = args.log_level if main else args.log_level_replica
        if name != "passive":
            logging.getLogger("s2s").setLevel(getattr(logging, name.upper()))

    def _call_model_init(self, model_init: Callable, trial: Any = None) -> nn.Module:
        takes_trial = len(inspect.signature(model_init).parameters) >= 1
        model = model_init(trial) if takes_trial else model_init()
        if model is None:
            raise ValueError("model_init returned None; it must return an nn.Module")
        return model

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        model = model.to(self.args.device)
        if self.args.gradient_checkpointing:
            enable = getattr(model, "gradient_checkpointing_enable", None)
            if enable is None:
                raise ValueError(
                    f"gradient_checkpointing=True but {type(model).__name__} has no gradient_checkpointing_enable(); "
                    "use a model that supports it (e.g. s2s TransformerForConditionalGeneration) or remove the flag"
                )
            enable()
        return model

    def _check_backend_options(self) -> None:
        args = self.args
        if args.fsdp_config and not args.fsdp:
            raise ValueError(
                "fsdp_config is set but fsdp is empty: set fsdp='full_shard' (or shard_grad_op, no_shard, "
                "hybrid_shard) to shard the model, or remove fsdp_config"
            )
        if args.fsdp:
            fsdp.fsdp_settings(args)  # unknown fsdp_config keys fail now, not at the first step
            clashes = [
                name
                for name in ("auto_find_batch_size", "torch_compile", "bf16_full_eval", "fp16_full_eval")
                if getattr(args, name)
            ]
            if clashes:
                raise ValueError(
                    f"fsdp={args.fsdp} cannot be combined with {clashes}: they rebuild, compile or cast the "
                    "module that FSDP has flattened into shards; remove them (or fsdp)"
                )
            if not distributed.launched_by_torchrun() and not distributed.is_distributed():
                logger.warning(
                    "fsdp=%s with a single process: there is nothing to shard, the model trains unsharded. "
                    "Launch with torchrun --nproc_per_node N to shard it.",
                    args.fsdp,
                )
        if args.tf32 is not None and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = args.tf32
            torch.backends.cudnn.allow_tf32 = args.tf32
        if "underflow_overflow" in args.debug:
            install_overflow_hooks(self.model, current_step=lambda: self.state.global_step)

    # ------------------------------------------------------------------------------------------ callbacks
    def add_callback(self, callback) -> None:
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback):
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback) -> None:
        self.callback_handler.remove_callback(callback)

    # ------------------------------------------------------------------------------------------ data
    def _prune_columns(self, dataset, description: str):
        if self.args.remove_unused_columns:
            return remove_unused_columns(
                dataset, self.model, label_names=self.args.label_names, description=description
            )
        return dataset

    @property
    def _data_seed(self) -> int:
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def get_train_sampler(self, dataset):
        """The training sampler: token budget, length-grouped or random (see ``s2s.dataloaders``).
        ``Seq2SeqTrainer`` overrides this to pick ``SortishSampler``."""
        return default_train_sampler(
            dataset,
            self.args,
            batch_size=self._train_batch_size,
            seed=self._data_seed,
            num_replicas=distributed.get_world_size(),
            rank=distributed.get_rank(),
            input_name=getattr(self.model, "main_input_name", "input_ids"),
        )

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer.train() needs a train_dataset")
        dataset = self._prune_columns(self.train_dataset, "train_dataset")
        self._train_sampler = self.get_train_sampler(dataset)
        return build_train_loader(
            dataset,
            self._train_sampler,
            batch_size=self._train_batch_size,
            collate_fn=self.data_collator,
            args=self.args,
            seed=self._data_seed,
        )

    def get_eval_order(self, dataset) -> list[int]:
        """Dataset indices in the order evaluation runs them (each process then takes every
        ``world_size``-th): dataset order, or longest first by ``max(source, target)`` with
        ``group_by_length``. Predictions go back to dataset order either way. ``Seq2SeqTrainer`` overrides
        this to sort by source length for generation."""
        return default_eval_order(dataset, args=self.args, sort_by_length=self.args.group_by_length)

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluation needs an eval_dataset (in the Trainer or passed to evaluate())")
        return self._eval_loader(self._prune_columns(dataset, "eval_dataset"))

    def get_test_dataloader(self, test_dataset) -> DataLoader:
        return self._eval_loader(self._prune_columns(test_dataset, "test_dataset"))

    def _eval_loader(self, dataset) -> DataLoader:
        order = None if isinstance(dataset, IterableDataset) else self.get_eval_order(dataset)
        return build_eval_loader(
            dataset,
            batch_size=self.args.eval_batch_size,
            collate_fn=self.data_collator,
            args=self.args,
            order=order,
            num_replicas=distributed.get_world_size(),
            rank=distributed.get_rank(),
        )

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        device = self.args.device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if self.args.past_index >= 0 and self._past is not None:
            inputs["mems"] = self._past
        return inputs

    def _loss_units(self, batch: Mapping[str, Any]) -> int:
        """What the loss of ``batch`` is summed over: its target tokens (labels != -100), or its examples
        for a model trained on other label names (e.g. a classification label)."""
        if batch.get("labels") is not None:
            return count_target_tokens(batch["labels"])
        from s2s.evaluation import batch_size_of

        return batch_size_of(batch) if any(batch.get(n) is not None for n in self.args.label_names) else 0

    # ------------------------------------------------------------------------------------------ precision
    def _autocast(self, *, evaluating: bool = False):
        return autocast_context(self.args, evaluating=evaluating)

    # ------------------------------------------------------------------------------------------ loss
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False):
        """The **summed** loss of one batch (over target tokens, or examples; see ``_loss_units``).

        With label smoothing, a batch that already carries ``decoder_input_ids``, or a model that takes no
        ``labels``, the labels are kept out of ``forward`` and the loss comes from the logits here; otherwise
        the model's mean loss times the token count."""
        labels = inputs.get("labels")
        takes_labels = self._model_takes_labels(model)
        own_loss = labels is not None and (
            self.args.label_smoothing_factor > 0 or "decoder_input_ids" in inputs or not takes_labels
        )
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"} if own_loss else inputs
        if own_loss and "decoder_input_ids" not in inputs:
            # Without labels an encoder-decoder cannot build its decoder inputs (ANCHORS F6, P9): do it here.
            prepare = getattr(distributed.unwrap_model(model), "prepare_decoder_input_ids_from_labels", None)
            if prepare is not None:
                model_inputs["decoder_input_ids"] = prepare(labels=labels)
        outputs = model(**model_inputs)
        if self.args.past_index >= 0:
            self._past = outputs[self.args.past_index]
        model_loss, logits = split_outputs(outputs)
        if own_loss or (labels is not None and model_loss is None):
            if logits is None:
                raise ValueError(
                    f"{type(model).__name__} returned neither a loss nor logits; cannot compute a loss"
                )
            loss = token_cross_entropy_sum(logits, labels, label_smoothing=self.args.label_smoothing_factor)
        else:
            if model_loss is None:
                raise ValueError(
                    f"{type(model).__name__} returned no loss and the batch has no 'labels' "
                    f"(label_names={self.args.label_names}); add labels or return a loss"
                )
            loss = model_loss * self._loss_units(inputs)
        return (loss, outputs) if return_outputs else loss

    def _model_takes_labels(self, model: nn.Module) -> bool:
        accepted = forward_argument_names(model)
        return accepted is None or "labels" in accepted

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
        loss = loss_sum * (distributed.get_world_size() / max(num_items_in_batch, 1))
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        return loss_sum.detach()

    # ------------------------------------------------------------------------------------------ optimizer
    def create_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            from s2s.optimization import create_optimizer

            self.optimizer = create_optimizer(self.model, self.args)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            from s2s.optimization import create_scheduler

            self.lr_scheduler = create_scheduler(optimizer or self.optimizer, self.args, num_training_steps)
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self.create_optimizer()
        self.create_scheduler(num_training_steps, self.optimizer)

    def _is_metric_scheduler(self) -> bool:
        from s2s.optimization import is_metric_scheduler

        return is_metric_scheduler(self.lr_scheduler)

    def _learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------------------------------------ train
    def train(
        self, resume_from_checkpoint: str | Path | bool | None = None, trial: Any = None, **kwargs
    ) -> TrainOutput:
        """Train; ``resume_from_checkpoint`` is a checkpoint folder, or True for the newest complete one in
        ``output_dir`` (default: ``args.resume_from_checkpoint``)."""
        if kwargs:
            raise TypeError(f"train() got unexpected keyword arguments {sorted(kwargs)}")
        args = self.args
        if resume_from_checkpoint is None:
            resume_from_checkpoint = args.resume_from_checkpoint
        if resume_from_checkpoint is False:
            resume_from_checkpoint = None
        if resume_from_checkpoint is True:
            resume_from_checkpoint = checkpointing.find_latest_checkpoint(args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(
                    f"resume_from_checkpoint=True but {args.output_dir} holds no complete checkpoint; "
                    "train without resuming or pass a checkpoint folder"
                )
        if resume_from_checkpoint is None:
            self._check_output_dir()
        self.is_in_train = True
        if self.model_init is not None:
            set_seed(args.seed, full_determinism=args.full_determinism)
            self.model = self._prepare_model(self._call_model_init(self.model_init, trial))
            self.optimizer, self.lr_scheduler = None, None
        try:
            if not args.auto_find_batch_size:
                return self._inner_training_loop(resume_from_checkpoint=resume_from_checkpoint, trial=trial)
            return self._train_halving_on_oom(resume_from_checkpoint, trial)
        finally:
            self.is_in_train = False

    def _train_halving_on_oom(self, resume_from_checkpoint, trial) -> TrainOutput:
        """auto_find_batch_size: on out-of-memory, halve the batch size and start the loop again."""
        initial_state = copy.deepcopy(distributed.unwrap_model(self.model).state_dict())
        while True:
            try:
                return self._inner_training_loop(resume_from_checkpoint=resume_from_checkpoint, trial=trial)
            except Exception as err:
                if not is_out_of_memory(err) or self._train_batch_size == 1:
                    raise
                self._train_batch_size //= 2
                logger.warning(
                    "out of memory; retrying with per-device batch size %d", self._train_batch_size
                )
                distributed.unwrap_model(self.model).load_state_dict(initial_state)
                self.optimizer, self.lr_scheduler = None, None
                self.model.zero_grad(set_to_none=True)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def _check_output_dir(self) -> None:
        existing = checkpointing.list_checkpoints(self.args.output_dir)
        if existing and not self.args.overwrite_output_dir:
            names = ", ".join(p.name for p in existing[:3]) + (", ..." if len(existing) > 3 else "")
            raise ValueError(
                f"output_dir {self.args.output_dir} already holds checkpoints ({names}); pass "
                "resume_from_checkpoint=True to continue that run, overwrite_output_dir=True to train over it, "
                "or choose another output_dir"
            )

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        """DDP (or FSDP with ``fsdp``) around the model when a process group is running; torch.compile inside."""
        if self.args.fsdp and distributed.is_distributed():
            wrapped = getattr(self, "model_wrapped", None)
            if fsdp.is_fsdp(wrapped) and wrapped.module is model:
                return wrapped  # FSDP flattens the module in place: wrap it once
            return fsdp.wrap_fsdp(model, self.args)
        if self.args.torch_compile:
            kwargs = {}
            if self.args.torch_compile_backend is not None:
                kwargs["backend"] = self.args.torch_compile_backend
            if self.args.torch_compile_mode is not None:
                kwargs["mode"] = self.args.torch_compile_mode
            model = torch.compile(model, **kwargs)
        return distributed.wrap_ddp(model, self.args)

    def _resolve_schedule(self, train_loader: DataLoader) -> tuple[int, int, int]:
        """(micro-batches per epoch, updates per epoch, max_steps); fractional epochs round up to updates."""
        args = self.args
        ga = args.gradient_accumulation_steps
        if isinstance(train_loader.dataset, IterableDataset) or not hasattr(train_loader, "__len__"):
            if args.max_steps <= 0:
                raise ValueError("an IterableDataset has no length: set max_steps to say how long to train")
            return sys.maxsize, sys.maxsize, args.max_steps
        batches = len(train_loader)
        if batches == 0:
            raise ValueError(
                "the training dataloader is empty (fewer examples than the batch size with dataloader_drop_last?)"
            )
        updates = math.ceil(batches / ga)
        max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * updates)
        return batches, updates, max_steps

    def _inner_training_loop(self, *, resume_from_checkpoint, trial) -> TrainOutput:
        args = self.args
        train_loader = self.get_train_dataloader()
        batches_per_epoch, updates_per_epoch, max_steps = self._resolve_schedule(train_loader)
        num_epochs = math.ceil(max_steps / updates_per_epoch)
        self.state = TrainerState(
            max_steps=max_steps,
            num_train_epochs=num_epochs,
            logging_steps=args.logging_steps,
            eval_steps=args.eval_steps or args.logging_steps,
            save_steps=args.save_steps,
            train_batch_size=self._train_batch_size,
            is_local_process_zero=self.state.is_local_process_zero,
            is_world_process_zero=self.state.is_world_process_zero,
            is_hyper_param_search=trial is not None,
        )
        self.control = TrainerControl()
        # Wrap first: FSDP replaces the parameters' storage with shards, and the optimizer must see those.
        model = self._wrap_model(self.model)
        self.model_wrapped = model
        self.create_optimizer_and_scheduler(num_training_steps=max_steps)
        self.callback_handler.model = self.model
        self.callback_handler.optimizer = self.optimizer
        self.callback_handler.lr_scheduler = self.lr_scheduler
        self.callback_handler.train_dataloader = train_loader

        start_epoch, skip_batches = 0, 0
        if resume_from_checkpoint is not None:
            start_epoch, skip_batches = self._load_checkpoint(resume_from_checkpoint)
        self._log_setup(train_loader, max_steps)

        start_time = time.time()
        self._seen = {"samples": 0, "tokens": 0}  # this session's, for the speed metrics
        self._last_logged_step = self.state.global_step
        self._last_grad_norm: float | None = None
        self._padding = [0, 0]  # real, padded tokens since the last log
        self._past = None
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        model.zero_grad(set_to_none=True)

        with GracefulInterrupt() as interrupt:
            self._run_epochs(
                model,
                train_loader,
                interrupt=interrupt,
                start_epoch=start_epoch,
                skip_batches=skip_batches,
                num_epochs=num_epochs,
                batches_per_epoch=batches_per_epoch,
                trial=trial,
            )
        if args.load_best_model_at_end and self.state.best_model_checkpoint is not None:
            logger.info(
                "loading the best model from %s (%s)",
                self.state.best_model_checkpoint,
                args.metric_for_best_model,
            )
            distributed.barrier()
            self.load_weights(self.state.best_model_checkpoint)
        metrics = self._train_metrics(start_time, self._seen["samples"], self._seen["tokens"])
        self.log(metrics)
        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        return TrainOutput(self.state.global_step, metrics["train_loss"], metrics)

    def _run_epochs(
        self,
        model,
        train_loader,
        *,
        interrupt,
        start_epoch,
        skip_batches,
        num_epochs,
        batches_per_epoch,
        trial,
    ) -> None:
        """The epochs of the loop (see the module docstring); ``start_epoch``/``skip_batches`` come from a resume."""
        args = self.args
        for epoch in range(start_epoch, num_epochs):
            if self.state.global_step >= self.state.max_steps:
                break
            done = skip_batches if epoch == start_epoch else 0
            batches = self._epoch_batches(train_loader, epoch, done, batches_per_epoch)
            self.control = self.callback_handler.on_epoch_begin(args, self.state, self.control)
            for window in self._accumulation_windows(batches):
                self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
                loss_sum, units, samples = self._train_window(model, window)
                done += len(window)
                self._data_position = (epoch, done)
                self._optimizer_update(model, loss_sum, units)
                self._seen["samples"] += samples
                self._seen["tokens"] += units
                self.state.global_step += 1
                self.state.epoch = epoch + done / batches_per_epoch
                self.control = self.callback_handler.on_step_end(args, self.state, self.control)
                self._maybe_log_save_evaluate(model, trial)
                self._stop_if_interrupted(model, interrupt)
                if self.control.should_epoch_stop or self.control.should_training_stop:
                    break
            if not self.control.should_training_stop and done >= batches_per_epoch:
                self._data_position = (epoch + 1, 0)
            self.control = self.callback_handler.on_epoch_end(args, self.state, self.control)
            self._maybe_log_save_evaluate(model, trial)
            self.control.reset_for_new_epoch()
            if self.control.should_training_stop:
                break

    def _stop_if_interrupted(self, model: nn.Module, interrupt: GracefulInterrupt) -> None:
        """SIGINT/SIGTERM arrived (on any process): save a checkpoint after this complete update, then stop."""
        requested = interrupt.requested
        if distributed.is_distributed():
            requested = distributed.all_reduce_sum(int(requested)) > 0
            if requested and not interrupt.requested:
                interrupt.request()
        if not requested:
            return
        path = None
        if _strategy_value(self.args.save_strategy) != "no":
            path = (
                self._last_checkpoint
                if self._last_saved_step == self.state.global_step
                else self._save_checkpoint(model)
            )
        interrupt.exit(step=self.state.global_step, checkpoint=path)

    def _epoch_batches(self, loader: DataLoader, epoch: int, done: int, batches_per_epoch: int):
        """The epoch's micro-batches after the first ``done`` ones, which are never read (the sampler
        starts after them)."""
        if done >= batches_per_epoch:
            return iter(())
        sampler = self._train_sampler
        if sampler is not None:
            sampler.set_epoch(epoch)
            consumed = done if is_batch_sampler(sampler) else min(done * self._train_batch_size, len(sampler))
            sampler.load_state_dict({"epoch": epoch, "consumed": consumed})
        if loader.generator is not None:
            loader.generator.manual_seed(self._data_seed + epoch)  # worker seeds per epoch, resumable
        return iter(loader)

    def _accumulation_windows(self, batches):
        """Group the micro-batches of one optimizer update (the last window of an epoch may be shorter)."""
        ga = self.args.gradient_accumulation_steps
        window = []
        for batch in batches:
            window.append(batch)
            if len(window) == ga:
                yield window
                window = []
        if window:
            yield window

    def _train_window(self, model: nn.Module, window: list[dict[str, Any]]) -> tuple[torch.Tensor, int, int]:
        """Forward/backward every micro-batch of one update. Returns the window's summed loss and its
        token count, both summed over processes, and this process's example count."""
        units = distributed.all_reduce_sum(sum(self._loss_units(b) for b in window))
        loss_sum = torch.zeros((), device=self.args.device)
        samples = 0
        for i, batch in enumerate(window):
            last = i == len(window) - 1
            # DDP all-reduces gradients on every backward unless told not to: only the last one counts.
            sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                loss_sum += self.training_step(model, batch, units)
            samples += _batch_size(batch)
            self._count_padding(batch)
            if not last:
                self.control = self.callback_handler.on_substep_end(self.args, self.state, self.control)
        return distributed.all_reduce_sum(loss_sum), units, samples

    def _count_padding(self, batch: dict[str, Any]) -> None:
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            from samplers import batch_padding_counts

            real, padded = batch_padding_counts(mask, batch.get("labels"))
            self._padding[0] += real
            self._padding[1] += padded

    def _optimizer_update(self, model: nn.Module, loss_sum: torch.Tensor, units: int) -> None:
        """Clip, step (unless the loss or gradient is NaN/inf), schedule, zero the gradients, book-keep."""
        args = self.args
        self.control = self.callback_handler.on_pre_optimizer_step(args, self.state, self.control)
        outcome = clip_and_step(
            model, self.optimizer, loss_sum=loss_sum, max_grad_norm=args.max_grad_norm, scaler=self.scaler
        )
        self.control = self.callback_handler.on_optimizer_step(args, self.state, self.control)
        if not self._is_metric_scheduler():
            step_scheduler(self.lr_scheduler)  # also on skipped updates: the schedule follows global_step
        model.zero_grad(set_to_none=True)
        if outcome.finite:
            self._last_grad_norm = outcome.grad_norm
        record_update(
            self.state,
            outcome,
            units=units,
            max_consecutive_nonfinite_steps=args.max_consecutive_nonfinite_steps,
            logging_nan_inf_filter=args.logging_nan_inf_filter,
        )

    def _maybe_log_save_evaluate(self, model: nn.Module, trial: Any) -> None:
        if self.control.should_log and self.state.global_step > self._last_logged_step:
            self._log_training_progress()
        if self.control.should_evaluate:
            self._evaluate_during_training(trial)
        if self.control.should_save:
            self._save_checkpoint(model)
            self.control = self.callback_handler.on_save(self.args, self.state, self.control)
        self.control.reset_for_new_step()

    def _log_training_progress(self) -> None:
        acc = self.state.loss_accumulators
        logs: dict[str, float] = {}
        if acc.get("log_units", 0) > 0:
            logs["loss"] = acc["log_loss"] / acc["log_units"]
        if self._last_grad_norm is not None:
            logs["grad_norm"] = self._last_grad_norm
        logs["learning_rate"] = self._learning_rate()
        real, padded = (
            distributed.all_reduce_sum(self._padding[0]),
            distributed.all_reduce_sum(self._padding[1]),
        )
        if padded:
            logs["padding_efficiency"] = real / padded
        if self.state.nonfinite_steps:
            logs["nonfinite_steps"] = self.state.nonfinite_steps
        acc["log_loss"], acc["log_units"] = 0.0, 0
        self._padding = [0, 0]
        self._last_logged_step = self.state.global_step
        self.log(logs)

    def _evaluate_during_training(self, trial: Any) -> dict[str, float]:
        metrics = self.evaluate()
        name, greater = best_metric_spec(self.args)
        value = lookup_metric(metrics, name)
        if self.args.metric_for_best_model is not None:
            if value is None:
                raise KeyError(
                    f"metric_for_best_model={name!r} is not among the evaluation metrics {sorted(metrics)}; "
                    "use one of them (with or without the 'eval_' prefix)"
                )
            if self.state.best_metric is None or is_improvement(
                value, self.state.best_metric, greater_is_better=greater
            ):
                self.state.best_metric = value
                self.state.best_global_step = self.state.global_step
        if self._is_metric_scheduler():
            if value is None:
                raise KeyError(
                    f"reduce_lr_on_plateau needs {name!r} in the evaluation metrics {sorted(metrics)}"
                )
            self.lr_scheduler.step(value)
        if trial is not None:
            report_to_trial(trial, metrics, args=self.args, step=self.state.global_step)
        return metrics

    def _train_metrics(self, start_time: float, samples: int, tokens: int) -> dict[str, float]:
        acc = self.state.loss_accumulators
        units = acc.get("total_units", 0)
        metrics = speed_metrics(
            "train", start_time, num_samples=distributed.all_reduce_sum(samples), num_tokens=tokens
        )
        metrics["train_loss"] = acc.get("total_loss", 0.0) / units if units else float("nan")
        metrics["nonfinite_steps"] = self.state.nonfinite_steps
        if not self.args.skip_memory_metrics:
            metrics.update(peak_memory_metrics("train"))
        return metrics

    def _log_setup(self, train_loader: DataLoader, max_steps: int) -> None:
        args = self.args
        sampler = type(self._train_sampler).__name__ if self._train_sampler is not None else "none (iterable)"
        logger.info(
            "training %s (run %s): %d updates, per-device batch %s x accumulation %d x %d processes, sampler %s",
            type(distributed.unwrap_model(self.model)).__name__,
            args.run_name,
            max_steps,
            f"<= {args.max_tokens_per_batch} tokens" if args.max_tokens_per_batch else self._train_batch_size,
            args.gradient_accumulation_steps,
            distributed.get_world_size(),
            sampler,
        )

    # ------------------------------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float]) -> None:
        """Record ``logs`` (with the current epoch and step) in the log history and send them to the loggers."""
        if self.state.epoch is not None:
            logs = {**logs, "epoch": self.state.epoch}
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs=logs)

    # ------------------------------------------------------------------------------------------ checkpoints
    def _sampler_state(self) -> dict[str, Any]:
        epoch, done = self._data_position
        state: dict[str, Any] = {
            "epoch": epoch,
            "micro_batches": done,
            "train_batch_size": self._train_batch_size,
        }
        if self._train_sampler is not None and hasattr(self._train_sampler, "state_dict"):
            state["sampler"] = self._train_sampler.state_dict()
        return state

    def _save_checkpoint(self, model: nn.Module) -> Path:
        args = self.args
        path = Path(args.output_dir) / f"{checkpointing.CHECKPOINT_PREFIX}-{self.state.global_step}"
        if self.state.best_global_step == self.state.global_step:
            self.state.best_model_checkpoint = str(path)
        self.state.stateful_callbacks = self.callback_handler.state_dicts()
        # Collective steps first (every rank takes part), then only the saving process(es) write.
        model_state, optimizer_state = self._full_state_dicts(model)
        rng_states = distributed.gather_rng_states()
        if args.should_save:
            checkpointing.save_checkpoint(
                path,
                model=distributed.unwrap_model(self.model),
                optimizer=self.optimizer,
                scheduler=self.lr_scheduler,
                scaler=self.scaler,
                trainer_state=self.state.to_dict(),
                sampler_state=self._sampler_state(),
                training_args=args.to_dict(),
                tokenizer=self.tokenizer,
                model_state_dict=model_state,
                optimizer_state_dict=optimizer_state,
                rng_states=rng_states,
            )
            checkpointing.rotate_checkpoints(
                args.output_dir, save_total_limit=args.save_total_limit, keep=self.state.best_model_checkpoint
            )
        distributed.barrier()
        self._last_saved_step, self._last_checkpoint = self.state.global_step, path
        return path

    def _fsdp_model(self) -> nn.Module | None:
        wrapped = getattr(self, "model_wrapped", None)
        return wrapped if fsdp.is_fsdp(wrapped) else None

    def _full_state_dicts(self, model: nn.Module) -> tuple[dict | None, dict | None]:
        """FSDP: the full model and optimizer states gathered from the shards (collective; on the saving
        processes only, on CPU). Otherwise (None, None): the checkpoint reads the modules themselves."""
        if not fsdp.is_fsdp(model):
            return None, None
        return fsdp.full_state_dicts(model, self.optimizer, rank0_only=not self.args.save_on_each_node)

    def load_weights(self, path: str | Path) -> None:
        """Load the safetensors weights in folder ``path`` (a checkpoint, or what `save_model` wrote) into the
        model, into its shards under FSDP. Errors name the tensors that do not fit."""
        sharded = self._fsdp_model()
        if sharded is None:
            checkpointing.load_model_weights(distributed.unwrap_model(self.model), path)
        else:
            fsdp.load_full_state(sharded, checkpointing.read_model_weights(path), source=str(path))

    def _load_checkpoint(self, path: str | Path) -> tuple[int, int]:
        """Restore everything from ``path``; return (epoch, micro-batches of it already trained on)."""
        sharded = self._fsdp_model()
        loaded = checkpointing.load_checkpoint(
            path,
            model=distributed.unwrap_model(self.model) if sharded is None else None,
            optimizer=self.optimizer if sharded is None else None,
            scheduler=self.lr_scheduler,
            scaler=self.scaler,
            rank=distributed.get_rank(),  # each process restores its own RNG state
        )
        if sharded is not None:
            fsdp.load_full_state(
                sharded,
                checkpointing.read_model_weights(path),
                optimizer=self.optimizer,
                optim_state=checkpointing.read_optimizer_state(path) if self.optimizer is not None else None,
                source=str(path),
            )
        saved = TrainerState.from_dict(loaded.trainer_state)
        # The new run's schedule (max_steps, intervals) stands; where training is comes from the checkpoint.
        for name in (
            "epoch", "global_step", "log_history", "best_metric", "best_global_step", "best_model_checkpoint",
            "nonfinite_steps", "consecutive_nonfinite_steps", "loss_accumulators", "num_input_tokens_seen",
            "stateful_callbacks",
        ):  # fmt: skip
            setattr(self.state, name, getattr(saved, name))
        self.callback_handler.load_state_dicts(saved.stateful_callbacks)
        position = loaded.sampler_state or {}
        epoch, done = int(position.get("epoch", 0)), int(position.get("micro_batches", 0))
        if position.get("train_batch_size", self._train_batch_size) != self._train_batch_size:
            logger.warning(
                "the checkpoint was trained with batch size %s, this run uses %s: the data order restarts at the "
                "beginning of epoch %d",
                position.get("train_batch_size"),
                self._train_batch_size,
                epoch,
            )
            done = 0
        if self.args.ignore_data_skip:
            done = 0
        self._data_position = (epoch, done)
        logger.info(
            "resumed from %s at step %d (epoch %d, %d micro-batches in)", path, saved.global_step, epoch, done
        )
        return epoch, done

    def save_model(self, output_dir: str | None = None) -> None:
        """Save the weights (safetensors), config and tokenizer to ``output_dir`` (default ``args.output_dir``)."""
        output_dir = Path(output_dir or self.args.output_dir)
        sharded = self._fsdp_model()
        state = None
        if sharded is not None:  # collective: every rank takes part in gathering the full weights
            state, _ = fsdp.full_state_dicts(sharded, None, rank0_only=not self.args.save_on_each_node)
        if self.args.should_save:
            output_dir.mkdir(parents=True, exist_ok=True)
            checkpointing.save_model_weights(
                distributed.unwrap_model(self.model), output_dir, state_dict=state
            )
            if self.tokenizer is not None and hasattr(self.tokenizer, "save_pretrained"):
                self.tokenizer.save_pretrained(str(output_dir))
            (output_dir / "training_args.json").write_text(self.args.to_json_string() + "\n")
        distributed.barrier()

    # ------------------------------------------------------------------------------------------ evaluation
    @property
    def prediction_pad_id(self) -> int:
        """Pads predictions across batches: the tokenizer's pad id, else the model config's, else 0."""
        for source in (self.tokenizer, getattr(distributed.unwrap_model(self.model), "config", None)):
            pad = getattr(source, "pad_token_id", None)
            if pad is not None:
                return int(pad)
        return 0

    def _full_parameters(self):
        """FSDP: every rank holds the full weights while it evaluates, so ranks with fewer batches or shorter
        generations never wait in a per-layer all-gather for the others (see ``s2s.fsdp``)."""
        sharded = self._fsdp_model()
        return fsdp.full_parameters(sharded) if sharded is not None else contextlib.nullcontext()

    def _model_for_evaluation(self) -> nn.Module:
        model = self.model
        if not self.is_in_train:
            # Casting for full half-precision evaluation changes the weights, so only outside training.
            if self.args.bf16_full_eval:
                model = model.to(dtype=torch.bfloat16)
            elif self.args.fp16_full_eval:
                model = model.to(dtype=torch.float16)
        model.eval()
        return model

    def evaluate(
        self, eval_dataset=None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Evaluate on ``eval_dataset`` (default: the trainer's); a dict of datasets is evaluated one by one
        with metrics named ``<prefix>_<name>_<metric>``."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):
            metrics: dict[str, float] = {}
            for name, ds in dataset.items():
                metrics.update(
                    self.evaluate(
                        ds, ignore_keys=ignore_keys, metric_key_prefix=f"{metric_key_prefix}_{name}"
                    )
                )
            return metrics
        loader = self.get_eval_dataloader(dataset)
        start = time.time()
        with self._full_parameters():
            output = self.evaluation_loop(
                loader,
                description="Evaluation",
                prediction_loss_only=True if self.compute_metrics is None else None,
                ignore_keys=ignore_keys,
                metric_key_prefix=metric_key_prefix,
            )
        output.metrics.update(
            speed_metrics(
                metric_key_prefix,
                start,
                num_samples=output.num_samples,
                num_steps=num_batches(output.num_samples, self.args.eval_batch_size),
            )
        )
        self.log(output.metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics=output.metrics
        )
        if self.args.save_predictions:
            self.save_predictions(output, metric_key_prefix)
        return output.metrics

    def predict(
        self, test_dataset, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
    ) -> PredictionOutput:
        """Predictions (in dataset order), label ids and metrics for ``test_dataset``."""
        loader = self.get_test_dataloader(test_dataset)
        start = time.time()
        with self._full_parameters():
            output = self.evaluation_loop(
                loader, description="Prediction", ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
            )
        output.metrics.update(
            speed_metrics(
                metric_key_prefix,
                start,
                num_samples=output.num_samples,
                num_steps=num_batches(output.num_samples, self.args.eval_batch_size),
            )
        )
        self.control = self.callback_handler.on_predict(
            self.args, self.state, self.control, metrics=output.metrics
        )
        if self.args.save_predictions:
            self.save_predictions(output, metric_key_prefix)
        return PredictionOutput(output.predictions, output.label_ids, output.metrics)

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
        with torch.no_grad():
            return run_evaluation_loop(
                self,
                dataloader,
                description=description,
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
        names = self.args.label_names
        has_labels = all(inputs.get(n) is not None for n in names)
        labels = None
        if has_labels:
            labels = inputs[names[0]] if len(names) == 1 else tuple(inputs[n] for n in names)
        if ignore_keys is None:
            config = getattr(distributed.unwrap_model(model), "config", None)
            ignore_keys = list(getattr(config, "keys_to_ignore_at_inference", []) or [])
        with torch.no_grad(), self._autocast(evaluating=True):
            if has_labels:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                loss = loss.detach().float()
            else:
                loss, outputs = None, model(**inputs)
        if prediction_loss_only:
            return loss, None, None
        return loss, logits_for_metrics(outputs, ignore_keys, has_loss=loss is not None), labels

    # Override points of the evaluation loop (see ``s2s.evaluation.run_evaluation_loop``): each default
    # is the generic behaviour; ``Seq2SeqTrainer`` overrides them instead of repeating the loop.
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
        self,
        index: np.ndarray,
        parts: tuple[Nested | None, ...],
        *,
        pad_values: tuple[int | float, ...],
        sharded: bool,
    ) -> tuple[np.ndarray, tuple[Nested | None, ...]]:
        """The rows of every process, each example once, in dataset order (``index`` holds each row's
        dataset index; ``parts`` are (predictions, label ids, inputs)). ``sharded`` is False for an
        iterable dataset, which every process evaluates whole: the gather then keeps one copy."""
        return gather_in_dataset_order(index, parts, pad_values=pad_values)

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
        if not self.args.should_save or output.predictions is None:
            return
        preds = output.predictions[0] if isinstance(output.predictions, (tuple, list)) else output.predictions
        labels = output.label_ids[0] if isinstance(output.label_ids, (tuple, list)) else output.label_ids
        path = Path(self.args.output_dir) / f"{metric_key_prefix}_predictions.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for i, pred in enumerate(preds):
                record = {"id": i, "prediction": np.asarray(pred).tolist()}
                if labels is not None:
                    record["label"] = np.asarray(labels[i]).tolist()
                f.write(json.dumps(record) + "\n")

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
            self,
            hp_space=hp_space,
            compute_objective=compute_objective,
            n_trials=n_trials,
            direction=direction,
            backend=backend,
            **kwargs,
        )


def _strategy_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def _batch_size(batch: Mapping[str, Any]) -> int:
    from s2s.evaluation import batch_size_of

    return batch_size_of(batch)
