"""Checkpoint averaging (`--average_last_checkpoints N`): the final weights become the element-wise mean of
the last N complete checkpoints, which usually scores higher than the last checkpoint alone."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from s2s.checkpointing import list_checkpoints

logger = logging.getLogger("recipes")


def load_averaged_checkpoints(trainer: Any, count: int) -> list[Path]:
    """Load the mean of the weights of the last `count` complete checkpoints in output_dir into the trainer's
    model; return the checkpoints used. Incomplete ones (a crash mid-save) are skipped, with a warning."""
    from safetensors.torch import save_file

    from s2s import checkpointing

    output_dir = Path(trainer.args.output_dir)
    chosen = _complete_checkpoints(output_dir)[-count:]
    if not chosen:
        raise checkpointing.CheckpointError(
            f"average_last_checkpoints: no complete checkpoint in {output_dir}"
        )
    if len(chosen) < count:
        logger.warning(
            "average_last_checkpoints=%d: only %d complete checkpoints to average", count, len(chosen)
        )
    averaged = checkpointing.average_model_weights(chosen)
    # through a folder, so the trainer loads it as any checkpoint: key and shape checks, FSDP shards
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".averaged-") as folder:
        save_file(averaged, str(Path(folder) / checkpointing.WEIGHTS_NAME), metadata={"format": "pt"})
        trainer.load_weights(folder)
    logger.info("final weights: the mean of %s", ", ".join(path.name for path in chosen))
    return chosen


def _complete_checkpoints(output_dir: Path) -> list[Path]:
    from s2s import checkpointing

    complete = []
    for path in list_checkpoints(output_dir):
        try:
            checkpointing.verify_checkpoint(path)
            complete.append(path)
        except checkpointing.CheckpointError as err:
            logger.warning("checkpoint averaging skips %s: %s", path, err)
    return complete
