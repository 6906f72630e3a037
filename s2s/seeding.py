"""Reproducible runs: one seed for every random number generator training draws from."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


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
