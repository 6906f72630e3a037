"""The random number generators a training run draws from, saved with each checkpoint and restored on
resume, so that dropout after a resume repeats the uninterrupted run exactly.

The states are tensors and plain containers, so ``torch.load(weights_only=True)`` can read them back.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from s2s.checkpoint_files import CheckpointError

logger = logging.getLogger(__name__)


def rng_state() -> dict:
    """This process's RNG states (python, numpy, torch CPU and CUDA), as saved in ``rng_state*.pt``."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_key, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    state = {
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
        "numpy": {
            "bit_generator": np_name,
            "key": torch.from_numpy(np.asarray(np_key, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, *, source: Path) -> None:
    try:
        py = state["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
        npy = state["numpy"]
        key = npy["key"].numpy().astype(np.uint32)
        np.random.set_state((npy["bit_generator"], key, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
        torch.set_rng_state(state["cpu"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{source}: the RNG state is malformed ({type(err).__name__}: {err}); pass restore_rng=False to "
            "resume without it (the run will not be bit-identical)"
        ) from err
    cuda = state.get("cuda")
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning(
                "%s holds CUDA RNG states for %d devices but %d are visible; CUDA RNGs not restored",
                source,
                len(cuda),
                torch.cuda.device_count() if torch.cuda.is_available() else 0,
            )
