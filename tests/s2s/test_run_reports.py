"""End-of-run reports (metrics table, *_results.json, trainer_state.json) match Hugging Face's output."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from s2s.callbacks import TrainerState
from s2s.run_reports import (
    format_seconds,
    log_metrics,
    metrics_format,
    metrics_table,
    save_metrics,
    save_state,
)

METRICS = {
    "train_runtime": 3725.456,
    "train_mem_cpu_peak": 5 * 2**20 + 7,
    "total_flos": 3 * 2**30 + 5,
    "train_loss": 0.123456,
    "train_samples": 32,
    "epoch": 1.0,
}


def test_metrics_format_known_answers():
    formatted = metrics_format(METRICS)
    assert formatted == {
        "train_runtime": "1:02:05.45",
        "train_mem_cpu_peak": "5MB",
        "total_flos": "3GF",
        "train_loss": 0.1235,
        "train_samples": 32,
        "epoch": 1.0,
    }
    assert format_seconds(0.999) == "0:00:00.99"  # hundredths are truncated, not rounded


def test_metrics_table_aligns_keys_left_and_values_right():
    table = metrics_table("eval", {"eval_loss": 1.23456, "eval_samples": 8})
    assert table.splitlines() == [
        "***** eval metrics *****",
        "  eval_loss    = 1.2346",
        "  eval_samples =      8",
    ]
    assert metrics_table("eval", {}) == "***** eval metrics *****"


def test_log_metrics_prints_on_the_main_process_only(capsys):
    log_metrics("train", METRICS, is_main=False)
    assert capsys.readouterr().out == ""
    log_metrics("train", METRICS, is_main=True)
    assert capsys.readouterr().out == metrics_table("train", METRICS) + "\n"


def test_save_metrics_writes_the_split_and_merges_all_results(tmp_path):
    save_metrics(tmp_path, "train", {"train_loss": 1.5, "epoch": 1.0})
    save_metrics(tmp_path, "eval", {"eval_bleu": np.float64(3.25), "epoch": 2.0})
    save_metrics(tmp_path, "predict", {"predict_bleu": 1.0}, combined=False)
    assert json.loads((tmp_path / "eval_results.json").read_text()) == {"eval_bleu": 3.25, "epoch": 2.0}
    assert json.loads((tmp_path / "all_results.json").read_text()) == {
        "train_loss": 1.5,
        "eval_bleu": 3.25,
        "epoch": 2.0,  # the later split wins on a shared key
    }
    assert (tmp_path / "predict_results.json").is_file()
    assert (tmp_path / "train_results.json").read_text() == '{\n    "epoch": 1.0,\n    "train_loss": 1.5\n}'


def test_save_metrics_refuses_bad_input_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="plain name"):
        save_metrics(tmp_path, "../train", {"x": 1})
    with pytest.raises(TypeError, match="train_results.json"):
        save_metrics(tmp_path, "train", {"x": object()})
    assert not (tmp_path / "train_results.json").exists()  # nothing half-written
    (tmp_path / "all_results.json").write_text("{not json")
    with pytest.raises(ValueError, match="combined=False"):
        save_metrics(tmp_path, "eval", {"eval_loss": 1.0})


def test_save_state_round_trips(tmp_path):
    state = TrainerState(global_step=4, epoch=1.0, log_history=[{"loss": 2.5, "step": 4}])
    path = save_state(state, tmp_path / "out")
    assert path.name == "trainer_state.json"
    assert TrainerState.load_from_json(path) == state


# ---------------------------------------------------------------------- against Hugging Face's own code


@pytest.fixture
def hf_pt_utils():
    return pytest.importorskip("transformers.trainer_pt_utils")


def hf_trainer(output_dir, state=None):
    return SimpleNamespace(
        args=SimpleNamespace(output_dir=str(output_dir)), state=state, is_world_process_zero=lambda: True
    )


def test_formatting_and_table_match_hugging_face(hf_pt_utils, capsys):
    assert metrics_format(METRICS) == hf_pt_utils.metrics_format(METRICS)
    hf_pt_utils.log_metrics(hf_trainer("unused"), "train", METRICS)
    theirs = capsys.readouterr().out
    log_metrics("train", METRICS, is_main=True)
    assert capsys.readouterr().out == theirs


def test_result_files_are_byte_identical_to_hugging_face(hf_pt_utils, tmp_path):
    (tmp_path / "hf").mkdir()
    splits = [("train", {"train_loss": 1.5, "epoch": 1.0}), ("eval", {"eval_bleu": 3.25, "epoch": 2.0})]
    for split, metrics in splits:
        hf_pt_utils.save_metrics(hf_trainer(tmp_path / "hf"), split, metrics)
        save_metrics(tmp_path / "s2s", split, metrics)
    for name in ("train_results.json", "eval_results.json", "all_results.json"):
        assert (tmp_path / "s2s" / name).read_bytes() == (tmp_path / "hf" / name).read_bytes(), name
