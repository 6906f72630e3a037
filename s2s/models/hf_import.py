"""`from_transformers`: a Hugging Face seq2seq model (a saved folder, or a model object) as our
`TransformerForConditionalGeneration`, computing the same function, with its generation settings.

A folder is read without `transformers` (see `hf_folder`); a model object is only asked for its config dict,
state dict and generation config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from s2s.models.configuration import TransformerConfig
from s2s.models.hf_families import UNSUPPORTED_VALUES, Family, UnsupportedModelError, family_for
from s2s.models.hf_folder import (
    CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    read_config,
    read_generation_config,
    read_weights,
    tokenizer_vocabulary_size,
)
from s2s.models.hf_generation import generation_config_from_hf
from s2s.models.modeling import TransformerForConditionalGeneration


@dataclass
class _Source:
    """What an import reads from a folder or a model object, and how errors name where it came from."""

    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    generation: dict[str, Any] | None
    config_origin: str
    generation_origin: str
    folder: Path | None


def from_transformers(
    folder_or_hf_model: str | Path | Any, *, dtype: torch.dtype | None = None, allow_pickle: bool = False
) -> TransformerForConditionalGeneration:
    """Our model with the weights and generation settings of `folder_or_hf_model`: the folder of a Hugging
    Face BART, mBART, Marian, M2M100/NLLB or T5 model, or such a model object. Returned in eval mode.

    `dtype`: cast the parameters (default: fp32, whatever the file holds). `allow_pickle`: read a
    pytorch_model.bin when the folder has no safetensors weights (a pickle can run code; see `read_weights`)."""
    source = _read(folder_or_hf_model, allow_pickle=allow_pickle)
    origin = source.config_origin
    family = family_for(source.config.get("model_type"), origin)
    for key, accepted in UNSUPPORTED_VALUES.items():
        if source.config.get(key, accepted) != accepted:
            raise UnsupportedModelError(
                f"{origin}: {key}={source.config[key]!r} is not supported (only {accepted!r})"
            )
    try:
        config = TransformerConfig(**family.config_from_hf(source.config, origin))
    except (TypeError, ValueError) as err:
        if isinstance(err, UnsupportedModelError):
            raise
        raise ValueError(f"{origin}: {err}") from err
    if source.folder is not None:
        _check_tokenizer(source.folder, config)
    model = TransformerForConditionalGeneration(config)
    model.load_state_dict(_our_state(family, config, source.state, origin), strict=True)
    _check_derived(family, config, source.state, model, origin)
    model.generation_config = generation_config_from_hf(
        source.config, source.generation, config, source.generation_origin
    )
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def _read(source: Any, *, allow_pickle: bool) -> _Source:
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is not a directory; pass the folder of a saved Hugging Face model"
            )
        generation = read_generation_config(folder)
        return _Source(
            config=read_config(folder),
            state=read_weights(folder, allow_pickle=allow_pickle),
            generation=generation,
            config_origin=str(folder / CONFIG_FILE),
            generation_origin=str(
                folder / (GENERATION_CONFIG_FILE if generation is not None else CONFIG_FILE)
            ),
            folder=folder,
        )
    if hasattr(source, "config") and hasattr(source, "state_dict"):
        name = type(source).__name__
        generation = getattr(source, "generation_config", None)
        return _Source(
            config=source.config.to_dict(),
            state=source.state_dict(),
            generation=generation.to_diff_dict() if generation is not None else None,
            config_origin=f"{name}.config",
            generation_origin=f"{name}.generation_config",
            folder=None,
        )
    raise TypeError(
        f"from_transformers takes a folder path or a Hugging Face model, got {type(source).__name__}"
    )


def _our_state(
    family: Family, config: TransformerConfig, state: dict[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """Our state dict from the HF one: tensors renamed, q/k/v (and gated halves) concatenated."""
    copies = family.aliases(config)
    canonical_of = {alias: name for name, aliases in copies.items() for alias in aliases}

    def fetch(name: str) -> torch.Tensor | None:
        for candidate in [name, *copies.get(name, []), canonical_of.get(name, "")]:
            if candidate in state:
                return state[candidate]
        return None

    ours: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    used: set[str] = set()
    for name, theirs in family.weight_names(config):
        parts = [fetch(hf_name) for hf_name in theirs]
        if name == "final_logits_bias" and parts[0] is None:
            parts = [
                torch.zeros(1, config.vocab_size)
            ]  # some Marian files leave it out; transformers uses zeros
        if any(part is None for part in parts):
            missing += [hf_name for hf_name, part in zip(theirs, parts) if part is None]
            continue
        used.update(theirs)
        ours[name] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    if missing:
        raise ValueError(
            f"the weights of {origin} lack tensors {missing[:6]} that a {family.name} model with this config has; "
            "the config and the weights come from different models"
        )
    known = used | set(canonical_of) | set(copies) | set(family.derived(config)) | family.unused(config)
    unexpected = sorted(set(state) - known)
    if unexpected:
        raise UnsupportedModelError(
            f"the weights of {origin} hold tensors {unexpected[:6]} that a {family.name} model with this config "
            "does not have; they would be dropped, so the model is refused"
        )
    return ours


def _check_derived(
    family: Family,
    config: TransformerConfig,
    state: dict[str, torch.Tensor],
    model: TransformerForConditionalGeneration,
    origin: str,
) -> None:
    """Tensors the HF file stores but we compute (Marian's sinusoidal tables) must equal ours."""
    buffers = dict(model.named_buffers())
    for hf_name, ours in family.derived(config).items():
        if hf_name not in state:
            continue
        theirs, mine = state[hf_name].float(), buffers[ours]
        if theirs.shape != mine.shape or not torch.allclose(theirs, mine, atol=1e-5):
            raise UnsupportedModelError(
                f"the weights of {origin}: {hf_name} differs from the fixed {config.position_embedding} table "
                "that the model computes; such positions cannot be reproduced"
            )


def _check_tokenizer(folder: Path, config: TransformerConfig) -> None:
    found = tokenizer_vocabulary_size(folder)
    if found is not None and found[0] > config.vocab_size:
        raise ValueError(
            f"{found[1]}: the tokenizer produces ids up to {found[0] - 1}, but the model's embeddings have "
            f"{config.vocab_size} rows (vocab_size in {folder / CONFIG_FILE}); the tokenizer belongs to another "
            "model, or the embeddings must be resized"
        )
