"""`to_transformers`: save our model as a Hugging Face folder (config.json, model.safetensors,
generation_config.json, and the tokenizer when given) of the family whose code computes the same function,
without needing `transformers`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from s2s.models.configuration import TransformerConfig
from s2s.models.hf_families import FAMILIES, Family, UnsupportedModelError
from s2s.models.hf_folder import CONFIG_FILE, GENERATION_CONFIG_FILE, write_json, write_weights
from s2s.models.hf_generation import generation_config_to_hf
from s2s.models.modeling import TransformerForConditionalGeneration


def to_transformers(
    model: TransformerForConditionalGeneration, folder: str | Path, *, tokenizer: Any = None
) -> Path:
    """Write `model` into `folder` as the supported Hugging Face family that computes the same function
    (transformers' `AutoModelForSeq2SeqLM.from_pretrained(folder)` loads it); `tokenizer` (anything with
    `save_pretrained`) is saved alongside. Raises `UnsupportedModelError` naming the options that no supported
    family reproduces. Returns the folder."""
    config = model.config
    family = family_for_config(config)
    if tokenizer is not None:
        _check_tokenizer_format(tokenizer)
        size = len(tokenizer)
        if size > config.vocab_size:
            raise ValueError(
                f"the tokenizer has {size} tokens but the model's embeddings only {config.vocab_size} rows; "
                "export it with the tokenizer it was trained with"
            )
    directory = Path(folder)
    directory.mkdir(parents=True, exist_ok=True)
    hf_config = {
        "model_type": family.model_type,
        "architectures": [family.architecture],
        "is_encoder_decoder": True,
        **family.config_to_hf(config),
    }
    if tokenizer is not None:  # tools that convert the folder (CTranslate2) read it from here
        hf_config["tokenizer_class"] = type(tokenizer).__name__
    generation = generation_config_to_hf(model.generation_config)
    write_weights(directory, hf_state_dict(model, family))
    write_json(directory / CONFIG_FILE, hf_config)
    write_json(directory / GENERATION_CONFIG_FILE, generation)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory


def _check_tokenizer_format(tokenizer: Any) -> None:
    """The toolkit's own tokenizers save a tokenizer_config.json that transformers' AutoTokenizer cannot read
    (and they add eos themselves, which a tokenizer.json alone would not): refused rather than written into a
    folder that then fails to load."""
    from s2s.tokenization.base import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        raise TypeError(
            f"to_transformers got the toolkit's own {type(tokenizer).__name__}, whose saved format transformers "
            "cannot load; pass a transformers tokenizer (e.g. the one of the folder the model was imported "
            "from, AutoTokenizer.from_pretrained(folder)) or copy its files into the folder yourself"
        )


def family_for_config(config: TransformerConfig) -> Family:
    """The family whose fixed options `config` has; otherwise an error listing what differs, per family."""
    mismatches = {name: family.mismatches(config) for name, family in FAMILIES.items()}
    for name, found in mismatches.items():
        if not found:
            return FAMILIES[name]
    closest = sorted(mismatches.items(), key=lambda item: len(item[1]))
    lines = [f"  {name}: {'; '.join(found)}" for name, found in closest]
    raise UnsupportedModelError(
        "no supported Hugging Face family computes this model's function; the options that differ, per "
        "family (closest first):\n" + "\n".join(lines)
    )


def hf_state_dict(model: TransformerForConditionalGeneration, family: Family) -> dict[str, torch.Tensor]:
    """The HF tensors of `model`: renamed, fused projections split back into q/k/v (or gate/value halves)."""
    ours = model.state_dict()
    buffers = dict(model.named_buffers())
    theirs: dict[str, torch.Tensor] = {}
    for name, hf_names in family.weight_names(model.config):
        if len(hf_names) == 1:
            theirs[hf_names[0]] = ours[name]
        else:  # copies, not views of one storage: a file format may refuse tensors that share memory
            theirs.update(
                (hf_name, part.clone()) for hf_name, part in zip(hf_names, ours[name].chunk(len(hf_names)))
            )
    for hf_name, buffer in family.derived(model.config).items():
        theirs[hf_name] = buffers[buffer]
    for name, copies in family.aliases(model.config).items():
        # with an untied output layer, transformers no longer ties BART's encoder and decoder tables to the
        # shared one: each must be in the file (safetensors stores every copy once more)
        theirs.update({copy: theirs[name].clone() for copy in copies if copy != "lm_head.weight"})
    return theirs
