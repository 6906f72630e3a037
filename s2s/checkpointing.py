"""Crash-safe checkpoints: write to a temporary sibling folder, fsync, write ``manifest.json`` last, rename.

A folder ``checkpoint-<step>`` is complete exactly when its ``manifest.json`` lists every file with the right size
(and sha256); a process killed at any moment therefore leaves either the old checkpoint, the new one, or an
ignorable ``.checkpoint-<step>.tmp-<pid>`` folder that the next save removes.

Nothing here executes code from a checkpoint: weights are safetensors, the other state goes through
``torch.load(weights_only=True)`` and configs are JSON.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import json
import logging
import os
import pickle
import random
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file as _safetensors_save_file
from safetensors.torch import save_model as _safetensors_save_model

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint"
MANIFEST_NAME = "manifest.json"
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
MANIFEST_FORMAT = "s2s-checkpoint"
MANIFEST_VERSION = 1

HASH_LIMIT_BYTES = 64 * 2**20
"""verify_checkpoint hashes files up to this size by default; larger ones get a size check (and a safetensors
header check), so finding the latest checkpoint of a large model does not re-read gigabytes."""

_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")
_TEMPORARY_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old|deleting)-(?P<pid>\d+)$")
_DISK_HINTS = {
    errno.ENOSPC: "the disk is full: free space, lower save_total_limit, or point output_dir elsewhere",
    errno.EDQUOT: "the disk quota is exceeded: free space or point output_dir elsewhere",
    errno.EACCES: "permission denied: make output_dir writable or choose another output_dir",
    errno.EPERM: "operation not permitted: make output_dir writable or choose another output_dir",
    errno.EROFS: "the file system is read-only: choose another output_dir",
}


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the folder, the file and the fix."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    trainer_state: dict
    sampler_state: dict | None
    training_args: dict | None


# --------------------------------------------------------------------------------------------------- paths


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


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-<step>`` folders in output_dir sorted by step, complete or not."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside torch.compile / DataParallel / DDP / FSDP wrappers."""
    wrappers: tuple[type, ...] = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrappers += (FullyShardedDataParallel,)
    except ImportError:  # torch built without distributed
        pass
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        elif isinstance(model, wrappers):
            model = model.module
        else:
            return model


# --------------------------------------------------------------------------------------------------- writing


def _fsync_file(path: Path) -> None:
    """Flush one finished file to disk (a rename is only crash-safe once the data it points to is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot fsync a directory; the data files are already durable
        if err.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_leftovers(parent: Path) -> None:
    """Remove temporary folders of saves that died (their process is gone); put back a checkpoint that was
    moved aside for a re-save that never finished."""
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        match = _TEMPORARY_RE.match(entry.name)
        if not match or not entry.is_dir():
            continue
        pid = int(match.group("pid"))
        if pid != os.getpid() and _pid_alive(pid):
            continue  # another live process is saving (or the pid was reused): leave it alone
        original = parent / match.group("name")
        if match.group("kind") == "old" and not original.exists():
            logger.warning("restoring %s, moved aside by an interrupted re-save, to %s", entry, original)
            os.replace(entry, original)
            continue
        logger.info("removing %s, left behind by an interrupted save", entry)
        shutil.rmtree(entry, ignore_errors=True)


def rng_state() -> dict:
    """This process's RNG states (python, numpy, torch CPU and CUDA), as saved in ``rng_state*.pt``."""
    return _rng_state()


def _rng_state() -> dict:
    """Every RNG the training touches, as tensors and plain containers so weights_only=True can load it."""
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


def _set_rng_state(state: dict, *, source: Path) -> None:
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


def _call_save_pretrained(obj: Any, directory: Path) -> None:
    params = inspect.signature(obj.save_pretrained).parameters
    if "safe_serialization" in params:  # Hugging Face models: never the pickle-based pytorch_model.bin
        obj.save_pretrained(directory, safe_serialization=True)
    else:
        obj.save_pretrained(directory)


