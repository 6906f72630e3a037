"""A job that torchrun restarts after a worker died resumes by itself from its newest complete checkpoint.

In one process, the attempt is set through torchrun's variables (TORCHELASTIC_RESTART_COUNT, ...):

- a restart with no checkpoint of the job yet trains from scratch, and says so; one of a job that never
  started training (its first attempt was refused another run's checkpoints) is refused again;
- a restart skips a torn newest checkpoint (named in the log) for the previous complete one, and ends
  like the uninterrupted run;
- the first attempt keeps Hugging Face's behaviour (no resume unless asked; a folder with checkpoints is
  refused), and a checkpoint given by the user still wins on a restart;
- a first attempt that trained over an earlier run's checkpoints (overwrite_output_dir) does not resume from
  them on its restart.

And end to end: 2 processes (gloo) under ``python -m torch.distributed.run --max-restarts 1``, one of them
SIGKILLed after update 5 on the first attempt; torchrun restarts both, the job exits 0 and its final
parameters equal those of an uninterrupted 2-process run bit for bit. A worker that raises on every attempt
fails the job, and torchrun's summary names its rank, the exception and the traceback.
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from s2s import distributed, elastic
from s2s.callbacks import TrainerCallback
from s2s.checkpointing import list_checkpoints
from tests.paths import REPO
from tests.s2s.test_trainer_resume import StopAt, losses, make_trainer
from tests.s2s.test_trainer_toys import params_of


def attempt(monkeypatch, restart_count: int, max_restarts: int = 3) -> None:
    """This process as torchrun's agent starts a worker of attempt ``restart_count``."""
    monkeypatch.setenv(elastic.RESTART_COUNT_VAR, str(restart_count))
    monkeypatch.setenv(elastic.MAX_RESTARTS_VAR, str(max_restarts))
    monkeypatch.setenv(elastic.RUN_ID_VAR, "test-job")


def tear(checkpoint: Path) -> None:
    """What a crash can leave behind in spite of the atomic save (a disk that lost the end of a file)."""
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])


def messages(caplog) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


# ------------------------------------------------------------------------------------------- one process
def test_the_launch_is_read_from_torchruns_variables():
    launch = elastic.ElasticLaunch.from_environ(
        {"TORCHELASTIC_RESTART_COUNT": "2", "TORCHELASTIC_MAX_RESTARTS": "3", "TORCHELASTIC_RUN_ID": "job"}
    )
    assert launch == elastic.ElasticLaunch(restart_count=2, max_restarts=3, run_id="job", job_id="job")
    shared_store = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "node0", "MASTER_PORT": "41231"}
    assert elastic.job_identity({"TORCHELASTIC_RUN_ID": "none", **shared_store}) == "none@node0:41231"
    assert launch.is_restart and launch.may_restart and launch.describe() == "restart 2 of 3 (torchrun)"
    assert elastic.ElasticLaunch.from_environ({"RANK": "0"}) is None  # not started by torchrun's agent
    with pytest.raises(ValueError, match="TORCHELASTIC_RESTART_COUNT='x'.*torchrun"):
        elastic.ElasticLaunch.from_environ({"TORCHELASTIC_RESTART_COUNT": "x"})


