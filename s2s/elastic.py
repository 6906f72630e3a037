"""Resuming by itself after torchrun restarts the job (``torchrun --max-restarts N``).

When one worker dies, torchrun's agent stops every worker of the group and starts them all again, with
``TORCHELASTIC_RESTART_COUNT`` one higher (0 on the first attempt) and ``TORCHELASTIC_MAX_RESTARTS`` set to N.
The restarted script runs from its first line: it builds the same Trainer and calls ``train()`` again. If that
call started over, the restart would throw away every update since the last checkpoint and, worse, refuse to
train because output_dir now holds checkpoints. So on a restart, a ``train()`` call that was given no
checkpoint continues from the job's newest complete checkpoint in output_dir; one torn by the crash is skipped
(and named in the log) for the previous complete one. A restart that finds no checkpoint of the job yet trains
from scratch, as the first attempt did, and says so.

The first attempt behaves as without torchrun (Hugging Face's semantics: no resume unless asked), and a
checkpoint given by the user (``resume_from_checkpoint``) still wins on a restart.

Which checkpoints are the job's own? An attempt that starts training from scratch writes ``RUN_RECORD_NAME``
into output_dir: the job (``ElasticLaunch.job_id``) and the checkpoints already there, from earlier runs it
trains over (``overwrite_output_dir=True``), each by the identity of its manifest file (a folder the job
re-saves under the same name is then its own). A restart continues only when that record names its job, and
skips those earlier checkpoints, since an earlier run may have got further. Without the record no attempt of
this job reached training (the first one failed while preparing data, or refused to train over another run's
checkpoints), so the restart starts as a first attempt would: refused again in that last case, rather than
resuming another run's checkpoints.

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
from typing import NamedTuple

from s2s import distributed
from s2s.atomic_folder import MANIFEST_NAME
from s2s.checkpoint_files import checkpoint_step, list_checkpoints
from s2s.checkpointing import find_latest_checkpoint

logger = logging.getLogger(__name__)

RESTART_COUNT_VAR = "TORCHELASTIC_RESTART_COUNT"
MAX_RESTARTS_VAR = "TORCHELASTIC_MAX_RESTARTS"
RUN_ID_VAR = "TORCHELASTIC_RUN_ID"

RUN_RECORD_NAME = ".s2s_elastic_run.json"
"""Written into output_dir when an attempt of a job that torchrun may restart starts training from scratch:
the job, and the checkpoints of earlier runs that were there. Hidden, and never a ``checkpoint-<N>`` folder, so
nothing else reads it."""


@dataclass(frozen=True)
class ElasticLaunch:
    """Which attempt of a torchrun job this process belongs to."""

    restart_count: int  # 0 on the first attempt
    max_restarts: int
    run_id: str
    job_id: str = ""  # the same in every attempt of one job, and (see ``job_identity``) in no other job

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
            job_id=job_identity(environ),
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


def job_identity(environ: Mapping[str, str]) -> str:
    """What tells this job from other jobs in the same output_dir, in every attempt: torchrun's run id (a
    random one with ``--standalone``, else ``--rdzv-id``, "none" unless given), and, when the agent's store
    serves the whole job, the store's address (under the c10d rendezvous a port the system picked when the
    job started; with a fixed ``--master-port`` the same for every job). ``--standalone`` or a ``--rdzv-id``
    of its own tells a job apart in every set-up."""
    job = environ.get(RUN_ID_VAR, "")
    if environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        job += f"@{environ.get('MASTER_ADDR', '')}:{environ.get('MASTER_PORT', '')}"
    return job


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


# ------------------------------------------------------------------------------------------ training starts
def record_training_start(output_dir: str | Path, launch: ElasticLaunch) -> None:
    """When an attempt starts training from scratch (process 0, before training): note the job and the
    checkpoints of earlier runs in ``output_dir``, so that a restart continues from this job's checkpoints
    and from no other's. Does nothing when torchrun will not restart the job."""
    if not launch.may_restart:
        return
    output_dir = Path(output_dir)
    earlier = {path.name: _manifest_identity(path) for path in list_checkpoints(output_dir)}
    record = {"job": launch.job_id, "earlier_checkpoints": {k: v for k, v in earlier.items() if v}}
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


