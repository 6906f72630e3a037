"""The few torch.distributed operations the trainer needs, each a no-op in a single process.

Launch with ``torchrun``: it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables, and
``init_distributed(args)`` creates the process group from them. Without torchrun every helper here behaves
as a world of one process, so the trainer code has no ``if distributed`` branches of its own.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from s2s.rng_state import rng_state

logger = logging.getLogger(__name__)


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", 1)) > 1 and "RANK" in os.environ


def init_distributed(args) -> bool:
    """Create the process group from the torchrun environment (once); return whether one is running.

    The backend is ``args.ddp_backend`` when given, else nccl on CUDA and gloo on CPU; ``args.ddp_timeout``
    (seconds) bounds how long a collective waits for a slow rank.
    """
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    if not launched_by_torchrun():
        return False
    use_cuda = torch.cuda.is_available() and not getattr(args, "use_cpu", False)
    backend = args.ddp_backend or ("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(get_local_rank() % torch.cuda.device_count())
    timeout = datetime.timedelta(seconds=args.ddp_timeout)
    store = restart_safe_store(timeout)
    if store is None:
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        dist.init_process_group(
            backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout
        )
    logger.info("process group up: rank %d of %d, backend %s", get_rank(), get_world_size(), backend)
    return is_distributed()


def restart_safe_store(timeout: datetime.timedelta) -> dist.Store | None:
    """The store for the process group when torchrun may restart the job, else None (the default set-up).

    torchrun's agent hosts one key-value store for the whole job and hands it to every attempt
    (``TORCHELASTIC_USE_AGENT_STORE=True``). The process group publishes each process's address in it under
    the same keys on every attempt, so a restarted process can read the address of a process of the failed
    attempt, which is gone: gloo then fails with "connectFullMesh failed ... Connection refused" and the
    restart is wasted. Prefixing the keys with the attempt (``TORCHELASTIC_RESTART_COUNT``) keeps each
    attempt's keys apart. Every agent counts the restarts it made; the counts agree across machines when a
    failure stops every worker, which is what torchrun does on one machine. A multi-machine job whose agents
    may disagree (a machine replaced, or restarted for a newcomer, which torchrun does not count) can set
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` for torchrun instead: every attempt then gets a new store, and
    this returns None."""
    if (
        os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
        or "TORCHELASTIC_RESTART_COUNT" not in os.environ
    ):
        return None
    if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) == 0:
        return None  # no later attempt to keep apart from
    store = dist.TCPStore(
        host_name=os.environ["MASTER_ADDR"],
        port=int(os.environ["MASTER_PORT"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        is_master=False,
        timeout=timeout,
    )
    return dist.PrefixStore(f"s2s/attempt-{os.environ['TORCHELASTIC_RESTART_COUNT']}", store)


def all_reduce_sum(value: torch.Tensor | float | int, *, device: torch.device | None = None):
    """Sum of ``value`` over all processes; returns the same kind it was given (tensor, float or int)."""
    if not is_distributed():
        return value
    if isinstance(value, torch.Tensor):
        out = value.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out
    # nccl reduces only CUDA tensors; gloo only CPU ones.
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor(value, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    total = tensor.item()
    return int(round(total)) if isinstance(value, int) else total


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_rng_states() -> list[dict] | None:
    """Every process's RNG states (python, numpy, torch), indexed by rank, for ``rng_state_<rank>.pt``; None
    in a single process. Each rank draws a different amount of randomness (dropout over batches of other
    shapes), so after a resume each must restore its own state, not rank 0's."""
    if not is_distributed():
        return None
    return all_gather_object(rng_state())


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def wrap_ddp(model: torch.nn.Module, args) -> torch.nn.Module:
    """Wrap ``model`` in DistributedDataParallel when a process group is running; else return it as is."""
    if not is_distributed():
        return model
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    kwargs: dict[str, Any] = {}
    if args.ddp_find_unused_parameters is not None:
        kwargs["find_unused_parameters"] = args.ddp_find_unused_parameters
    elif getattr(args, "gradient_checkpointing", False):
        # Checkpointed forwards re-run modules in backward; DDP's unused-parameter search must be off.
        kwargs["find_unused_parameters"] = False
    if args.ddp_bucket_cap_mb is not None:
        kwargs["bucket_cap_mb"] = args.ddp_bucket_cap_mb
    return DistributedDataParallel(model, device_ids=device_ids, **kwargs)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside DDP/FSDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, DistributedDataParallel) or (
            hasattr(model, "module")
            and isinstance(model.module, torch.nn.Module)
            and type(model).__name__ in ("FullyShardedDataParallel", "DataParallel")
        ):
            model = model.module
        else:
            return model
