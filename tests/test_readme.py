"""The README's Python example runs as written (in a temporary folder, with fewer steps)."""

import os
import re

import torch

from tests.paths import REPO

README = REPO / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_example_runs(tmp_path, monkeypatch):
    (example,) = python_blocks(README.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        namespace: dict = {}
        exec(compile(example, str(README), "exec"), namespace)  # noqa: S102 - our own README
    finally:
        torch.set_num_threads(threads)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 30
    assert os.path.isdir(tmp_path / "runs" / "readme")
    evaluated = [entry for entry in trainer.state.log_history if "eval_bleu" in entry]
    assert evaluated and all(0.0 <= entry["eval_bleu"] <= 100.0 for entry in evaluated)
