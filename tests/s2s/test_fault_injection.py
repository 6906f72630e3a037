"""Kill training with SIGKILL at random moments, including in the middle of a save, and resume each time with
``resume_from_checkpoint=True``: every resume works, no complete checkpoint is ever lost, and the final
parameters equal those of an uninterrupted run.

The training runs in a subprocess (``TRAIN_SCRIPT``): a tiny Transformer with dropout (so the RNG state must be
restored too), a checkpoint every step, ``save_total_limit=2`` (so rotation is killed as well), across epoch
boundaries. ``S2S_TEST_SAVE_DELAY`` slows each file of a save down, so that kills land inside saves often.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from s2s.checkpointing import checkpoint_step, find_latest_checkpoint, verify_checkpoint
from tests.paths import REPO

TRAIN_SCRIPT = r"""
import os, random, sys, time

import torch
from safetensors.torch import save_file

from s2s import atomic_folder
from s2s.callbacks import TrainerCallback
from s2s.models import TransformerConfig, TransformerForConditionalGeneration
from s2s.trainer import Trainer
from s2s.training_args import TrainingArguments

output_dir, max_steps, mode, final = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
save_steps = int(os.environ.get("S2S_TEST_SAVE_STEPS", "1"))
delay = float(os.environ.get("S2S_TEST_SAVE_DELAY", "0"))
if delay:  # widen the window in which a kill lands in the middle of a save
    fsync = atomic_folder.fsync_file

    def slow_fsync(path):
        time.sleep(delay)
        fsync(path)

    atomic_folder.fsync_file = slow_fsync


class PrintSteps(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        print(f"step {state.global_step}", flush=True)


rng = random.Random(0)
data = [
    {
        "input_ids": [rng.randrange(4, 32) for _ in range(rng.randint(1, 6))] + [3],
        "labels": [rng.randrange(4, 32) for _ in range(rng.randint(1, 6))] + [3],
    }
    for _ in range(40)
]


def collate(features):
    def pad(rows, value):
        width = max(map(len, rows))
        return torch.tensor([row + [value] * (width - len(row)) for row in rows])

    input_ids = pad([f["input_ids"] for f in features], 0)
    labels = pad([f["labels"] for f in features], -100)
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(), "labels": labels}


torch.manual_seed(0)
config = TransformerConfig(
    vocab_size=32, d_model=16, encoder_layers=1, decoder_layers=1, num_heads=2, ffn_dim=32, dropout=0.1
)
model = TransformerForConditionalGeneration(config)
args = TrainingArguments(
    output_dir=output_dir, report_to="none", disable_tqdm=True, per_device_train_batch_size=4,
    learning_rate=1e-2, max_steps=max_steps, save_strategy="steps", save_steps=save_steps, save_total_limit=2,
    logging_steps=1000, use_cpu=True, seed=0,
)
trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[PrintSteps()])
trainer.train(resume_from_checkpoint=True if mode == "resume" else None)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, final)
print("finished", flush=True)
"""

SAVE_DELAY = 0.04
"""Seconds added to each file of a save (about ten files): a save then takes ~0.4 s instead of ~0.05 s."""


@dataclass
class Run:
    """One training process, its output files and how it ended."""

    proc: subprocess.Popen
    stdout: Path
    stderr: Path
    log: list[str] = field(default_factory=list)

    def steps(self) -> list[int]:
        return [int(m) for m in re.findall(r"^step (\d+)$", self.stdout.read_text(), flags=re.M)]

    def describe(self) -> str:
        return f"exit {self.proc.returncode}\nstdout:\n{self.stdout.read_text()[-2000:]}\nstderr:\n{self.stderr.read_text()[-4000:]}"


def start(
    workdir: Path, name: str, *, output_dir: Path, max_steps: int, resume: bool, env: dict | None = None
) -> Run:
    script = workdir / "train.py"
    if not script.exists():
        script.write_text(TRAIN_SCRIPT)
    stdout, stderr = workdir / f"{name}.out", workdir / f"{name}.err"
    full_env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # tiny tensors: threads only add contention on a busy machine
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        **(env or {}),
    }
    with open(stdout, "w") as out, open(stderr, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(output_dir), str(max_steps), "resume" if resume else "fresh",
             str(workdir / f"{name}.safetensors")],
            stdout=out, stderr=err, cwd=workdir, env=full_env,
        )  # fmt: skip
    return Run(proc, stdout, stderr)


def wait_until(run: Run, condition, *, timeout: float = 120.0) -> None:
    """Poll ``condition()`` until true; fail with the process's output if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if run.proc.poll() is not None:
            pytest.fail(f"the training process ended before it could be killed:\n{run.describe()}")
        if time.monotonic() > deadline:
            run.proc.kill()
            pytest.fail(f"timed out waiting for the training process:\n{run.describe()}")
        time.sleep(0.005)


