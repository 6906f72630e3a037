"""The protocol every sampler here shares: ``(seed, epoch)`` determinism, ``set_epoch``, and exact resume.

A subclass only says how to build one epoch's order for this rank (``_epoch_order``); this base class slices
it for resume, counts what it hands out, and saves/loads ``{"epoch", "consumed", ...}``.

Resume works like fairseq's epoch iterator, which saves ``(epoch, iterations_in_epoch)`` and slices its
frozen batch list, and not like Hugging Face's Trainer, which loads and discards the batches already trained
on and relies on restoring the global RNG to get the same order: here the order of an epoch is a pure function
of ``(seed, epoch)``, so ``order[consumed:]`` is exactly what the uninterrupted run would still yield, and no
skipped example is read. The trainer owns ``consumed`` (a DataLoader prefetches, so the sampler itself only
knows what it handed out, not what was trained on) and sets it with ``load_state_dict`` before iterating.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from samplers.sharding import check_replicas


class ResumableSampler(Sampler):
    """Base of the samplers: subclasses set ``num_examples`` and implement ``_epoch_order``."""

    def __init__(self, *, seed: int, num_replicas: int, rank: int) -> None:
        check_replicas(num_replicas, rank)
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.consumed = 0
        self.num_examples = 0  # set by the subclass; saved to catch a resume on different data
        self._cache: tuple[int, list[Any]] | None = None
        self._pass_complete = False  # the last __iter__ ran to the end: the next one starts over

    # -- what a subclass provides -------------------------------------------------------------------------
    def _epoch_order(self, generator: torch.Generator) -> list[Any]:
        """This rank's full order for the current epoch (indices, or batches of indices)."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    # -- the shared protocol ------------------------------------------------------------------------------
    def generator(self) -> torch.Generator:
        """A fresh generator for the current epoch: the same ``(seed, epoch)`` always gives the same order,
        whatever the global RNG state. Hugging Face's length-grouped sampler draws from torch's global RNG, so
        anything else that draws from it first (model initialisation, dropout) changes the batch order."""
        return torch.Generator().manual_seed(self.seed + self.epoch)

    def order(self) -> list[Any]:
        """The full order of the current epoch on this rank (cached for the epoch)."""
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._epoch_order(self.generator()))
        return self._cache[1]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields. Moving to another epoch resets ``consumed``;
        setting the epoch it already has (as a training loop does right after a resume) keeps it."""
        if epoch != self.epoch:
            self.consumed = 0
            self._pass_complete = False
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Any]:
        order = self.order()
        start = 0 if self._pass_complete else self.consumed
        self._pass_complete = False
        for position in range(start, len(order)):
            # Count before yielding, so state_dict() taken after receiving k items says k.
            self.consumed = position + 1
            yield order[position]
        # A state loaded at consumed == len yields nothing (the epoch is over), then the next pass is whole.
        self._pass_complete = True

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "num_examples": self.num_examples,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``epoch`` and ``consumed``; the other keys, when present, must match this sampler, since
        the saved position means nothing on another seed, world size or dataset."""
        missing = {"epoch", "consumed"} - set(state)
        if missing:
            raise KeyError(f"sampler state is missing {sorted(missing)}; got keys {sorted(state)}")
        for key in ("seed", "num_replicas", "num_examples"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state was saved with {key}={state[key]} but this sampler has "
                    f"{key}={getattr(self, key)}; resume with the same {key} or start a fresh epoch"
                )
        consumed = int(state["consumed"])
        if not 0 <= consumed <= len(self):
            raise ValueError(f"sampler state has consumed={consumed}, outside [0, len={len(self)}]")
        self.epoch = int(state["epoch"])
        self.consumed = consumed
        self._pass_complete = False


def randperm(n: int, generator: torch.Generator) -> np.ndarray:
    """A random permutation of ``range(n)`` drawn from ``generator``, as an int64 numpy array."""
    return torch.randperm(n, generator=generator).numpy()
