"""Crash-safe checkpoints: what a checkpoint folder holds, writing it atomically, verifying, loading, rotating.

A folder ``checkpoint-<step>`` is complete exactly when its ``manifest.json`` lists every file with the right size
(and sha256); a process killed at any moment therefore leaves either the old checkpoint, the new one, or an
ignorable ``.checkpoint-<step>.tmp-<pid>`` folder that the next save removes (the protocol is
``s2s.atomic_folder``; this module decides what goes inside).

Nothing here executes code from a checkpoint: weights are safetensors, the other state goes through
``torch.load(weights_only=True)`` and configs are JSON.

The names of the checkpoint files and the weight helpers live in ``s2s.checkpoint_files``,
``s2s.model_weights`` and ``s2s.rng_state``; they are importable from here too, where callers have always
found them.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from s2s.atomic_folder import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    AtomicFolder,
    file_sha256,
    leftover_folders,
    remove_folder,
    write_manifest,
)
from s2s.checkpoint_files import (
    CHECKPOINT_PREFIX,
    OPTIMIZER_NAME,
    RNG_STATE_NAME,
    RNG_STATE_RANK_NAME,
    SAMPLER_NAME,
    SCALER_NAME,
    SCHEDULER_NAME,
    TRAINER_STATE_NAME,
    TRAINING_ARGS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    LoadedCheckpoint,
    checkpoint_path,
    checkpoint_step,
    list_checkpoints,
    read_json,
    safe_join,
    torch_load,
)
from s2s.distributed import unwrap_model
from s2s.model_weights import (
    average_model_weights,
    load_model_weights,
    read_model_weights,
    save_model_weights,
    save_pretrained_safe,
)
from s2s.rng_state import rng_state, set_rng_state

# The names callers and scripts import from here; several live with their jobs in the modules above.
__all__ = [
    "CHECKPOINT_PREFIX", "HASH_LIMIT_BYTES", "MANIFEST_FORMAT", "MANIFEST_NAME", "MANIFEST_VERSION",
    "OPTIMIZER_NAME", "RNG_STATE_NAME", "RNG_STATE_RANK_NAME", "SAMPLER_NAME", "SCALER_NAME", "SCHEDULER_NAME",
    "TRAINER_STATE_NAME", "TRAINING_ARGS_NAME", "WEIGHTS_INDEX_NAME", "WEIGHTS_NAME", "CheckpointContents",
    "CheckpointError", "LoadedCheckpoint", "average_model_weights", "checkpoint_path", "checkpoint_step",
    "find_latest_checkpoint", "list_checkpoints", "load_checkpoint", "load_model_weights",
    "load_optimizer_state", "read_model_weights", "restore_checkpoint_state", "read_optimizer_state", "rng_state", "rng_state_file",
    "rotate_checkpoints", "safe_join", "save_checkpoint", "save_model_weights", "unwrap_model",
    "verify_checkpoint", "write_checkpoint", "write_contents",
]  # fmt: skip

_write_manifest = (
    write_manifest  # the old private name: tests re-seal the folders they tamper with through it
)

logger = logging.getLogger(__name__)

HASH_LIMIT_BYTES = 64 * 2**20
"""verify_checkpoint hashes files up to this size by default; larger ones get a size check (and a safetensors
header check), so finding the latest checkpoint of a large model does not re-read gigabytes."""

_DISK_HINTS = {
    errno.ENOSPC: "the disk is full: free space, lower save_total_limit, or point output_dir elsewhere",
    errno.EDQUOT: "the disk quota is exceeded: free space or point output_dir elsewhere",
    errno.EACCES: "permission denied: make output_dir writable or choose another output_dir",
    errno.EPERM: "operation not permitted: make output_dir writable or choose another output_dir",
    errno.EROFS: "the file system is read-only: choose another output_dir",
}


# --------------------------------------------------------------------------------------------------- contents
@dataclass
class CheckpointContents:
    """Everything one checkpoint holds; ``write_contents`` writes it.

    ``model`` supplies the weights, its config and generation config. Under FSDP ``model_state_dict`` and
    ``optimizer_state_dict`` are the full states gathered from the shards and replace the modules' own.
    ``rng_states`` (one per process, from ``distributed.gather_rng_states``) are written as
    ``rng_state_<rank>.pt``; without them this process's RNGs go to ``rng_state.pt``. Whatever else is None
    is left out."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    scaler: Any = None
    tokenizer: Any = None
    trainer_state: dict | None = None
    sampler_state: dict | None = None
    training_args: dict | None = None
    model_state_dict: dict[str, torch.Tensor] | None = None
    optimizer_state_dict: dict | None = None
    rng_states: list[dict] | None = None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if isinstance(obj, np.generic) or (isinstance(obj, torch.Tensor) and obj.numel() == 1):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} value {obj!r} is not JSON serialisable")