def temporary_folders(output_dir: Path, pid: int) -> list[Path]:
    if not output_dir.is_dir():
        return []
    return [p for p in output_dir.iterdir() if p.name.startswith(".") and p.name.endswith(f".tmp-{pid}")]


def kill_at(run: Run, moment: str, *, output_dir: Path, rng: random.Random) -> None:
    """SIGKILL the run at one kind of moment:
    - "startup": at a random time while it imports, loads the checkpoint or takes its first steps;
    - "step": a random short time after it has trained one to three steps;
    - "save": while a checkpoint is being written (its temporary folder exists), after its first save."""
    if moment == "startup":
        time.sleep(rng.uniform(0.5, 4.0))
        if run.proc.poll() is not None:
            pytest.fail(f"the training process ended during start-up:\n{run.describe()}")
    elif moment == "step":
        wanted = rng.randint(1, 3)
        wait_until(run, lambda: len(run.steps()) >= wanted)
        time.sleep(rng.uniform(0.0, 0.3))
    else:  # after this process has completed at least one save, so that the run makes progress
        wait_until(run, lambda: len(run.steps()) >= 2 and temporary_folders(output_dir, run.proc.pid))
        time.sleep(rng.uniform(0.0, 5 * SAVE_DELAY))
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait()
    assert run.proc.returncode == -signal.SIGKILL, run.describe()
    assert "Traceback" not in run.stderr.read_text(), run.describe()


def fault_injection(tmp_path: Path, moments: list[str], *, max_steps: int, seed: int) -> dict:
    rng = random.Random(seed)
    output_dir = tmp_path / "killed"
    # The uninterrupted reference runs alongside the killed runs (same settings, own folder).
    reference = start(
        tmp_path, "reference", output_dir=tmp_path / "reference", max_steps=max_steps, resume=False
    )
    latest_step, landed_in_save, resumes = -1, 0, 0
    for i, moment in enumerate(moments):
        latest = find_latest_checkpoint(output_dir)
        resumes += latest is not None
        run = start(
            tmp_path,
            f"run{i}",
            output_dir=output_dir,
            max_steps=max_steps,
            resume=latest is not None,
            env={"S2S_TEST_SAVE_DELAY": str(SAVE_DELAY)},
        )
        kill_at(run, moment, output_dir=output_dir, rng=rng)
        landed_in_save += bool(temporary_folders(output_dir, run.proc.pid))
        # nothing lost: the newest complete checkpoint never goes back
        newest = find_latest_checkpoint(output_dir)
        step = checkpoint_step(newest) if newest is not None else -1
        assert step >= latest_step, (
            f"kill {i} ({moment}) lost checkpoint-{latest_step}; newest is now {newest}"
        )
        latest_step = step
    resume = find_latest_checkpoint(output_dir) is not None
    final = start(tmp_path, "final", output_dir=output_dir, max_steps=max_steps, resume=resume)
    for run in (final, reference):
        run.proc.wait(timeout=300)
        assert run.proc.returncode == 0, run.describe()
    expected = load_file(tmp_path / "reference.safetensors")
    actual = load_file(tmp_path / "final.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6, msg=key)
    verify_checkpoint(find_latest_checkpoint(output_dir))
    assert checkpoint_step(find_latest_checkpoint(output_dir)) == max_steps
    assert not [p for p in output_dir.iterdir() if p.name.startswith(".")]  # leftovers cleaned up
    return {"landed_in_save": landed_in_save, "resumes": resumes, "latest_step": latest_step}


def test_three_kills_then_identical_parameters(tmp_path):
    stats = fault_injection(tmp_path, ["save", "step", "startup"], max_steps=10, seed=0)
    assert stats["landed_in_save"] >= 1
    assert stats["resumes"] >= 2


@pytest.mark.slow
def test_twenty_kills_in_a_row_then_identical_parameters(tmp_path):
    rng = random.Random(1)
    moments = ["save"] * 8 + ["step"] * 8 + ["startup"] * 4
    rng.shuffle(moments)
    stats = fault_injection(tmp_path, moments, max_steps=30, seed=1)
    assert stats["landed_in_save"] >= 5
    assert stats["resumes"] >= 17  # all but the runs started before the first checkpoint was complete
