"""SIGTERM (as batch schedulers send) and SIGINT (Ctrl-C) during training: the process saves a checkpoint at
the step it reached, says so and how to resume, and exits with the shell's status for that signal."""

from __future__ import annotations

import json
import re
import signal

import pytest

from s2s.checkpointing import find_latest_checkpoint, list_checkpoints, verify_checkpoint
from tests.s2s.test_fault_injection import start, wait_until


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_at_the_current_step_and_exits_cleanly(tmp_path, signum):
    output_dir = tmp_path / "out"
    # save_steps far beyond the stop: the only checkpoint is the one the signal asks for
    run = start(tmp_path, "run", output_dir=output_dir, max_steps=5000, resume=False,
                env={"S2S_TEST_SAVE_STEPS": "100000"})  # fmt: skip
    wait_until(run, lambda: len(run.steps()) >= 3)
    run.proc.send_signal(signum)
    run.proc.wait(timeout=120)
    name = signal.Signals(signum).name

    assert run.proc.returncode == 128 + signum, run.describe()
    stderr = run.stderr.read_text()
    assert "Traceback" not in stderr, run.describe()
    match = re.search(
        rf"interrupted by {name} at step (\d+); saved (\S+)\. Resume with resume_from_checkpoint", stderr
    )
    assert match, run.describe()
    step = int(match.group(1))
    assert step >= 3
    assert step == max(run.steps())  # the step the process had reached, not an earlier one
    (checkpoint,) = list_checkpoints(output_dir)
    assert checkpoint.name == f"checkpoint-{step}" and match.group(2).rstrip(".").endswith(checkpoint.name)
    verify_checkpoint(checkpoint)
    assert find_latest_checkpoint(output_dir) == checkpoint
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
    assert "finished" not in run.stdout.read_text()
