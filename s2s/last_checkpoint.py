"""Find the checkpoint a training script should resume from, as Hugging Face's ``get_last_checkpoint`` does,
and recognise checkpoints that Hugging Face's Trainer wrote.

An s2s checkpoint is complete when its ``manifest.json`` lists every file (see ``s2s.checkpointing``). A
Hugging Face checkpoint has no manifest; it holds ``training_args.bin`` (a pickled ``TrainingArguments``) and
``rng_state.pth``, names s2s never writes. s2s cannot restore it: the arguments are a pickle of another
library's class, which s2s never unpickles, and the optimizer, scheduler and RNG files follow Hugging Face's
layout. Its weights, config and tokenizer are ordinary ``from_pretrained`` files, so the way to continue from
one is to load it as the starting model and train from there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from s2s.checkpointing import MANIFEST_NAME, CheckpointError, list_checkpoints, verify_checkpoint

logger = logging.getLogger(__name__)

HF_ONLY_FILES = ("training_args.bin", "rng_state.pth")
"""Files Hugging Face's Trainer writes into every checkpoint and s2s never does (ours are
``training_args.json`` and ``rng_state.pt``)."""


def is_hf_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` was written by Hugging Face's Trainer: no s2s manifest, and one of Hugging Face's
    own files (``training_args.bin``, ``rng_state.pth`` or a per-process ``rng_state_<rank>.pth``)."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / MANIFEST_NAME).exists():
        return False
    return any((folder / name).is_file() for name in HF_ONLY_FILES) or any(folder.glob("rng_state_*.pth"))


def hf_checkpoint_message(folder: str | os.PathLike) -> str:
    """What to do with a Hugging Face checkpoint: it cannot be resumed, its weights can be trained on."""
    return (
        f"{folder} was written by Hugging Face's Trainer, not s2s: s2s cannot restore its optimizer, scheduler "
        "and RNG state (training_args.bin, optimizer.pt, rng_state.pth follow Hugging Face's format), so it "
        "cannot resume from it. To continue from its weights, load them as the starting model "
        f"(from_pretrained({str(folder)!r}), or --model_name_or_path {folder} in the example scripts) and "
        "train into a new output_dir (or pass --overwrite_output_dir); the optimizer and learning-rate "
        "schedule then start afresh."
    )


def refuse_hf_checkpoint(folder: str | os.PathLike) -> None:
    """Raise CheckpointError with ``hf_checkpoint_message`` when asked to resume from a Hugging Face
    checkpoint; the Trainer calls this before reading a checkpoint so the user gets the way out, not a
    missing-manifest error."""
    if is_hf_checkpoint(folder):
        raise CheckpointError(hf_checkpoint_message(folder))


def get_last_checkpoint(folder: str | os.PathLike) -> str | None:
    """The path (a string, as Hugging Face returns it) of the ``checkpoint-<N>`` folder with the highest N in
    ``folder``, or None when there is none.

    Differences from Hugging Face, both logged as warnings:

    - an s2s checkpoint that is incomplete or corrupt (a save killed half-way, a truncated file) is skipped
      for the next older one, so a resume never starts from a broken folder;
    - a checkpoint written by Hugging Face's Trainer is returned (it is the last one) with a warning saying
      how to train from its weights, since resuming from it will be refused.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"get_last_checkpoint: {folder} is not a folder; pass the output_dir that holds checkpoint-<N> folders"
        )
    for candidate in reversed(list_checkpoints(folder)):
        if is_hf_checkpoint(candidate):
            logger.warning("%s", hf_checkpoint_message(candidate))
            return str(candidate)
        try:
            verify_checkpoint(candidate)
        except CheckpointError as err:
            logger.warning("skipping %s: %s", candidate, err)
            continue
        return str(candidate)
    return None
