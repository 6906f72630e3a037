"""The Trainer's checkpoints: when to resume from which, what to save, which ones to keep, the best model.

``Checkpointer`` decides; ``s2s.checkpointing`` writes and reads the folders; the distribution strategy
gathers and scatters the state of a sharded model. Every process calls ``save``, ``save_model``, ``resume``
and ``load_weights`` (gathering and loading a sharded model are collective); only the saving processes
write, and the others wait at a barrier until the files are complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s2s import checkpointing, elastic
from s2s.callbacks import TrainerState, best_metric_spec, is_improvement, lookup_metric
from s2s.data_position import DataPosition
from s2s.last_checkpoint import refuse_hf_checkpoint
from s2s.strategy import DistributionStrategy

logger = logging.getLogger(__name__)

# What a resumed run takes from the checkpoint's TrainerState; the new run's schedule (max_steps, intervals)
# stands.
RESUMED_STATE_FIELDS = (
    "epoch", "global_step", "log_history", "best_metric", "best_global_step", "best_model_checkpoint",
    "nonfinite_steps", "consecutive_nonfinite_steps", "loss_accumulators", "num_input_tokens_seen",
    "stateful_callbacks",
)  # fmt: skip


@dataclass
class TrainingParts:
    """The objects a checkpoint saves besides the JSON states, as the Trainer holds them now."""

    model: nn.Module  # as it trains: wrapped by the strategy (DDP, FSDP, compiled) or the module itself
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    scaler: Any = None
    tokenizer: Any = None


class Checkpointer:
    """Saves, resumes, rotates and keeps the best checkpoint of one Trainer (``args``), and holds the
    training data's ``position`` that each checkpoint records."""

    def __init__(self, args, strategy: DistributionStrategy) -> None:
        self.args = args
        self.strategy = strategy
        self.position = DataPosition()
        self.last_saved_step = -1
        self.last_checkpoint: Path | None = None
        self.resumed_step = 0  # the global step of the checkpoint ``resume`` last restored

    @property
    def saves_checkpoints(self) -> bool:
        return str(getattr(self.args.save_strategy, "value", self.args.save_strategy)) != "no"

    # ------------------------------------------------------------------------------------------ before training
    def starting_point(
        self, resume_from_checkpoint: str | Path | bool | None, *, search_trial: bool = False
    ) -> Path | None:
        """Where a ``train()`` call starts: the checkpoint to resume from (``resume_from_checkpoint``, by
        default ``args.resume_from_checkpoint``; see ``resume_path``), or None for a fresh run, once
        ``check_output_dir`` has made sure it will not mix its checkpoints with another run's.

        When torchrun has restarted the job after a worker failed, a call given no checkpoint continues from
        the job's newest complete one instead (``s2s.elastic``), once an attempt of the job has started
        training there; output_dir is then not checked again, since its checkpoints are the job's own. Not for
        a hyperparameter-search trial (``search_trial``): its hyperparameters are drawn again on the restart
        and may not be those its checkpoints were trained with."""
        if resume_from_checkpoint is None:
            resume_from_checkpoint = self.args.resume_from_checkpoint
        launch = elastic.agreed_launch()
        if launch is not None and launch.is_restart:
            if resume_from_checkpoint is not None:
                resume = self.resume_path(resume_from_checkpoint)
                elastic.log_given_checkpoint(launch, resume)
                return resume
            restart = elastic.restart_point(self.args.output_dir, launch, search_trial=search_trial)
            if restart.trained_here:
                return restart.checkpoint
        resume = self.resume_path(resume_from_checkpoint)
        if resume is None:
            self.check_output_dir()
            if launch is not None and self.strategy.rank == 0:
                elastic.record_training_start(self.args.output_dir, launch)
        return resume

    def resume_path(self, resume_from_checkpoint: str | Path | bool | None) -> Path | None:
        """The folder to resume from: the given one, the newest complete one in ``output_dir`` for True, or
        None (also for False). A checkpoint written by Hugging Face's Trainer is refused here, before any
        work, with the way to train from its weights instead."""
        if resume_from_checkpoint is None or resume_from_checkpoint is False:
            return None
        if resume_from_checkpoint is not True:
            refuse_hf_checkpoint(resume_from_checkpoint)
            return Path(resume_from_checkpoint)
        latest = checkpointing.find_latest_checkpoint(self.args.output_dir)
        if latest is None:
            for folder in reversed(checkpointing.list_checkpoints(self.args.output_dir)):
                refuse_hf_checkpoint(folder)
            raise ValueError(
                f"resume_from_checkpoint=True but {self.args.output_dir} holds no complete checkpoint; "
                "train without resuming or pass a checkpoint folder"
            )
        return latest

    def check_output_dir(self) -> None:
        """A fresh run must not mix its checkpoints with those of another run in the same folder."""
        existing = checkpointing.list_checkpoints(self.args.output_dir)
        if existing and not self.args.overwrite_output_dir:
            names = ", ".join(p.name for p in existing[:3]) + (", ..." if len(existing) > 3 else "")
            raise ValueError(
                f"output_dir {self.args.output_dir} already holds checkpoints ({names}); pass "
                "resume_from_checkpoint=True to continue that run, overwrite_output_dir=True to train over it, "
                "or choose another output_dir"
            )

    # ------------------------------------------------------------------------------------------ saving
    def save(self, parts: TrainingParts, state: TrainerState) -> Path:
        """Save ``checkpoint-<global_step>`` and rotate the old ones (keeping the best); returns its path."""
        args = self.args
        path = checkpointing.checkpoint_path(args.output_dir, state.global_step)
        if state.best_global_step == state.global_step:
            state.best_model_checkpoint = str(path)
        # Collective steps first (every rank takes part), then only the saving process(es) write.
        model_state, optimizer_state = self.strategy.full_state_dicts(parts.model, parts.optimizer)
        rng_states = self.strategy.gather_rng_states()
        sampler_state = self.position.state_dict()  # every process: a stream's positions are gathered
        if args.should_save:
            contents = checkpointing.CheckpointContents(
                model=self.strategy.unwrap(parts.model),
                optimizer=parts.optimizer,
                scheduler=parts.scheduler,
                scaler=parts.scaler,
                tokenizer=parts.tokenizer,
                trainer_state=state.to_dict(),
                sampler_state=sampler_state,
                training_args=args.to_dict(),
                model_state_dict=model_state,
                optimizer_state_dict=optimizer_state,
                rng_states=rng_states,
            )
            checkpointing.write_checkpoint(path, contents)
            checkpointing.rotate_checkpoints(
                args.output_dir, save_total_limit=args.save_total_limit, keep=state.best_model_checkpoint
            )
        self.strategy.barrier()
        self.last_saved_step, self.last_checkpoint = state.global_step, path
        return path

    def save_for_exit(self, parts: TrainingParts, state: TrainerState) -> Path | None:
        """The checkpoint of the current step for a run that stops early (saved now unless it already was);
        None when the run saves no checkpoints (``save_strategy="no"``)."""
        if not self.saves_checkpoints:
            return None
        if self.last_saved_step == state.global_step:
            return self.last_checkpoint
        return self.save(parts, state)

    def save_model(self, parts: TrainingParts, output_dir: str | Path | None = None) -> None:
        """The weights (safetensors), config, tokenizer and ``training_args.json`` in ``output_dir`` (default
        ``args.output_dir``): a folder ``from_pretrained`` loads."""
        output_dir = Path(output_dir or self.args.output_dir)
        model_state, _ = self.strategy.full_state_dicts(parts.model, None)  # collective under FSDP
        if self.args.should_save:
            output_dir.mkdir(parents=True, exist_ok=True)
            checkpointing.save_model_weights(
                self.strategy.unwrap(parts.model), output_dir, state_dict=model_state
            )
            if parts.tokenizer is not None and hasattr(parts.tokenizer, "save_pretrained"):
                parts.tokenizer.save_pretrained(str(output_dir))
            (output_dir / "training_args.json").write_text(self.args.to_json_string() + "\n")
        self.strategy.barrier()

    # ------------------------------------------------------------------------------------------ the best model
    def note_evaluation(self, state: TrainerState, metrics: dict[str, float]) -> None:
        """Remember the step with the best ``metric_for_best_model`` (its checkpoint is kept by rotation and
        loaded at the end with ``load_best_model_at_end``)."""
        if self.args.metric_for_best_model is None:
            return
        name, greater = best_metric_spec(self.args)
        value = lookup_metric(metrics, name)
        if value is None:
            raise KeyError(
                f"metric_for_best_model={name!r} is not among the evaluation metrics {sorted(metrics)}; "
                "use one of them (with or without the 'eval_' prefix)"
            )
        if state.best_metric is None or is_improvement(value, state.best_metric, greater_is_better=greater):
            state.best_metric = value
            state.best_global_step = state.global_step

    def load_best(self, model: nn.Module, state: TrainerState) -> None:
        """With ``load_best_model_at_end``: the weights of the best checkpoint, if there is one."""
        if not self.args.load_best_model_at_end or state.best_model_checkpoint is None:
            return
        logger.info(
            "loading the best model from %s (%s)",
            state.best_model_checkpoint,
            self.args.metric_for_best_model,
        )
        self.strategy.barrier()
        self.load_weights(model, state.best_model_checkpoint)

    # ------------------------------------------------------------------------------------------ loading
    def load_weights(self, model: nn.Module, path: str | Path) -> None:
        """The safetensors weights in folder ``path`` into ``model`` (into its shards under FSDP)."""
        self.strategy.load_model_state(model, path)

    def resume(self, path: str | Path, parts: TrainingParts, state: TrainerState) -> TrainerState:
        """Restore everything from checkpoint ``path``: weights, optimizer, scheduler, scaler, this process's
        RNGs, the data position, and ``RESUMED_STATE_FIELDS`` of ``state``. Returns the saved state."""
        checkpointing.verify_checkpoint(path)
        self.strategy.load_model_state(parts.model, path)
        if parts.optimizer is not None:
            self.strategy.load_optimizer_state(parts.model, parts.optimizer, path)
        loaded = checkpointing.restore_checkpoint_state(
            path,
            scheduler=parts.scheduler,
            scaler=parts.scaler,
            rank=self.strategy.rank,  # each process restores its own RNG state
        )
        saved = TrainerState.from_dict(loaded.trainer_state)
        self.resumed_step = saved.global_step
        for name in RESUMED_STATE_FIELDS:
            setattr(state, name, getattr(saved, name))
        self.position.load_state_dict(loaded.sampler_state, ignore_data_skip=self.args.ignore_data_skip)
        logger.info(
            "resumed from %s at step %d (epoch %d, %d micro-batches in)",
            path,
            saved.global_step,
            self.position.epoch,
            self.position.micro_batches,
        )
        return saved