def _write_json(path: Path, obj: Any) -> None:
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    except TypeError as err:
        raise TypeError(
            f"cannot write {path.name}: {err}; convert it to str/int/float/list/dict first"
        ) from err
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def _write_torch(path: Path, obj: Any) -> None:
    # Through a Python file object so that a full disk surfaces as OSError(ENOSPC), not a generic RuntimeError.
    with open(path, "wb") as f:
        torch.save(obj, f)


def write_contents(folder: AtomicFolder, contents: CheckpointContents) -> None:
    """Write every part of ``contents`` into ``folder.path``, naming each in ``folder`` as it goes."""
    _write_model(folder, contents)
    if contents.tokenizer is not None:
        _write_tokenizer(folder, contents.tokenizer)
    _write_training_state(folder, contents)
    for name, obj in (
        (SAMPLER_NAME, contents.sampler_state),
        (TRAINER_STATE_NAME, contents.trainer_state),
        (TRAINING_ARGS_NAME, contents.training_args),
    ):
        if obj is not None:
            folder.writing(name)
            _write_json(folder.path / name, obj)


def _write_model(folder: AtomicFolder, contents: CheckpointContents) -> None:
    folder.writing(WEIGHTS_NAME)
    save_model_weights(contents.model, folder.path, state_dict=contents.model_state_dict)
    generation_config = getattr(unwrap_model(contents.model), "generation_config", None)
    if (
        hasattr(generation_config, "save_pretrained")
        and not (folder.path / "generation_config.json").exists()
    ):
        folder.writing("generation_config.json")
        generation_config.save_pretrained(folder.path)


def _write_tokenizer(folder: AtomicFolder, tokenizer: Any) -> None:
    folder.writing("tokenizer files")
    before = {p: p.stat().st_size for p in folder.path.iterdir()}
    save_pretrained_safe(tokenizer, folder.path)
    clobbered = [p.name for p, size in before.items() if p.stat().st_size != size]
    if clobbered:
        raise CheckpointError(f"tokenizer.save_pretrained overwrote the model's files {clobbered}")


def _write_training_state(folder: AtomicFolder, contents: CheckpointContents) -> None:
    """Optimizer, scheduler, grad scaler and RNG states: what an exact resume needs besides the weights."""
    optimizer_state = contents.optimizer_state_dict
    if optimizer_state is None and contents.optimizer is not None:
        optimizer_state = contents.optimizer.state_dict()
    for name, state in (
        (OPTIMIZER_NAME, optimizer_state),
        (SCHEDULER_NAME, contents.scheduler.state_dict() if contents.scheduler is not None else None),
        (SCALER_NAME, contents.scaler.state_dict() if contents.scaler is not None else None),
    ):
        if state is not None:
            folder.writing(name)
            _write_torch(folder.path / name, state)
    rng_states = contents.rng_states
    if rng_states is None or len(rng_states) == 1:
        folder.writing(RNG_STATE_NAME)
        _write_torch(folder.path / RNG_STATE_NAME, rng_states[0] if rng_states else rng_state())
        return
    for rank, state in enumerate(rng_states):
        folder.writing(RNG_STATE_RANK_NAME.format(rank=rank))
        _write_torch(folder.path / RNG_STATE_RANK_NAME.format(rank=rank), state)


# --------------------------------------------------------------------------------------------------- saving
def _save_error(destination: Path, current: str, err: BaseException) -> CheckpointError:
    hint = _DISK_HINTS.get(
        getattr(err, "errno", None), "check that output_dir is writable and has free space"
    )
    return CheckpointError(
        f"could not save checkpoint {destination} (while writing {current}): {type(err).__name__}: {err}. "
        f"Fix: {hint}. Earlier checkpoints are untouched and the partial save was removed."
    )


def write_checkpoint(checkpoint_dir: str | Path, contents: CheckpointContents) -> Path:
    """Write ``contents`` to ``checkpoint_dir`` atomically (``s2s.atomic_folder``) and return its path.

    On failure (disk full, permission denied) raises CheckpointError naming the file and the fix; the partial
    save is removed and existing checkpoints stay as they were (a re-saved step included)."""
    destination = Path(checkpoint_dir)
    folder = AtomicFolder(destination)
    try:
        with folder:
            write_contents(folder, contents)
    except (OSError, SafetensorError) as err:
        raise _save_error(destination, folder.current, err) from err
    return destination