def save_model_weights(
    model: torch.nn.Module, directory: str | Path, *, state_dict: dict[str, torch.Tensor] | None = None
) -> None:
    """Weights as safetensors in ``directory``: ``model.save_pretrained`` when the model has it (config.json and
    model.safetensors), else ``model.safetensors`` of the state dict with shared (tied) tensors stored once.

    ``state_dict`` replaces the model's own (FSDP: the full weights gathered from the shards); the model then
    only supplies its config."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = unwrap_model(model)
    if state_dict is not None:
        _save_state_dict(model, state_dict, directory)
    elif hasattr(model, "save_pretrained"):
        _call_save_pretrained(model, directory)
        if not (directory / WEIGHTS_NAME).is_file() and not (directory / WEIGHTS_INDEX_NAME).is_file():
            raise CheckpointError(
                f"{type(model).__name__}.save_pretrained({directory}) wrote no {WEIGHTS_NAME}; "
                "only safetensors weights are supported (pickle-based weights can execute code when loaded)"
            )
    else:
        _safetensors_save_model(model, str(directory / WEIGHTS_NAME))


def _save_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], directory: Path) -> None:
    save = getattr(model, "save_pretrained", None)
    if save is not None and "state_dict" in inspect.signature(save).parameters:  # Hugging Face models
        save(directory, state_dict=state_dict, safe_serialization=True)
        return
    for part in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        if hasattr(
            part, "save_pretrained"
        ):  # config.json, generation_config.json: what from_pretrained reads
            part.save_pretrained(directory)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    for name, tensor in state_dict.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue  # a tied weight is stored once, like save_model does
        seen.add(key)
        tensors[name] = tensor.detach().cpu().contiguous()
    _safetensors_save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})


def _write_manifest(directory: Path) -> dict:
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name == MANIFEST_NAME:
            continue
        files[name] = {"size": path.stat().st_size, "sha256": _file_sha256(path)}
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": files}
    _write_json(directory / MANIFEST_NAME, manifest)
    _fsync_file(directory / MANIFEST_NAME)
    return manifest


def _save_error(destination: Path, current: str, err: BaseException) -> CheckpointError:
    hint = _DISK_HINTS.get(
        getattr(err, "errno", None), "check that output_dir is writable and has free space"
    )
    return CheckpointError(
        f"could not save checkpoint {destination} (while writing {current}): {type(err).__name__}: {err}. "
        f"Fix: {hint}. Earlier checkpoints are untouched and the partial save was removed."
    )


def save_checkpoint(
    checkpoint_dir: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    trainer_state: dict | None = None,
    sampler_state: dict | None = None,
    training_args: dict | None = None,
    tokenizer: Any = None,
    model_state_dict: dict[str, torch.Tensor] | None = None,
    optimizer_state_dict: dict | None = None,
    rng_states: list[dict] | None = None,
) -> Path:
    """Write a complete checkpoint to ``checkpoint_dir`` atomically and return its path.

    Everything goes into ``.<name>.tmp-<pid>`` next to the destination; each file is fsynced, ``manifest.json``
    (files, sizes, sha256) is written last, and the folder is renamed into place. Re-saving an existing step moves
    the old folder aside first and deletes it only once the new one is in place. On failure (disk full,
    permission denied) raises CheckpointError, removes the temporary folder and leaves existing checkpoints as
    they were.

    FSDP passes ``model_state_dict``/``optimizer_state_dict`` (the full states gathered from the shards) in place
    of the modules' own. ``rng_states`` (one per process, from ``distributed.gather_rng_states``) are written as
    ``rng_state_<rank>.pt``; without them this process's RNGs go to ``rng_state.pt``.
    """
    destination = Path(checkpoint_dir)
    parent = destination.parent
    temporary = parent / f".{destination.name}.tmp-{os.getpid()}"
    current = "the output folder"
    aside = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(parent)
        if temporary.exists():
            shutil.rmtree(temporary)
        current = str(temporary)
        temporary.mkdir()
        current = WEIGHTS_NAME
        save_model_weights(model, temporary, state_dict=model_state_dict)
        generation_config = getattr(unwrap_model(model), "generation_config", None)
        if (
            hasattr(generation_config, "save_pretrained")
            and not (temporary / "generation_config.json").exists()
        ):
            current = "generation_config.json"
            generation_config.save_pretrained(temporary)
        if tokenizer is not None:
            current = "tokenizer files"
            before = {p: p.stat().st_size for p in temporary.iterdir()}
            _call_save_pretrained(tokenizer, temporary)
            clobbered = [p.name for p, size in before.items() if p.stat().st_size != size]
            if clobbered:
                raise CheckpointError(f"tokenizer.save_pretrained overwrote the model's files {clobbered}")
        if optimizer_state_dict is not None:
            current = OPTIMIZER_NAME
            _write_torch(temporary / OPTIMIZER_NAME, optimizer_state_dict)
        elif optimizer is not None:
            current = OPTIMIZER_NAME
            _write_torch(temporary / OPTIMIZER_NAME, optimizer.state_dict())
        for name, obj in ((SCHEDULER_NAME, scheduler), (SCALER_NAME, scaler)):
            if obj is not None:
                current = name
                _write_torch(temporary / name, obj.state_dict())
        if rng_states is None or len(rng_states) == 1:
            current = RNG_STATE_NAME
            _write_torch(temporary / RNG_STATE_NAME, rng_states[0] if rng_states else _rng_state())
        else:
            for rank, state in enumerate(rng_states):
                current = RNG_STATE_RANK_NAME.format(rank=rank)
                _write_torch(temporary / current, state)
        for name, obj in (
            (SAMPLER_NAME, sampler_state),
            (TRAINER_STATE_NAME, trainer_state),
            (TRAINING_ARGS_NAME, training_args),
        ):
            if obj is not None:
                current = name
                _write_json(temporary / name, obj)
        for path in sorted(p for p in temporary.rglob("*") if p.is_file()):
            current = path.name
            _fsync_file(path)
        current = MANIFEST_NAME
        _write_manifest(temporary)
        _fsync_dir(temporary)
        current = f"the rename of {temporary.name} to {destination.name}"
        if destination.exists():
            aside = parent / f".{destination.name}.old-{os.getpid()}"
            os.replace(destination, aside)
        os.replace(temporary, destination)
        _fsync_dir(parent)
    except BaseException as err:
        shutil.rmtree(temporary, ignore_errors=True)
        if aside is not None and not destination.exists():
            os.replace(aside, destination)  # the re-save failed between the two renames: put the old one back
        if isinstance(err, OSError | SafetensorError):
            raise _save_error(destination, current, err) from err
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return destination


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
        if (hash_limit_bytes is None or size <= hash_limit_bytes) and _file_sha256(path) != entry.get(
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


def find_latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest *complete* checkpoint in output_dir, or None; logs each newer one skipped and why."""
    output_dir = Path(output_dir)
    if output_dir.is_dir():
        for entry in output_dir.iterdir():
            match = _TEMPORARY_RE.match(entry.name)
            if match and entry.is_dir():
                fate = "puts it back" if match.group("kind") == "old" else "removes it"
                logger.warning("ignoring %s: left by an interrupted save (the next save %s)", entry, fate)
    for candidate in reversed(list_checkpoints(output_dir)):
        try:
            verify_checkpoint(candidate)
        except CheckpointError as err:
            logger.warning("skipping %s: %s", candidate, err)
            continue
        return candidate
    return None


