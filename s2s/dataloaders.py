"""Building the train and eval DataLoaders: column pruning, sampler choice, and exact resume.

Training order comes from a resumable sampler (``samplers`` protocol): deterministic given
``(seed, epoch)``, and the trainer sets how much of the epoch was already consumed before iterating, so a
resumed run continues the uninterrupted run's order without reading the skipped data (Hugging Face skips by
reading the batches again, and with ``group_by_length`` replays a different order after a resume).

Evaluation runs in dataset order, or longest-first with ``group_by_length`` (tight batches, out-of-memory at
the first batch); either way the sampler carries the order, and the evaluation loop puts predictions back in
dataset order (Hugging Face evaluates through a random sampler under ``group_by_length``, so its predictions
come back shuffled). Under torch.distributed each process takes every ``num_replicas``-th example of that
order: no padding repeats, so every example is evaluated exactly once (a distributed sampler that pads by
repeating examples would score some of them twice).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from s2s.distributed import unwrap_model
from s2s.stream_position import is_resumable_stream
from samplers import (
    LengthGroupedSampler,
    ResumableSampler,
    TokenBudgetBatchSampler,
    eval_order,
    lengths_from_dataset,
    stored_lengths,
)
from samplers.resumable import randperm
from samplers.sharding import padded_size, shard

logger = logging.getLogger(__name__)


class RandomSampler(ResumableSampler):
    """A fresh random permutation per epoch, from its own generator seeded with ``seed + epoch``.

    The equivalent of ``torch.utils.data.RandomSampler`` (sharded like ``DistributedSampler``: padded with
    the first indices to a multiple of ``num_replicas``, then every ``num_replicas``-th index), but resumable
    at any position and independent of the global RNG, so dropout and data order never disturb each other.
    """

    def __init__(self, num_examples: int, *, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank)
        if num_examples < 1:
            raise ValueError(f"RandomSampler needs at least one example, got {num_examples}")
        self.num_examples = num_examples

    def __len__(self) -> int:
        return padded_size(self.num_examples, self.num_replicas) // self.num_replicas

    def _epoch_order(self, generator: torch.Generator) -> list[int]:
        return shard(randperm(self.num_examples, generator), self.num_replicas, self.rank).tolist()


class OrderedSampler(Sampler):
    """Yields a fixed list of dataset indices (``order``); the evaluation loop reads ``order`` to put the
    predictions back in dataset order."""

    def __init__(self, order: Sequence[int]) -> None:
        self.order = list(order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


# ----------------------------------------------------------------------------------------------- columns
def forward_argument_names(model: torch.nn.Module) -> set[str] | None:
    """Names ``model.forward`` accepts; None when it takes ``**kwargs`` (then every column is usable)."""
    parameters = inspect.signature(unwrap_model(model).forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def drop_length_column(dataset: Any, model: torch.nn.Module, *, column: str, description: str):
    """Drop the stored ``column`` of lengths (``length_column_name``) from a ``datasets.Dataset`` before it
    reaches the collator: the sampler reads it, the model does not, even one whose ``forward`` takes
    ``**kwargs`` (which keeps every other column). Kept when ``forward`` names it. The trainer calls it with
    ``remove_unused_columns``; without, every column reaches the collator, as in Hugging Face."""
    if not hasattr(dataset, "column_names") or column not in dataset.column_names:
        return dataset
    accepted = forward_argument_names(model)
    if accepted is not None and column in accepted:
        return dataset
    logger.debug(
        "%s: the %r column is for the sampler, not the model: removed from its inputs", description, column
    )
    return dataset.remove_columns([column])


def remove_unused_columns(
    dataset: Any, model: torch.nn.Module, *, label_names: Sequence[str], description: str
):
    """Drop the columns of a ``datasets.Dataset`` that ``model.forward`` does not take (text, ids...), so
    the collator only sees tensors-to-be. Other datasets are returned unchanged."""
    if not hasattr(dataset, "column_names") or not hasattr(dataset, "remove_columns"):
        return dataset
    accepted = forward_argument_names(model)
    if accepted is None:
        return dataset
    keep = accepted | set(label_names) | {"label", "label_ids"}
    unused = [c for c in dataset.column_names if c not in keep]
    if unused:
        logger.info(
            "%s: removing columns not taken by %s.forward: %s", description, type(model).__name__, unused
        )
        dataset = dataset.remove_columns(unused)
    if not dataset.column_names:
        raise ValueError(
            f"{description}: no column is left after removing those that {type(model).__name__}.forward does "
            f"not take ({sorted(accepted)}); rename the columns or set remove_unused_columns=False"
        )
    return dataset


# ----------------------------------------------------------------------------------------------- lengths
def dataset_lengths(dataset: Any, *, length_column_name: str, input_name: str = "input_ids") -> np.ndarray:
    """Per-example lengths for length-aware sampling: the ``length_column_name`` column when the dataset has
    one (one length or one ``(source, target)`` pair per example, as stored: ``samplers.stored_lengths``),
    else ``(source, target)`` lengths from ``input_name`` and ``labels`` (or source lengths only)."""
    columns = _column_names(dataset)
    if length_column_name in columns:
        return stored_lengths(dataset, column=length_column_name)
    if input_name not in columns:
        raise ValueError(
            f"group_by_length/max_tokens_per_batch need example lengths: the dataset has neither a "
            f"{length_column_name!r} column (length_column_name) nor {input_name!r}; its columns are {sorted(columns)}"
        )
    target = "labels" if "labels" in columns else None
    return lengths_from_dataset(dataset, column=input_name, target_column=target)


def _column_names(dataset: Any) -> set[str]:
    if hasattr(dataset, "column_names"):
        return set(dataset.column_names)
    first = dataset[0]
    return set(first) if isinstance(first, dict) else set()


# ----------------------------------------------------------------------------------------------- loaders
def loader_options(args, *, generator: torch.Generator | None = None) -> dict[str, Any]:
    """The ``dataloader_*`` arguments as DataLoader keyword arguments.

    Batches are built in page-locked ("pinned") memory when training on CUDA: only from there can the copy to
    the GPU run asynchronously (``.to(device, non_blocking=True)``) while the device is still busy with the
    previous step. Pinning is pointless for a CPU run, even on a machine that has a GPU."""
    options: dict[str, Any] = {
        "num_workers": args.dataloader_num_workers,
        "pin_memory": args.dataloader_pin_memory and args.device.type == "cuda",
    }
    if args.dataloader_num_workers > 0:
        options["persistent_workers"] = args.dataloader_persistent_workers
        if args.dataloader_prefetch_factor is not None:
            options["prefetch_factor"] = args.dataloader_prefetch_factor
    if generator is not None:
        # The loader draws its workers' base seed from this generator, not the global RNG, so creating an
        # iterator (e.g. right after a resume restored the RNG) leaves dropout's random stream untouched.
        options["generator"] = generator
    return options


def build_train_loader(
    dataset: Any, sampler: Sampler, *, batch_size: int, collate_fn, args, seed: int
) -> DataLoader:
    """A training DataLoader over ``sampler`` (a batch sampler when it yields lists of indices)."""
    generator = torch.Generator().manual_seed(seed)
    options = loader_options(args, generator=generator)
    if is_resumable_stream(dataset):
        # Its items are already batches: the collator pads each (batch_size=None turns batching off).
        return DataLoader(dataset, batch_size=None, collate_fn=collate_fn, **options)
    if isinstance(dataset, IterableDataset):
        return DataLoader(
            dataset,
            batch_size=batch_size,
            collate_fn=collate_fn,
            drop_last=args.dataloader_drop_last,
            **options,
        )
    if is_batch_sampler(sampler):
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, **options)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        drop_last=args.dataloader_drop_last,
        **options,
    )


def default_eval_order(dataset: Dataset, *, args, sort_by_length: bool) -> list[int]:
    """Dataset indices in evaluation order: dataset order, or longest first (by ``max(source, target)``,
    or the ``length_column_name`` column) when ``sort_by_length``."""
    order = list(range(len(dataset)))
    if sort_by_length and len(dataset) > 0:
        lengths = dataset_lengths(dataset, length_column_name=args.length_column_name)
        order, _ = eval_order(lengths)
    return list(order)


def build_eval_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    collate_fn,
    args,
    order: Sequence[int] | None = None,
    num_replicas: int = 1,
    rank: int = 0,
) -> DataLoader:
    """An evaluation DataLoader over this process's shard (``rank``-th of every ``num_replicas``) of
    ``order`` (dataset indices; default: dataset order). The loader's ``sampler.order`` holds the dataset
    index of every row, so the evaluation loop can gather rows in dataset order. An iterable dataset is
    read as it comes, whole, by every process (``order`` does not apply)."""
    if isinstance(dataset, IterableDataset):
        return DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn, **loader_options(args))
    if order is None:
        order = range(len(dataset))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=OrderedSampler(list(order)[rank::num_replicas]),
        collate_fn=collate_fn,
        drop_last=False,  # every example is evaluated: dataloader_drop_last is for training only
        **loader_options(args),
    )


def is_batch_sampler(sampler: Any) -> bool:
    return isinstance(sampler, TokenBudgetBatchSampler) or getattr(sampler, "yields_batches", False)


def default_train_sampler(
    dataset: Any,
    args,
    *,
    batch_size: int,
    seed: int,
    num_replicas: int,
    rank: int,
    input_name: str = "input_ids",
) -> Sampler | None:
    """The training sampler the arguments ask for: token budget (``max_tokens_per_batch``), length-grouped
    (``group_by_length``), or a resumable random permutation. None for an iterable dataset."""
    if is_resumable_stream(dataset):
        check_stream(dataset, args, num_replicas=num_replicas, rank=rank)
        return None
    if isinstance(dataset, IterableDataset):
        return None
    if args.max_tokens_per_batch is not None:
        lengths = dataset_lengths(dataset, length_column_name=args.length_column_name, input_name=input_name)
        return TokenBudgetBatchSampler(
            lengths, args.max_tokens_per_batch, seed=seed, num_replicas=num_replicas, rank=rank
        )
    if args.group_by_length:
        lengths = dataset_lengths(dataset, length_column_name=args.length_column_name, input_name=input_name)
        return LengthGroupedSampler(lengths, batch_size, seed=seed, num_replicas=num_replicas, rank=rank)
    return RandomSampler(len(dataset), seed=seed, num_replicas=num_replicas, rank=rank)


def check_stream(dataset: Any, args, *, num_replicas: int, rank: int) -> None:
    """Refuse what a streamed dataset that cuts its own batches cannot honour: batching arguments meant for
    the sampler, DataLoader workers (its position must stay in this process to be saved), a process split
    other than the run's."""
    name = type(dataset).__name__
    if args.group_by_length:
        raise ValueError(f"group_by_length does not apply to {name}, which sorts its own batches by length")
    budget = getattr(dataset, "max_tokens", None)
    if args.max_tokens_per_batch is not None and args.max_tokens_per_batch != budget:
        raise ValueError(
            f"max_tokens_per_batch={args.max_tokens_per_batch} but {name} cuts batches of max_tokens={budget}: "
            "leave max_tokens_per_batch unset (the dataset's own budget applies) or set them equal"
        )
    if args.dataloader_num_workers > 0:
        raise ValueError(
            f"{name} must be read with dataloader_num_workers=0 (got {args.dataloader_num_workers}): its "
            "position, which a checkpoint saves, lives in the object that reads it"
        )
    split = (getattr(dataset, "num_replicas", 1), getattr(dataset, "rank", 0))
    if split != (num_replicas, rank):
        raise ValueError(
            f"{name} was built for num_replicas={split[0]}, rank={split[1]} but this process is rank {rank} of "
            f"{num_replicas}: build it with num_replicas=world size and rank=this process's rank"
        )
