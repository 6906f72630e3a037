"""The translation recipe runs end to end on a few dozen examples with a tiny model: files written, metrics
finite; its output_dir then serves predictions and recipes.generate. Helpers shared with the summarization test."""

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("s2s.seq2seq_trainer", reason="waits for s2s.seq2seq_trainer.Seq2SeqTrainer (issue 3)")

from recipes import generate, outputs, translation  # noqa: E402
from tests.paths import REPO

CONFIGS = REPO / "recipes" / "configs"
MULTI30K = REPO / "recipes" / "data" / "multi30k"


def run(recipe, config: str, out: Path, cache: Path, *extra: str) -> dict:
    argv = [str(CONFIGS / config), "--output_dir", str(out), "--dataset_cache_dir", str(cache)]
    # configs name the bundled data relative to the repository; tests may run from anywhere
    defaults = {"--train_file": "validation", "--validation_file": "validation", "--test_file": "test"}
    for flag, split in defaults.items():
        if flag not in extra:
            argv += [flag, str(MULTI30K / f"{split}.jsonl.gz")]
    return recipe.main(argv + list(extra))


def check_outputs(out: Path, results: dict, metric: str, *, steps: int, n_test: int) -> None:
    for name in (
        "all_results.json",
        "train_results.json",
        "eval_results.json",
        "predict_results.json",
        "generated_predictions.txt",
        "generated_predictions.jsonl",
        "trainer_state.json",
        "generation_config.json",
        "config.json",
        "model.safetensors",
        outputs.RECIPE_ARGS_FILE,
        "learning_curve_loss.png",
        "learning_curve_learning_rate.png",
        f"learning_curve_eval_{metric}.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert len((out / "generated_predictions.txt").read_text().splitlines()) == n_test
    rows = [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == n_test and {"source", "reference", "hypothesis", "scores"} <= set(rows[0])
    assert metric in rows[0]["scores"]
    for key in (f"eval_{metric}", f"predict_{metric}", "train_loss"):
        assert math.isfinite(results[key]), key
    # the test score is against the references as written, not the tokenized (truncated, normalized) labels
    import metrics as m

    hyps, refs = [r["hypothesis"] for r in rows], [r["reference"] for r in rows]
    expected = (
        m.bleu(hyps, refs)["bleu"] if metric == "bleu" else m.rouge(hyps, refs, split_sentences=True)[metric]
    )
    assert results[f"predict_{metric}"] == pytest.approx(expected, abs=1e-9)
    all_results = json.loads((out / "all_results.json").read_text())
    assert all_results[f"predict_{metric}"] == pytest.approx(results[f"predict_{metric}"])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == steps and any(f"eval_{metric}" in entry for entry in state["log_history"])


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory):
    """One debug translation run shared by the tests below (a run costs seconds, not milliseconds)."""
    root = tmp_path_factory.mktemp("translation")
    results = run(translation, "debug_translation.yaml", root / "out", root / "cache")
    return root, results


def test_translation_recipe_end_to_end(translation_run, capsys):
    root, results = translation_run
    check_outputs(root / "out", results, "bleu", steps=6, n_test=8)
    assert (root / "out" / "checkpoint-6").is_dir()
    saved = json.loads((root / "out" / "generation_config.json").read_text())
    assert saved["num_beams"] == 2  # the recipe's num_beams travels with the model


def test_trained_output_dir_translates_a_file(translation_run, tmp_path):
    root, _ = translation_run
    (tmp_path / "in.de").write_text("Ein Hund läuft.\n\nZwei Katzen.\n")
    argv = [str(root / "out"), "--input", str(tmp_path / "in.de"), "--output", str(tmp_path / "out.en")]
    argv += ["--max_new_tokens", "8"]  # an untrained model never says eos: keep it short
    assert generate.main(argv) == 0
    lines = (tmp_path / "out.en").read_text().split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == ""


def test_predict_only_from_a_trained_output_dir(translation_run, tmp_path, capsys):
    root, _ = translation_run
    results = translation.main(
        [
            "--do_predict", "--predict_with_generate", "--model_name_or_path", str(root / "out"),
            "--test_file", str(MULTI30K / "test.jsonl.gz"), "--max_predict_samples", "4", "--num_beams", "1",
            "--source_lang", "de", "--target_lang", "en", "--output_dir", str(tmp_path / "again"),
            "--dataset_cache_dir", str(root / "cache"), "--report_to", "none", "--disable_tqdm", "true",
        ]
    )  # fmt: skip
    assert math.isfinite(results["predict_bleu"])
    assert len((tmp_path / "again" / "generated_predictions.txt").read_text().splitlines()) == 4
    assert "Test (4 examples): bleu" in capsys.readouterr().out
    # the trained model's output length travels with it (no --val_max_target_length given here)
    saved = json.loads((tmp_path / "again" / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == 64 and saved["num_beams"] == 1


def test_average_last_checkpoints_saves_the_mean_of_the_last_ones(tmp_path):
    import torch

    from s2s.checkpointing import read_model_weights

    out = tmp_path / "out"
    extra = ["--save_steps", "2", "--save_total_limit", "3", "--average_last_checkpoints", "2"]
    extra += ["--eval_strategy", "no", "--do_eval", "false", "--do_predict", "false"]
    results = run(translation, "debug_translation.yaml", out, tmp_path / "cache", *extra)
    assert results["averaged_checkpoints"] == 2
    last, previous = read_model_weights(out / "checkpoint-6"), read_model_weights(out / "checkpoint-4")
    final = read_model_weights(out)
    assert final.keys() == last.keys()
    for key, tensor in final.items():
        torch.testing.assert_close(
            tensor, (last[key].double() + previous[key].double()).div(2).to(tensor.dtype)
        )
    assert any(not torch.equal(final[k], last[k]) for k in final)  # it is not simply the last checkpoint
    assert not list(out.glob(".averaged-*"))  # the scratch folder is gone


def test_num_threads_sets_torch_threads_before_the_model_is_built(tmp_path, monkeypatch):
    import torch

    from recipes import pipeline

    seen = []
    build = pipeline.load_or_build_model
    monkeypatch.setattr(
        pipeline, "load_or_build_model", lambda *a: seen.append(torch.get_num_threads()) or build(*a)
    )
    before = torch.get_num_threads()
    extra = ["--num_threads", "1", "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no"]
    extra += ["--do_eval", "false", "--do_predict", "false"]
    try:
        run(translation, "debug_translation.yaml", tmp_path / "out", tmp_path / "cache", *extra)
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