class Crash(TrainerCallback):
    """Raises at the end of update ``step``, as a worker that fails before the next checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"crash after update {self.step}")


def test_a_restart_before_the_first_checkpoint_trains_from_scratch(tmp_path, monkeypatch, caplog):
    straight, _ = make_trainer(tmp_path / "straight", "random")
    straight.train()

    attempt(monkeypatch, 0)
    first, _ = make_trainer(tmp_path / "run", "random", callbacks=[Crash(2)])
    with pytest.raises(RuntimeError, match="crash after update 2"):
        first.train()  # died before checkpoint-3
    assert list_checkpoints(tmp_path / "run") == []

    attempt(monkeypatch, 1)
    restarted, _ = make_trainer(tmp_path / "run", "random")
    with caplog.at_level(logging.WARNING, logger="s2s"):
        restarted.train()
    assert "restart 1 of 3 (torchrun): no complete checkpoint of this job" in messages(caplog)
    assert "training from scratch" in messages(caplog)
    assert restarted.checkpointer.resumed_step == 0
    assert losses(restarted) == losses(straight)  # all six updates, from the first


def test_a_restart_is_refused_another_runs_checkpoints_as_its_first_attempt_was(
    tmp_path, monkeypatch, caplog
):
    other, _ = make_trainer(tmp_path, "random", callbacks=[StopAt(3)])
    other.train()  # another run's checkpoint-3

    attempt(monkeypatch, 0)
    first, _ = make_trainer(tmp_path, "random")
    with pytest.raises(ValueError, match="already holds checkpoints"):
        first.train()  # the user forgot resume_from_checkpoint / overwrite_output_dir: the job fails ...
    attempt(monkeypatch, 1)
    restarted, _ = make_trainer(tmp_path, "random")
    with caplog.at_level(logging.WARNING, logger="s2s"), pytest.raises(ValueError, match="already holds"):
        restarted.train()  # ... and its restart does not quietly continue the other run instead
    assert "no attempt of this job started training in" in messages(caplog)


def test_a_restart_skips_a_torn_checkpoint_for_the_previous_complete_one(tmp_path, monkeypatch, caplog):
    straight, _ = make_trainer(tmp_path / "straight", "random")
    straight.train()

    attempt(monkeypatch, 0)
    first, _ = make_trainer(tmp_path / "run", "random", save_steps=2, callbacks=[StopAt(4)])
    first.train()  # the crash: checkpoint-2 and checkpoint-4 written, then the job died
    tear(tmp_path / "run" / "checkpoint-4")

    attempt(monkeypatch, 1)
    restarted, _ = make_trainer(tmp_path / "run", "random", save_steps=2)
    with caplog.at_level(logging.WARNING, logger="s2s"):
        restarted.train()  # no resume_from_checkpoint: the restart finds its own
    log = messages(caplog)
    assert f"skipping {tmp_path / 'run' / 'checkpoint-4'}: " in log
    assert f"restart 1 of 3 (torchrun): resuming from {tmp_path / 'run' / 'checkpoint-2'} at step 2" in log
    assert restarted.checkpointer.resumed_step == 2
    assert restarted.state.global_step == 6
    final, expected = params_of(restarted.model), params_of(straight.model)
    for name in expected:
        torch.testing.assert_close(final[name], expected[name], atol=1e-6, rtol=0)


def test_the_first_attempt_does_not_resume_by_itself(tmp_path, monkeypatch):
    attempt(monkeypatch, 0)
    first, _ = make_trainer(tmp_path, "random", callbacks=[StopAt(3)])
    first.train()
    again, _ = make_trainer(tmp_path, "random")
    with pytest.raises(ValueError, match="already holds checkpoints"):
        again.train()  # as without torchrun: a second job in the folder must say what it wants


def test_a_given_checkpoint_wins_on_a_restart(tmp_path, monkeypatch, caplog):
    attempt(monkeypatch, 0)
    first, _ = make_trainer(tmp_path, "random", save_steps=1, callbacks=[StopAt(4)])
    first.train()
    attempt(monkeypatch, 1)
    restarted, _ = make_trainer(tmp_path, "random", save_steps=1)
    with caplog.at_level(logging.WARNING, logger="s2s"):
        restarted.train(resume_from_checkpoint=tmp_path / "checkpoint-2")
    assert restarted.checkpointer.resumed_step == 2
    assert "as resume_from_checkpoint says" in messages(caplog)


def test_a_restart_does_not_resume_from_the_run_it_trained_over(tmp_path, monkeypatch, caplog):
    earlier, _ = make_trainer(tmp_path, "random", save_steps=2)
    earlier.train()  # an earlier run: checkpoint-2, -4, -6
    earlier_identity = elastic._manifest_identity(tmp_path / "checkpoint-6")

    attempt(monkeypatch, 0)
    first, _ = make_trainer(
        tmp_path, "random", save_steps=2, overwrite_output_dir=True, callbacks=[StopAt(2)]
    )
    first.train()  # trains over it and dies after re-writing checkpoint-2
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]

    attempt(monkeypatch, 1)
    restarted, _ = make_trainer(tmp_path, "random", save_steps=2, overwrite_output_dir=True)
    with caplog.at_level(logging.WARNING, logger="s2s"):
        restarted.train()
    log = messages(caplog)
    assert f"skipping {tmp_path / 'checkpoint-6'}: it was there before this job started" in log
    assert f"resuming from {tmp_path / 'checkpoint-2'} at step 2" in log
    assert restarted.checkpointer.resumed_step == 2
    assert elastic._manifest_identity(tmp_path / "checkpoint-6") != earlier_identity  # now this job's own


def test_each_attempt_keeps_its_process_group_keys_apart_in_torchruns_store(monkeypatch):
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)  # as torchrun's agent
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(server.port))
    monkeypatch.setenv("WORLD_SIZE", "2")
    timeout = datetime.timedelta(seconds=10)
    attempt(monkeypatch, 0, max_restarts=1)
    assert distributed.restart_safe_store(timeout) is None  # the agent's store is not shared: the default
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    first = distributed.restart_safe_store(timeout)
    first.set("default_pg/0//cpu/rank_1", "the address of a process that died")
    attempt(monkeypatch, 1, max_restarts=1)
    restarted = distributed.restart_safe_store(timeout)
    assert not restarted.check(["default_pg/0//cpu/rank_1"])  # the restart waits for the new process's key
    attempt(monkeypatch, 0, max_restarts=0)
    assert distributed.restart_safe_store(timeout) is None  # no restart to come: the default set-up


def test_a_restarted_search_trial_starts_as_on_the_first_attempt(tmp_path, monkeypatch, caplog):
    attempt(monkeypatch, 0)
    first, _ = make_trainer(tmp_path, "random", callbacks=[StopAt(3)])
    first.train(trial=SimpleNamespace(number=0))
    attempt(monkeypatch, 1)
    restarted, _ = make_trainer(tmp_path, "random", overwrite_output_dir=True)
    with caplog.at_level(logging.WARNING, logger="s2s"):
        restarted.train(trial=SimpleNamespace(number=0))  # its hyperparameters may have been drawn anew
    assert restarted.checkpointer.resumed_step == 0
    assert "a hyperparameter-search trial in" in messages(caplog)


# ------------------------------------------------------------------------------------------- torchrun
def torchrun(workdir: Path, name: str, *options: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "--max-restarts", "1", "--monitor-interval", "0.1",
        "-m", "tests.s2s.elastic_training", str(workdir / name), str(workdir / f"{name}.safetensors"), *options,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHELASTIC_", "TORCH_DISABLE_SHARE"))}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.distributed
def test_a_job_that_loses_a_worker_is_restarted_and_ends_like_an_uninterrupted_one(tmp_path):
    killed = torchrun(tmp_path, "killed", "--kill-rank", "1", "--kill-after-step", "5")
    report = f"exit {killed.returncode}\nstdout:\n{killed.stdout[-3000:]}\nstderr:\n{killed.stderr[-6000:]}"
    assert killed.returncode == 0, report
    # the worker did die by SIGKILL (torchrun may report either process first, so its marker is the proof):
    assert (tmp_path / "killed.sigkill").read_text() == "rank 1 after update 5\n", report
    assert "[rank1]: Traceback" not in killed.stderr, report
    restart_line = (
        f"restart 1 of 1 (torchrun): resuming from {tmp_path / 'killed' / 'checkpoint-4'} at step 4"
    )
    assert restart_line in killed.stderr, report
    assert "attempt 1 finished at step 8" in killed.stdout, report

    straight = torchrun(tmp_path, "straight")
    assert straight.returncode == 0, straight.stderr[-6000:]
    assert "attempt 0 finished at step 8" in straight.stdout

    final, expected = load_file(tmp_path / "killed.safetensors"), load_file(tmp_path / "straight.safetensors")
    assert final.keys() == expected.keys()
    for name in expected:
        assert torch.equal(final[name], expected[name]), name


@pytest.mark.distributed
def test_a_worker_that_keeps_failing_fails_the_job_with_its_rank_and_traceback(tmp_path):
    failed = torchrun(tmp_path, "failing", "--raise-rank", "1", "--raise-after-step", "3")
    report = f"exit {failed.returncode}\nstdout:\n{failed.stdout[-3000:]}\nstderr:\n{failed.stderr[-6000:]}"
    assert failed.returncode != 0, report
    # the restart resumed from checkpoint-2, failed again at update 3; torchrun's summary of the failure:
    assert f"resuming from {tmp_path / 'failing' / 'checkpoint-2'} at step 2" in failed.stderr, report
    root_cause = failed.stderr.split("Root Cause")[-1]
    assert "rank      : 1 (local_rank: 1)" in root_cause, report
    assert "RuntimeError: rank 1 failed on purpose after update 3" in root_cause, report
    assert "in on_step_end" in root_cause, report  # the traceback, from the error file the worker wrote
