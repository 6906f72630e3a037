"""The recipes under torchrun: a failing worker records its error where torchrun's agent reads it (the
failure summary then names the rank, the message and the traceback), and a restarted job is not refused
for the checkpoints it wrote itself before the crash."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from recipes import arguments, cli
from s2s import elastic


def raising(err: BaseException):
    def main(argv):
        raise err

    return main


def test_a_worker_error_is_recorded_for_torchrun(tmp_path, monkeypatch):
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    with pytest.raises(RuntimeError, match="the step failed"):
        cli.run_command(raising(RuntimeError("the step failed")), [])
    recorded = json.loads(error_file.read_text())["message"]
    assert recorded["message"] == "RuntimeError: the step failed"
    assert "raise err" in recorded["extraInfo"]["py_callstack"]


@pytest.mark.filterwarnings("ignore:Unable to enable fault handler")  # pytest's captured stderr has no fd
def test_a_user_error_under_torchrun_is_recorded_and_still_ends_with_status_2(tmp_path, monkeypatch, capsys):
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    monkeypatch.delenv("S2S_DEBUG", raising=False)
    assert cli.run_command(raising(ValueError("--max_steps must be >= 1")), []) == 2
    assert "error: --max_steps must be >= 1" in capsys.readouterr().err
    assert json.loads(error_file.read_text())["message"]["message"] == "ValueError: --max_steps must be >= 1"


def test_without_torchrun_nothing_is_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE", raising=False)
    main = raising(RuntimeError("boom"))
    assert cli.recorded_for_torchrun(main) is main


def test_a_restarted_job_may_train_into_its_own_checkpoints(tmp_path, monkeypatch):
    (tmp_path / "checkpoint-4").mkdir()
    training_args = SimpleNamespace(
        output_dir=str(tmp_path), do_train=True, overwrite_output_dir=False, resume_from_checkpoint=None
    )
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")
    with pytest.raises(ValueError, match="already holds checkpoints"):  # no attempt of this job trained here
        arguments._check_output_dir(training_args)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    elastic.record_training_start(tmp_path, elastic.ElasticLaunch.from_environ())  # job-1 trained here
    with pytest.raises(
        ValueError, match="already holds checkpoints"
    ):  # the first attempt: as without torchrun
        arguments._check_output_dir(training_args)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    arguments._check_output_dir(training_args)  # its restart: the Trainer resumes from its own checkpoints
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-2")
    with pytest.raises(ValueError, match="already holds checkpoints"):  # another job's restart
        arguments._check_output_dir(training_args)