def _weight_files(directory: Path) -> list[Path]:
    index = directory / WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{index} is corrupt ({err}); it needs a 'weight_map' table") from err
        try:
            return [safe_join(directory, name) for name in sorted(set(weight_map.values()))]
        except ValueError as err:
            raise CheckpointError(f"{index} names an unsafe shard file: {err}") from err
    single = directory / WEIGHTS_NAME
    if single.is_file():
        return [single]
    pickled = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt*")]
    hint = (
        f" Found {pickled}: pickle-based weights are not loaded because they can execute code; convert them "
        "with safetensors.torch.save_model in a trusted environment."
        if any("model" in name for name in pickled)
        else ""
    )
    raise CheckpointError(f"{directory} has no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME}).{hint}")


def _read_safetensors(files: Iterable[Path]) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    tensors, origin = {}, {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                    tensors[key] = handle.get_tensor(key)
                    origin[key] = path
        except (SafetensorError, OSError) as err:
            raise CheckpointError(
                f"{path} is not a valid safetensors file ({err}): it is corrupt or truncated"
            ) from err
    return tensors, origin


def _alias_groups(state: dict[str, torch.Tensor]) -> dict[str, tuple]:
    """Key -> storage identity, so a tied weight stored once (e.g. lm_head tied to the embedding) is not
    reported missing."""
    groups = {}
    for key, tensor in state.items():
        if tensor.device.type == "meta" or tensor.numel() == 0:
            groups[key] = (key,)
        else:
            groups[key] = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
    return groups


def _config_differences(model: torch.nn.Module, directory: Path) -> str:
    """The hyper-parameters on which the saved config.json and the model disagree, as a hint."""
    config_file = directory / "config.json"
    to_dict = getattr(getattr(model, "config", None), "to_dict", None)
    if not config_file.is_file() or to_dict is None:
        return "Build the model from the config it was trained with."
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8"))
        current = to_dict()
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        return f"Build the model from {config_file}."
    differences = [
        f"{key}={saved[key]!r} (model: {current[key]!r})"
        for key in sorted(saved.keys() & current.keys())
        if not key.startswith("_") and key != "transformers_version" and saved[key] != current[key]
    ]
    if not differences:
        return f"Build the model from {config_file}."
    return f"{config_file} has {', '.join(differences[:6])}; build the model from it."


def read_model_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors weights in ``directory`` (single file or sharded with an index), on CPU."""
    return _read_safetensors(_weight_files(Path(directory)))[0]


def average_model_weights(checkpoint_dirs: Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the weights saved in ``checkpoint_dirs`` (checkpoint averaging: the last few
    checkpoints of a run usually score higher together than the last one alone).

    Floating-point tensors are summed in float64 and cast back to their dtype; other tensors (integer buffers)
    must be equal in every checkpoint. Raises CheckpointError naming the folder and tensor that do not match."""
    dirs = [Path(d) for d in checkpoint_dirs]
    if not dirs:
        raise ValueError("average_model_weights needs at least one checkpoint folder")
    first = read_model_weights(dirs[0])
    sums = {k: t.double() if t.is_floating_point() else t for k, t in first.items()}
    for directory in dirs[1:]:
        tensors = read_model_weights(directory)
        if tensors.keys() != first.keys():
            extra, missing = sorted(tensors.keys() - first.keys()), sorted(first.keys() - tensors.keys())
            raise CheckpointError(
                f"cannot average {directory} with {dirs[0]}: different tensors (only in {directory.name}: "
                f"{extra[:5]}; missing there: {missing[:5]}); average checkpoints of one run"
            )
        for key, tensor in tensors.items():
            if tensor.shape != first[key].shape or tensor.dtype != first[key].dtype:
                raise CheckpointError(
                    f"cannot average {directory} with {dirs[0]}: {key} is {tuple(tensor.shape)} {tensor.dtype} "
                    f"there and {tuple(first[key].shape)} {first[key].dtype} here; average checkpoints of one run"
                )
            if tensor.is_floating_point():
                sums[key] += tensor.double()
            elif not torch.equal(tensor, first[key]):
                raise CheckpointError(
                    f"cannot average {directory} with {dirs[0]}: non-float tensor {key} differs between them"
                )
    return {
        k: (total / len(dirs)).to(first[k].dtype) if first[k].is_floating_point() else total
        for k, total in sums.items()
    }


def read_optimizer_state(directory: str | Path) -> dict:
    """``optimizer.pt`` of a checkpoint, loaded with ``weights_only=True``."""
    path = Path(directory) / OPTIMIZER_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{directory} has no {OPTIMIZER_NAME}, so the optimizer state cannot be restored (saved with "
            "save_only_model?); resume without it or from a full checkpoint"
        )
    return _torch_load(path)


def rng_state_file(checkpoint_dir: str | Path, rank: int) -> Path | None:
    """The RNG state this process restores: ``rng_state_<rank>.pt``, else ``rng_state.pt`` (a checkpoint of a
    single process, or of fewer processes than this run), else None."""
    checkpoint_dir = Path(checkpoint_dir)
    for path in (checkpoint_dir / RNG_STATE_RANK_NAME.format(rank=rank), checkpoint_dir / RNG_STATE_NAME):
        if path.is_file():
            return path
    return None


def load_model_weights(model: torch.nn.Module, directory: str | Path) -> None:
    """Load safetensors weights from ``directory`` into model (unwrapped first).

    Raises CheckpointError for a missing or corrupt file, for missing/unexpected keys and for shape mismatches,
    naming the tensor and both shapes."""
    directory = Path(directory)
    model = unwrap_model(model)
    files = _weight_files(directory)
    tensors, origin = _read_safetensors(files)
    expected = model.state_dict()
    groups = _alias_groups(expected)
    loaded_groups = {groups[k] for k in tensors if k in groups}
    missing = [k for k in expected if k not in tensors and groups[k] not in loaded_groups]
    unexpected = [k for k in tensors if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)} (in {origin[k].name})"
        for k in tensors
        if k in expected and tensors[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if mismatched:
            problems.append(f"shape mismatch for {len(mismatched)} tensor(s): " + "; ".join(mismatched[:5]))
        if missing:
            problems.append(f"{len(missing)} missing key(s): {missing[:5]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s): {unexpected[:5]}")
        raise CheckpointError(
            f"weights in {directory} do not fit {type(model).__name__}: " + "; ".join(problems) + ". "
            "Checkpoint from another model? " + _config_differences(model, directory)
        )
    model.load_state_dict(tensors, strict=False)


def _torch_load(path: Path) -> Any:
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


def _load_state(target: Any, directory: Path, name: str, what: str) -> None:
    path = directory / name
    if not path.is_file():
        raise CheckpointError(
            f"{directory} has no {name}, so the {what} state cannot be restored (saved with save_only_model?); "
            f"resume without it or from a full checkpoint"
        )
    state = _torch_load(path)
    try:
        target.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(
            f"{path} does not fit this {what} ({type(err).__name__}: {err}); checkpoint from another model "
            f"or another {what} configuration?"
        ) from err


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from err


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
    for obj, name, what in (
        (optimizer, OPTIMIZER_NAME, "optimizer"),
        (scheduler, SCHEDULER_NAME, "scheduler"),
        (scaler, SCALER_NAME, "grad scaler"),
    ):
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
        _set_rng_state(_torch_load(rng_file), source=rng_file)
    optional = {}
    for name in (TRAINER_STATE_NAME, SAMPLER_NAME, TRAINING_ARGS_NAME):
        path = checkpoint_dir / name
        optional[name] = _read_json(path) if path.is_file() else None
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
        doomed = path.parent / f".{path.name}.deleting-{os.getpid()}"
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        logger.info("deleted %s (save_total_limit=%d)", path, save_total_limit)
        deleted.append(path)
    return deleted
