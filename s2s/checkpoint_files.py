"""The names in a checkpoint folder, where checkpoints are found, and reading their files safely.

Nothing here executes code from a checkpoint: non-weight state goes through ``torch.load(weights_only=True)``
(tensors and plain containers only), configs and states are JSON, and names read from a file (a manifest, an
index) are only joined to a folder through ``safe_join``.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_PREFIX = "checkpoint"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
RNG_STATE_NAME = "rng_state.pt"
RNG_STATE_RANK_NAME = "rng_state_{rank}.pt"  # one per process in a distributed run
SAMPLER_NAME = "sampler.json"
TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.json"

_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the folder, the file and the fix."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    trainer_state: dict
    sampler_state: dict | None
    training_args: dict | None


def safe_join(output_dir: str | Path, relative: str | Path) -> Path:
    """``output_dir / relative``, refusing names (from configs, manifests) that would write outside output_dir:
    absolute paths, ``..`` escapes and symlinks pointing out."""
    rel = Path(relative)
    if str(relative) == "" or rel.is_absolute() or rel.drive:
        raise ValueError(
            f"path {str(relative)!r} must be relative to {output_dir} (got an absolute or empty path)"
        )
    if ".." in rel.parts:
        raise ValueError(f"path {str(relative)!r} may not contain '..': it must stay inside {output_dir}")
    base = Path(output_dir).resolve()
    joined = (base / rel).resolve()
    if joined != base and base not in joined.parents:
        raise ValueError(f"path {str(relative)!r} resolves to {joined}, outside {output_dir} (a symlink?)")
    return Path(output_dir) / rel


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a ``checkpoint-<step>`` folder name, else None."""
    match = _CHECKPOINT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}-{step}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-<step>`` folders in output_dir sorted by step, complete or not."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def torch_load(path: Path) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, never arbitrary pickled objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} was refused: it contains pickled Python objects other than tensors and plain containers "
            f"({first_line}). Loading it could execute code, so s2s never does; re-create the checkpoint, or "
            "if you wrote this file yourself, store only tensors, numbers, strings, lists and dicts."
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({err}); resume from an earlier checkpoint"
        ) from err


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from err
