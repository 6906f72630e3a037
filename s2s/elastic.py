"""Resuming by itself after torchrun restarts the job (``torchrun --max-restarts N``).

When one worker dies, torchrun's agent stops every worker of the group and starts them all again, with
``TORCHELASTIC_RESTART_COUNT`` one higher (0 on the first attempt) and ``TORCHELASTIC_MAX_RESTARTS`` set to N.
The restarted script runs from its first line: it builds the same Trainer and calls ``train()`` again. If that
call started over, the restart would throw away every update since the last checkpoint and, worse, refuse to
train because output_dir now holds checkpoints. So on a restart, a ``train()`` call that was given no
checkpoint continues from the newest complete checkpoint in output_dir; one torn by the crash is skipped
(and named in the log) for the previous complete one. A restart that finds no checkpoint yet trains from
scratch, as the first attempt did, and says so.

The first attempt behaves as without torchrun (Hugging Face's semantics: no resume unless asked), and a
checkpoint given by the user (``resume_from_checkpoint``) still wins on a restart.

A first attempt that trains from scratch over an earlier run's checkpoints (``overwrite_output_dir=True``)
leaves those folders in place. Its restart must not mistake them for its own, since the earlier run may have
got further: the first attempt records which checkpoints were already there (each by the identity of its
manifest file, so a folder this job re-saves under the same name counts as its own) in ``RUN_RECORD_NAME``,
and a restart skips exactly those.

Only process 0 reads the folder; the others take its choice, so every process resumes from the same
checkpoint even if a save was still becoming visible on a shared file system.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from s2s import distributed
from s2s.atomic_folder import MANIFEST_NAME, leftover_folders
from s2s.checkpoint_files import CheckpointError, checkpoint_step, list_checkpoints
from s2s.checkpointing import verify_checkpoint

logger = logging.getLogger(__name__)

RESTART_COUNT_VAR = "TORCHELASTIC_RESTART_COUNT"
MAX_RESTARTS_VAR = "TORCHELASTIC_MAX_RESTARTS"
RUN_ID_VAR = "TORCHELASTIC_RUN_ID"

RUN_RECORD_NAME = ".s2s_elastic_run.json"
"""Written into output_dir by the first attempt of a job that torchrun may restart: the checkpoints of
earlier runs that were there when it started from scratch. Hidden, and never a ``checkpoint-<N>`` folder, so
nothing else reads it."""


@dataclass(frozen=True)
class ElasticLaunch:
    """Which attempt of a torchrun job this process belongs to."""

    restart_count: int  # 0 on the first attempt
    max_restarts: int
    run_id: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ElasticLaunch | None:
        """The attempt torchrun's variables describe, or None when the process was not started by torchrun's
        agent (a plain ``python train.py``, or workers started by other means)."""
        environ = os.environ if environ is None else environ
        if RESTART_COUNT_VAR not in environ:
            return None
        return cls(
            restart_count=_count(environ, RESTART_COUNT_VAR),
            max_restarts=_count(environ, MAX_RESTARTS_VAR, default="0"),
            run_id=environ.get(RUN_ID_VAR, ""),
        )

    @property
    def is_restart(self) -> bool:
        return self.restart_count > 0

    @property
    def may_restart(self) -> bool:
        """Whether torchrun will start this job again if a worker fails."""
        return self.restart_count < self.max_restarts

    def describe(self) -> str:
        return f"restart {self.restart_count} of {self.max_restarts} (torchrun)"


def agreed_launch() -> ElasticLaunch | None:
    """This job's attempt as every process sees it (a collective: every process calls it), or None without
    torchrun. Each machine's agent counts its own restarts, and an agent that restarted its workers because
    another machine failed may not have counted it; any process that knows of a restart makes it one."""
    launch = ElasticLaunch.from_environ()
    if launch is None:
        return None
    counts = distributed.all_gather_object(launch.restart_count)
    return dataclasses.replace(launch, restart_count=max(counts))


def _count(environ: Mapping[str, str], name: str, *, default: str | None = None) -> int:
    text = environ.get(name, default)
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = -1
    if value < 0:
        raise ValueError(
            f"environment variable {name}={text!r} is not a count (a whole number >= 0); torchrun sets it "
            "for its workers: leave it to torchrun, or unset it when not launching with torchrun"
        )
    return value


# ------------------------------------------------------------------------------------------ first attempt
def record_fresh_start(output_dir: str | Path, launch: ElasticLaunch) -> None:
    """On a first attempt that trains from scratch (process 0, before training): note the checkpoints of
    earlier runs in ``output_dir`` so that a restart does not resume from one of them. Does nothing when
    torchrun will not restart the job."""
    if launch.is_restart or not launch.may_restart:
        return
    output_dir = Path(output_dir)
    earlier = {path.name: _manifest_identity(path) for path in list_checkpoints(output_dir)}
    record = {"run_id": launch.run_id, "earlier_checkpoints": {k: v for k, v in earlier.items() if v}}
    output_dir.mkdir(parents=True, exist_ok=True)
    temporary = output_dir / f"{RUN_RECORD_NAME}.tmp-{os.getpid()}"
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, output_dir / RUN_RECORD_NAME)  # a crash leaves the old record or the new one


def _manifest_identity(checkpoint: Path) -> str | None:
    """Which save wrote ``checkpoint``: its manifest's inode, modification time and size. Every save writes
    a new folder and renames it into place, so a re-save under the same name, even one with identical
    contents (the same job run again), has another identity."""
    try:
        stat = (checkpoint / MANIFEST_NAME).stat()
    except FileNotFoundError:
        return None
    return f"{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}"


def earlier_runs_checkpoints(output_dir: str | Path) -> dict[str, str]:
    """``{folder name: manifest identity}`` of the checkpoints that were in ``output_dir`` before the first
    attempt of this job trained from scratch ({} without a record)."""
    path = Path(output_dir) / RUN_RECORD_NAME
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        earlier = record["earlier_checkpoints"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path} is corrupt ({err!r}); it lists the checkpoints of earlier runs that a restart must not "
            "resume from. Delete it if output_dir holds only this job's checkpoints, then restart the job"
        ) from err
    if not isinstance(earlier, dict):
        raise ValueError(f"{path}: 'earlier_checkpoints' must be a mapping of folder name to identity")
    return earlier


# ------------------------------------------------------------------------------------------ a restart
def newest_own_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``output_dir`` that this job wrote, or None. Each newer folder that
    is skipped is logged with the reason: torn or corrupt (the crash interrupted it), or left by an earlier
    run this job trained over."""
    output_dir = Path(output_dir)
    for leftover in leftover_folders(output_dir):
        logger.warning("ignoring %s: left by a save the crash interrupted", leftover.path)
    earlier = earlier_runs_checkpoints(output_dir)
    for candidate in reversed(list_checkpoints(output_dir)):
        if candidate.name in earlier and _manifest_identity(candidate) == earlier[candidate.name]:
            logger.warning(
                "skipping %s: it was there before this job started from scratch (overwrite_output_dir); "
                "it belongs to an earlier run",
                candidate,
            )
            continue
        try:
            verify_checkpoint(candidate)
        except CheckpointError as err:
            logger.warning("skipping %s: %s", candidate, err)
            continue
        return candidate
    return None