def read_run_record(output_dir: str | Path) -> dict | None:
    """``RUN_RECORD_NAME`` of ``output_dir`` (``job``, ``earlier_checkpoints``: folder name to identity), or
    None when there is none."""
    path = Path(output_dir) / RUN_RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record["job"], str) or not isinstance(record["earlier_checkpoints"], dict):
            raise TypeError("'job' must be a string and 'earlier_checkpoints' a mapping")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path} is corrupt ({err!r}); it says which job trained in this folder and which checkpoints "
            "belong to earlier runs. Delete it and pass resume_from_checkpoint (a checkpoint of this job, or "
            "True) to continue, or restart the job from scratch"
        ) from err
    return record


def trained_here(output_dir: str | Path, launch: ElasticLaunch) -> bool:
    """Whether an attempt of this job started training in ``output_dir`` (its record names the job)."""
    record = read_run_record(output_dir)
    return record is not None and record["job"] == launch.job_id


# ------------------------------------------------------------------------------------------ a restart
def newest_own_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``output_dir`` that this job wrote (``trained_here`` must hold),
    or None. Each newer folder that is skipped is logged with the reason: torn or corrupt (the crash
    interrupted it), or left by an earlier run this job trained over."""
    record = read_run_record(output_dir)
    earlier = record["earlier_checkpoints"] if record is not None else {}

    def earlier_run(candidate: Path) -> str | None:
        if candidate.name in earlier and _manifest_identity(candidate) == earlier[candidate.name]:
            return (
                "it was there before this job started from scratch (overwrite_output_dir); "
                "it belongs to an earlier run"
            )
        return None

    return find_latest_checkpoint(output_dir, exclude=earlier_run)


class RestartPoint(NamedTuple):
    trained_here: bool  # an attempt of this job started training in output_dir; else start as a first attempt
    checkpoint: Path | None  # where to continue (None: from scratch)


def restart_point(
    output_dir: str | Path, launch: ElasticLaunch, *, search_trial: bool = False
) -> RestartPoint:
    """Where a restarted ``train()`` call without a given checkpoint continues (a collective): process 0
    picks the newest complete checkpoint of this job (``newest_own_checkpoint``), logs the decision, and
    every process takes its choice. A hyperparameter-search trial starts as on the first attempt: the search
    draws its hyperparameters again, and they may not be those of the checkpoints in its folder."""
    choice: tuple[bool, str | None] = (False, None)
    if distributed.get_rank() == 0:
        if search_trial:
            logger.warning(
                "%s: a hyperparameter-search trial in %s starts as on the first attempt (its hyperparameters "
                "are drawn again and may differ from those of its checkpoints)",
                launch.describe(),
                output_dir,
            )
        elif not trained_here(output_dir, launch):
            logger.warning(
                "%s: no attempt of this job started training in %s; starting as the first attempt would",
                launch.describe(),
                output_dir,
            )
        else:
            checkpoint = newest_own_checkpoint(output_dir)
            if checkpoint is None:
                logger.warning(
                    "%s: no complete checkpoint of this job in %s yet; training from scratch",
                    launch.describe(),
                    output_dir,
                )
            else:
                logger.warning(
                    "%s: resuming from %s at step %d",
                    launch.describe(),
                    checkpoint,
                    checkpoint_step(checkpoint),
                )
            choice = (True, None if checkpoint is None else str(checkpoint))
    here, checkpoint = distributed.all_gather_object(choice)[0]
    return RestartPoint(here, None if checkpoint is None else Path(checkpoint))


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
