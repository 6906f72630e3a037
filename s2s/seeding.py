"""Reproducible runs: one seed for every random number generator training draws from."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False, *, full_determinism: bool | None = None) -> None:
    """Seed python, numpy and torch (all devices); with ``deterministic`` also ask torch for deterministic
    kernels (slower; raises on an op that has none).

    ``deterministic`` is Hugging Face's name (positional or keyword, as in its ``set_seed``);
    ``full_determinism`` is the same switch under the name of the training argument that sets it."""
    if full_determinism is not None:
        if deterministic and not full_determinism:
            raise ValueError(
                "set_seed got deterministic=True and full_determinism=False; they are one switch, give one"
            )
        deterministic = full_determinism
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