def save_checkpoint(checkpoint_dir: str | Path, *, model: torch.nn.Module, **parts: Any) -> Path:
    """``write_checkpoint`` with the parts as keyword arguments: ``optimizer``, ``scheduler``, ``scaler``,
    ``tokenizer``, ``trainer_state``, ``sampler_state``, ``training_args``, ``model_state_dict``,
    ``optimizer_state_dict``, ``rng_states`` (see ``CheckpointContents``)."""
    return write_checkpoint(checkpoint_dir, CheckpointContents(model=model, **parts))


# --------------------------------------------------------------------------------------------------- reading
def _read_manifest(checkpoint_dir: Path) -> dict:
    path = checkpoint_dir / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{checkpoint_dir} is incomplete: no {MANIFEST_NAME} (the save was interrupted before it finished, "
            "or the folder was not written by s2s). Resume from an earlier checkpoint or delete this folder."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is corrupt ({err}); resume from an earlier checkpoint") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{path} has no 'files' table; it was not written by s2s or is corrupt")
    return manifest


def verify_checkpoint(checkpoint_dir: str | Path, *, hash_limit_bytes: int | None = HASH_LIMIT_BYTES) -> None:
    """Raise CheckpointError naming the folder, the file and what is wrong unless the checkpoint is complete:
    manifest present, every listed file present with its size, sha256 matching for files up to
    ``hash_limit_bytes`` (None: all files), and every safetensors header readable."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise CheckpointError(f"checkpoint {checkpoint_dir} does not exist or is not a folder")
    manifest = _read_manifest(checkpoint_dir)
    for name, entry in manifest["files"].items():
        try:
            path = safe_join(checkpoint_dir, name)
        except ValueError as err:
            raise CheckpointError(
                f"{checkpoint_dir / MANIFEST_NAME} lists an unsafe file name: {err}"
            ) from err
        where = f"{checkpoint_dir}: {name}"
        if not path.is_file():
            raise CheckpointError(
                f"{where} is listed in {MANIFEST_NAME} but missing; the checkpoint is incomplete"
            )
        size = path.stat().st_size
        if size != entry.get("size"):
            raise CheckpointError(
                f"{where} has {size} bytes, {MANIFEST_NAME} says {entry.get('size')}: the file is truncated or "
                "was modified; resume from an earlier checkpoint"
            )
        if (hash_limit_bytes is None or size <= hash_limit_bytes) and file_sha256(path) != entry.get(
            "sha256"
        ):
            raise CheckpointError(
                f"{where} does not match its sha256 in {MANIFEST_NAME}: the file is corrupt; "
                "resume from an earlier checkpoint"
            )
        if name.endswith(".safetensors"):
            _check_safetensors_header(path)


def _check_safetensors_header(path: Path) -> None:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            handle.keys()
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({err}): it is corrupt or truncated; "
            "resume from an earlier checkpoint"
        ) from err


def find_latest_checkpoint(
    output_dir: str | Path, *, exclude: Callable[[Path], str | None] | None = None
) -> Path | None:
    """The newest *complete* checkpoint in output_dir, or None; logs each newer one skipped and why.
    ``exclude`` gives the reason to pass over a checkpoint that is complete but not wanted (None: keep it)."""
    for leftover in leftover_folders(Path(output_dir)):
        fate = "puts it back" if leftover.kind == "old" else "removes it"
        logger.warning("ignoring %s: left by an interrupted save (the next save %s)", leftover.path, fate)
    for candidate in reversed(list_checkpoints(output_dir)):
        reason = exclude(candidate) if exclude is not None else None
        if reason is not None:
            logger.warning("skipping %s: %s", candidate, reason)
            continue
        try:
            verify_checkpoint(candidate)
        except CheckpointError as err:
            logger.warning("skipping %s: %s", candidate, err)
            continue
        return candidate
    return None


def read_optimizer_state(directory: str | Path) -> dict:
    """``optimizer.pt`` of a checkpoint, loaded with ``weights_only=True``."""
    path = Path(directory) / OPTIMIZER_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{directory} has no {OPTIMIZER_NAME}, so the optimizer state cannot be restored (saved with "
            "save_only_model?); resume without it or from a full checkpoint"
        )
    return torch_load(path)


def load_optimizer_state(optimizer: torch.optim.Optimizer, directory: str | Path) -> None:
    """Load ``optimizer.pt`` of a checkpoint into ``optimizer``; errors say why it does not fit."""
    _load_state(optimizer, Path(directory), OPTIMIZER_NAME, "optimizer")


def rng_state_file(checkpoint_dir: str | Path, rank: int) -> Path | None:
    """The RNG state this process restores: ``rng_state_<rank>.pt``, else ``rng_state.pt`` (a checkpoint of a
    single process, or of fewer processes than this run), else None."""
    checkpoint_dir = Path(checkpoint_dir)
    for path in (checkpoint_dir / RNG_STATE_RANK_NAME.format(rank=rank), checkpoint_dir / RNG_STATE_NAME):
        if path.is_file():
            return path
    return None


def _load_state(target: Any, directory: Path, name: str, what: str) -> None:
    path = directory / name
    if not path.is_file():
        raise CheckpointError(
            f"{directory} has no {name}, so the {what} state cannot be restored (saved with save_only_model?); "
            f"resume without it or from a full checkpoint"
        )
    state = torch_load(path)
    try:
        target.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(
            f"{path} does not fit this {what} ({type(err).__name__}: {err}); checkpoint from another model "
            f"or another {what} configuration?"
        ) from err


def load_checkpoint(
    checkpoint_dir: str | Path,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    restore_rng: bool = True,
    rank: int = 0,
) -> LoadedCheckpoint:
    """Verify the checkpoint, then restore whatever is passed in (weights, optimizer, scheduler, scaler) and,
    with ``restore_rng``, the python/numpy/torch RNGs of process ``rank`` (see ``rng_state_file``). Returns
    the JSON states saved with it."""
    checkpoint_dir = Path(checkpoint_dir)
    verify_checkpoint(checkpoint_dir)
    if model is not None:
        load_model_weights(model, checkpoint_dir)
    if optimizer is not None:
        load_optimizer_state(optimizer, checkpoint_dir)
    return restore_checkpoint_state(
        checkpoint_dir, scheduler=scheduler, scaler=scaler, restore_rng=restore_rng, rank=rank
    )


def restore_checkpoint_state(
    checkpoint_dir: str | Path,
    *,
    scheduler: Any = None,
    scaler: Any = None,
    restore_rng: bool = True,
    rank: int = 0,
) -> LoadedCheckpoint:
    """What a verified checkpoint holds besides the weights and the optimizer state (which a distribution
    strategy may load its own way): the scheduler and scaler passed in, this process's RNGs with
    ``restore_rng``, and the JSON states."""
    checkpoint_dir = Path(checkpoint_dir)
    for obj, name, what in ((scheduler, SCHEDULER_NAME, "scheduler"), (scaler, SCALER_NAME, "grad scaler")):
        if obj is not None:
            _load_state(obj, checkpoint_dir, name, what)
    rng_file = rng_state_file(checkpoint_dir, rank) if restore_rng else None
    if rng_file is not None:
        if rank > 0 and rng_file.name == RNG_STATE_NAME:
            logger.warning(
                "%s has no %s: process %d restores the RNG state of process 0 (the checkpoint was saved by fewer "
                "processes); dropout will not repeat the uninterrupted run",
                checkpoint_dir,
                RNG_STATE_RANK_NAME.format(rank=rank),
                rank,
            )
        set_rng_state(torch_load(rng_file), source=rng_file)
    optional = {}
    for name in (TRAINER_STATE_NAME, SAMPLER_NAME, TRAINING_ARGS_NAME):
        path = checkpoint_dir / name
        optional[name] = read_json(path) if path.is_file() else None
    return LoadedCheckpoint(
        path=checkpoint_dir,
        trainer_state=optional[TRAINER_STATE_NAME] or {},
        sampler_state=optional[SAMPLER_NAME],
        training_args=optional[TRAINING_ARGS_NAME],
    )


# --------------------------------------------------------------------------------------------------- rotation


def rotate_checkpoints(
    output_dir: str | Path, *, save_total_limit: int | None, keep: str | Path | None = None
) -> list[Path]:
    """Delete the oldest complete checkpoints so that at most ``save_total_limit`` remain, never ``keep`` (the
    best checkpoint) nor the newest one; with limit 1 and a best that is not the newest, both stay.

    Folders without a valid manifest are neither counted nor deleted (they are logged). Each deletion renames
    the folder to a hidden name first, so a crash mid-delete never leaves a half-deleted ``checkpoint-<step>``.
    Returns the deleted paths, oldest first."""
    if save_total_limit is None:
        return []
    if save_total_limit < 1:
        raise ValueError(f"save_total_limit must be None (keep all) or >= 1, got {save_total_limit}")
    complete = []
    for path in list_checkpoints(output_dir):
        try:
            verify_checkpoint(path, hash_limit_bytes=0)
            complete.append(path)
        except CheckpointError as err:
            logger.warning("rotation leaves %s alone: %s", path, err)
    keep_path = Path(keep).resolve() if keep is not None else None
    kept = {p for p in complete if p.resolve() == keep_path}
    for path in reversed(complete):
        if len(kept) >= save_total_limit and complete[-1] in kept:
            break
        kept.add(path)
    deleted = []
    for path in complete:
        if path in kept:
            continue
        remove_folder(path)
        logger.info("deleted %s (save_total_limit=%d)", path, save_total_limit)
        deleted.append(path)
    return deleted
