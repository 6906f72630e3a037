"""How training is spread over processes and devices, chosen once from the arguments: one process, DDP or FSDP.

The Trainer talks to one ``DistributionStrategy`` and never asks which one it is. Everything that differs
between them is a method here:

- the processes: ``world_size``, ``rank``, ``barrier``, ``all_reduce_sum`` (the token count of an
  accumulation window), ``any_process`` (a stop signal seen by one rank), ``gather_rng_states``;
- the model: ``place`` (onto the device), ``wrap`` (DDP or FSDP around it, torch.compile inside),
  ``unwrap``, ``accumulating`` (no gradient all-reduce before the last micro-batch of a window);
- its state: ``full_state_dicts`` (collective under FSDP: the shards gathered), ``load_model_state`` and
  ``load_optimizer_state`` (into the shards under FSDP), ``full_parameters`` (evaluation without
  collectives).

``choose_strategy(args)`` creates the process group from the torchrun environment and picks the strategy; a
new back-end (another accelerator, another sharding engine) is one more subclass and one more line there.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s2s import distributed, fsdp
from s2s.checkpointing import (
    load_model_weights,
    load_optimizer_state,
    read_model_weights,
    read_optimizer_state,
)

logger = logging.getLogger(__name__)


class DistributionStrategy:
    """One process: every collective is the identity and the model trains as it is (compiled with
    ``torch_compile``). The other strategies extend this one."""

    def __init__(self, args) -> None:
        self.args = args  # TrainingArguments has already applied process-wide settings such as tf32

    def __repr__(self) -> str:
        return f"{type(self).__name__}(world_size={self.world_size})"

    # ------------------------------------------------------------------------------------------ processes
    @property
    def world_size(self) -> int:
        return 1

    @property
    def rank(self) -> int:
        return 0

    @property
    def is_world_process_zero(self) -> bool:
        return self.rank == 0

    @property
    def is_local_process_zero(self) -> bool:
        return distributed.get_local_rank() == 0

    def barrier(self) -> None:
        """Wait until every process gets here."""

    def all_reduce_sum(self, value):
        """The sum of ``value`` (tensor, int or float) over all processes, of the same kind."""
        return value

    def any_process(self, flag: bool) -> bool:
        """Whether ``flag`` is set on at least one process (e.g. a signal only one rank received)."""
        return flag

    def gather_rng_states(self) -> list[dict] | None:
        """Every process's RNG states by rank, for a checkpoint; None: this process's alone suffice."""
        return None

    # ------------------------------------------------------------------------------------------ the model
    def place(self, model: nn.Module) -> nn.Module:
        """The model on this process's device (``args.device``)."""
        return model.to(self.args.device)

    def place_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch's tensors on this process's device; other values as they are."""
        device = self.args.device
        # non_blocking: a batch in pinned memory (see s2s.dataloaders) is copied while the device still works
        return {
            k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
        }

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that trains: ``model`` compiled with ``torch_compile``, else ``model`` itself."""
        args = self.args
        if not args.torch_compile:
            return model
        options = {}
        if args.torch_compile_backend is not None:
            options["backend"] = args.torch_compile_backend
        if args.torch_compile_mode is not None:
            options["mode"] = args.torch_compile_mode
        return torch.compile(model, **options)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The user's module inside whatever ``wrap`` put around it."""
        return distributed.unwrap_model(model)

    def accumulating(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Around the backward of a micro-batch that is not the last of its accumulation window."""
        return contextlib.nullcontext()

    def release_cached_memory(self) -> None:
        """Give the device memory torch keeps cached back (after an out-of-memory error)."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------------------------------ its state
    def full_state_dicts(self, model: nn.Module, optimizer: torch.optim.Optimizer | None):
        """``(model state, optimizer state)`` for a checkpoint, or ``(None, None)`` when the modules hold the
        full state themselves and the checkpoint reads them directly (no copy). Every process calls it."""
        return None, None

    def load_model_state(self, model: nn.Module, directory: str | Path) -> None:
        """Load the safetensors weights of ``directory`` into ``model`` (wrapped or not); errors name the
        tensors that do not fit."""
        load_model_weights(self.unwrap(model), directory)

    def load_optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, directory: str | Path
    ) -> None:
        load_optimizer_state(optimizer, directory)

    def full_parameters(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Inside: ``unwrap(model)`` runs forward and ``generate`` on this process alone, without waiting for
        the others (ranks evaluate different numbers of batches and decoding steps)."""
        return contextlib.nullcontext()


class DDPStrategy(DistributionStrategy):
    """Several processes, each with a full replica in ``DistributedDataParallel``; gradients are averaged
    once per optimizer update."""

    @property
    def world_size(self) -> int:
        return distributed.get_world_size()

    @property
    def rank(self) -> int:
        return distributed.get_rank()

    def barrier(self) -> None:
        distributed.barrier()

    def all_reduce_sum(self, value):
        return distributed.all_reduce_sum(value)

    def any_process(self, flag: bool) -> bool:
        return distributed.all_reduce_sum(int(flag)) > 0

    def gather_rng_states(self) -> list[dict] | None:
        # Each rank draws a different amount of randomness (dropout over batches of other shapes), so each
        # must resume from its own state.
        return distributed.gather_rng_states()

    def wrap(self, model: nn.Module) -> nn.Module:
        return distributed.wrap_ddp(super().wrap(model), self.args)

    def accumulating(self, model: nn.Module) -> contextlib.AbstractContextManager:
        # DDP (and FSDP) all-reduce gradients on every backward unless told not to: only the last one counts.
        return model.no_sync()


class FSDPStrategy(DDPStrategy):
    """Parameters, gradients and optimizer state sharded across processes (``s2s.fsdp``). Checkpoints hold the
    full, unsharded state, so they resume with any number of processes, with or without FSDP."""

    def __init__(self, args) -> None:
        super().__init__(args)
        self._wrapped: nn.Module | None = None

    def wrap(self, model: nn.Module) -> nn.Module:
        if self._wrapped is not None and self._wrapped.module is model:
            return self._wrapped  # FSDP flattens the module in place: wrap it once
        self._wrapped = fsdp.wrap_fsdp(model, self.args)
        return self._wrapped

    def full_state_dicts(self, model: nn.Module, optimizer: torch.optim.Optimizer | None):
        if not fsdp.is_fsdp(model):  # not trained yet: the module is whole
            return super().full_state_dicts(model, optimizer)
        return fsdp.full_state_dicts(model, optimizer, rank0_only=not self.args.save_on_each_node)

    def load_model_state(self, model: nn.Module, directory: str | Path) -> None:
        if not fsdp.is_fsdp(model):
            return super().load_model_state(model, directory)
        fsdp.load_full_state(model, read_model_weights(directory), source=str(directory))

    def load_optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, directory: str | Path
    ) -> None:
        if not fsdp.is_fsdp(model):
            return super().load_optimizer_state(model, optimizer, directory)
        fsdp.load_full_optimizer_state(model, optimizer, read_optimizer_state(directory))

    def full_parameters(self, model: nn.Module) -> contextlib.AbstractContextManager:
        return fsdp.full_parameters(model)


def choose_strategy(args) -> DistributionStrategy:
    """Create the process group from the torchrun environment (once) and return the strategy the arguments
    ask for. Sharding options that cannot work are refused here, before any model is built."""
    fsdp.check_fsdp_arguments(args)
    if not distributed.init_distributed(args):
        if args.fsdp:
            logger.warning(
                "fsdp=%s with a single process: there is nothing to shard, the model trains unsharded. "
                "Launch with torchrun --nproc_per_node N to shard it.",
                args.fsdp,
            )
        return DistributionStrategy(args)
    return FSDPStrategy(args) if args.fsdp else DDPStrategy(args)
