"""A Hugging Face example script ported to s2s by changing its import lines only.

run_translation.py is written the way Hugging Face's translation example is. It runs once as written, on
Hugging Face's Trainer, and once with its import block swapped for s2s; both runs must finish and leave the
same files in output_dir and the same metric keys in all_results.json. Values are not compared: the two
trainers sample and schedule differently. Everything is local: a tiny BART and word-level tokenizer built by
tiny_assets.py, and JSON-lines data.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "transformers", reason="the reference run needs transformers (pip install 's2s-toolkit[hf]')"
)
pytest.importorskip("accelerate", reason="Hugging Face's Trainer needs accelerate")

from s2s.last_checkpoint import get_last_checkpoint, is_hf_checkpoint  # noqa: E402
from tests.hf_examples.tiny_assets import write_tiny_bart, write_translation_files  # noqa: E402
from tests.paths import REPO

SCRIPT = Path(__file__).with_name("run_translation.py")
BEGIN, END = "# >>> toolkit imports", "# <<< toolkit imports"
S2S_IMPORTS = """from s2s import (
    DataCollatorForSeq2Seq,
    HfArgumentParser,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    get_last_checkpoint,
    set_seed,
)
"""
STEPS = 4

HF_ONLY_FILES = {"training_args.bin"}
"""Hugging Face pickles its TrainingArguments; s2s writes them as JSON and never unpickles."""
S2S_ONLY_FILES = {"training_args.json"}
S2S_EXTRA_KEY_SUFFIXES = ("_tokens_per_second", "nonfinite_steps")
"""Metrics s2s reports on top of Hugging Face's: throughput in target tokens, updates skipped as NaN/inf."""


def port_to_s2s(source: str) -> str:
    """The script with the block between the markers replaced by s2s imports."""
    if source.count(BEGIN) != 1 or source.count(END) != 1:
        raise ValueError(f"{SCRIPT.name} needs exactly one '{BEGIN}' ... '{END}' block")
    head, rest = source.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{S2S_IMPORTS}\n{END}{tail}"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_example")
    files = write_translation_files(root / "data")
    return {**files, "model": write_tiny_bart(root / "model"), "root": root}


def run_script(script: Path, assets: dict[str, Path], output_dir: Path) -> str:
    """Run the script in a fresh process (each toolkit sets up logging and seeds globally); its output."""
    args = [
        "--model_name_or_path", assets["model"], "--source_lang", "en", "--target_lang", "de",
        "--train_file", assets["train"], "--validation_file", assets["validation"], "--test_file", assets["test"],
        "--cache_dir", assets["root"] / "cache", "--output_dir", output_dir,
        "--do_train", "--do_eval", "--do_predict", "--predict_with_generate",
        "--max_steps", STEPS, "--save_steps", STEPS, "--logging_steps", 2, "--learning_rate", 3e-3,
        "--per_device_train_batch_size", 8, "--per_device_eval_batch_size", 8,
        "--seed", 0, "--report_to", "none", "--disable_tqdm", "true",
    ]  # fmt: skip
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(assets["root"] / "hf_home"),
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=assets["root"],
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{script.name} failed (exit {done.returncode}):\n{output[-6000:]}"
    return output


@pytest.fixture(scope="module")
def hf_run(assets) -> tuple[Path, str]:
    output_dir = assets["root"] / "out_hf"
    return output_dir, run_script(SCRIPT, assets, output_dir)


def listing(output_dir: Path) -> set[str]:
    return {p.name for p in output_dir.iterdir()}


def result_keys(output_dir: Path, name: str = "all") -> set[str]:
    return set(json.loads((output_dir / f"{name}_results.json").read_text()))


def test_the_port_changes_only_the_import_block():
    original = SCRIPT.read_text().splitlines()
    ported = port_to_s2s(SCRIPT.read_text()).splitlines()
    changed = [
        line[1:].strip()
        for line in difflib.unified_diff(original, ported, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed and all(
        line.startswith(("from ", "import ", ")")) or line.endswith(",") for line in changed
    )
    assert "from transformers.trainer_utils import get_last_checkpoint" in changed


def test_hugging_face_run_leaves_the_reference_outputs(hf_run, caplog):
    output_dir, output = hf_run
    expected = {"all_results.json", "train_results.json", "eval_results.json", "predict_results.json"}
    expected |= {"trainer_state.json", "README.md", "generated_predictions.txt", f"checkpoint-{STEPS}"}
    assert expected <= listing(output_dir)
    assert {"train_loss", "eval_bleu", "eval_gen_len", "predict_bleu", "eval_samples"} <= result_keys(
        output_dir
    )
    assert "***** train metrics *****" in output
    # Its checkpoint is recognised as Hugging Face's: returned, with a warning that says how to use it.
    assert is_hf_checkpoint(output_dir / f"checkpoint-{STEPS}")
    with caplog.at_level(logging.WARNING, logger="s2s.last_checkpoint"):
        assert get_last_checkpoint(output_dir) == str(output_dir / f"checkpoint-{STEPS}")
    assert "--model_name_or_path" in caplog.text


def test_ported_script_on_s2s_leaves_the_same_files_and_metric_keys(hf_run, assets, tmp_path):
    hf_dir, _ = hf_run
    ported = tmp_path / "run_translation_s2s.py"
    ported.write_text(port_to_s2s(SCRIPT.read_text()))
    s2s_dir = assets["root"] / "out_s2s"
    output = run_script(ported, assets, s2s_dir)

    assert listing(s2s_dir) - S2S_ONLY_FILES == listing(hf_dir) - HF_ONLY_FILES
    for name in ("all", "train", "eval", "predict"):
        hf_keys, s2s_keys = result_keys(hf_dir, name), result_keys(s2s_dir, name)
        assert hf_keys - s2s_keys == set(), f"Hugging Face {name} metric keys the s2s run lacks"
        assert {k for k in s2s_keys - hf_keys if not k.endswith(S2S_EXTRA_KEY_SUFFIXES)} == set()
    assert {"epoch", "eval_loss", "predict_loss", "train_steps_per_second"} <= result_keys(s2s_dir)
    for split in ("train", "eval", "predict"):
        assert f"***** {split} metrics *****" in output
    state = json.loads((s2s_dir / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS and state["log_history"]
    predictions = (s2s_dir / "generated_predictions.txt").read_text().split("\n")
    assert len(predictions) == len((hf_dir / "generated_predictions.txt").read_text().split("\n"))
    assert not is_hf_checkpoint(s2s_dir / f"checkpoint-{STEPS}")
