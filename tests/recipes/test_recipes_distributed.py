"""The translation recipe under torchrun (2 CPU processes, gloo): rank 0 trains and saves the tokenizer and the
other rank loads it, the data warnings and the predictions come once, and the job ends cleanly.

Replicas log at INFO here (`--log_level_replica info`), so a second tokenizer training or prediction writer
on rank 1 would show in the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.paths import REPO

pytestmark = pytest.mark.distributed


def lines_with(output: str, text: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def test_translation_recipe_under_torchrun_does_shared_work_once(tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "recipes.translation", "recipes/configs/debug_translation.yaml",
        "--output_dir", str(out), "--log_level_replica", "info", "--report_to", "none",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    trained = lines_with(output, "training a sentencepiece tokenizer")
    assert len(trained) == 1 and "[rank 0]" in trained[0], trained
    loaded = lines_with(output, "loading the tokenizer rank 0 saved in")
    assert len(loaded) == 1 and "[rank 1]" in loaded[0], loaded

    truncated = lines_with(output, "are longer than")  # the bundled data has a few long pairs
    assert truncated and all("[rank 0]" in line for line in truncated), truncated

    written = lines_with(output, "wrote 8 predictions")
    assert len(written) == 1 and "[rank 0]" in written[0], written
    assert len(lines_with(done.stdout, "Test (8 examples)")) == 1
    rows = [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == list(range(8))
    assert len((out / "generated_predictions.txt").read_text().splitlines()) == 8
