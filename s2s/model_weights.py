"""Model weights as safetensors: save (tied tensors once), read, load with errors that name the tensor, and
average.

Only safetensors weights are read or written: pickle-based weights (``pytorch_model.bin``) can execute code
when loaded, so they are refused with a message that says how to convert them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file as _safetensors_save_file
from safetensors.torch import save_model as _safetensors_save_model

from s2s.checkpoint_files import WEIGHTS_INDEX_NAME, WEIGHTS_NAME, CheckpointError, safe_join
from s2s.distributed import unwrap_model


def save_pretrained_safe(obj: Any, directory: Path) -> None:
    """``obj.save_pretrained(directory)``, asking Hugging Face objects for safetensors."""
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
        save_pretrained_safe(model, directory)
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