def restart_checkpoint(output_dir: str | Path, launch: ElasticLaunch) -> Path | None:
    """Where a restarted ``train()`` call without a given checkpoint continues: process 0 picks the newest
    complete checkpoint of this job (``newest_own_checkpoint``) and every process takes its choice. Logs
    the decision on process 0."""
    choice = None
    if distributed.get_rank() == 0:
        choice = newest_own_checkpoint(output_dir)
        if choice is None:
            logger.warning(
                "%s: no complete checkpoint of this job in %s yet; training from scratch",
                launch.describe(),
                output_dir,
            )
        else:
            logger.warning(
                "%s: resuming from %s at step %d", launch.describe(), choice, checkpoint_step(choice)
            )
    choice = distributed.all_gather_object(None if choice is None else str(choice))[0]
    return None if choice is None else Path(choice)


def log_given_checkpoint(launch: ElasticLaunch, checkpoint: Path | None) -> None:
    """On a restart whose ``train()`` call was told where to start (``resume_from_checkpoint``): say that
    the given choice stands, on process 0."""
    if distributed.get_rank() != 0:
        return
    if checkpoint is None:
        logger.warning("%s: training from scratch (resume_from_checkpoint=False)", launch.describe())
    else:
        logger.warning(
            "%s: resuming from %s at step %s, as resume_from_checkpoint says (pass "
            "resume_from_checkpoint=True, or none, to continue from this job's newest checkpoint instead)",
            launch.describe(),
            checkpoint,
            checkpoint_step(checkpoint),
        )
