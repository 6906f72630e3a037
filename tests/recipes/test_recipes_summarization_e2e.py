"""The summarization recipe runs end to end on a few dozen examples with a tiny model."""

import json

import pytest

pytest.importorskip("s2s.seq2seq_trainer", reason="waits for s2s.seq2seq_trainer.Seq2SeqTrainer (issue 3)")

from recipes import summarization  # noqa: E402
from tests.recipes.test_recipes_e2e import check_outputs, run  # noqa: E402


def test_summarization_recipe_end_to_end_with_sortish_sampler(tmp_path, capsys):
    pairs = [
        (v, t)
        for v in ("baked", "bought", "found", "sold")
        for t in ("cake", "car", "book", "dog", "hat", "key")
    ]
    rows = [
        {
            "document": f"Anna: I {verb} the {thing}. Tom: Great, see you at {i}.",
            "summary": f"Anna {verb} the {thing}.",
        }
        for i, (verb, thing) in enumerate(pairs)
    ]
    files = {}
    for split, part in (("train", rows), ("validation", rows[:8]), ("test", rows[-6:])):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(r) + "\n" for r in part))
    results = run(
        summarization,
        "debug_summarization.yaml",
        tmp_path / "out",
        tmp_path / "cache",
        "--train_file", str(files["train"]),
        "--validation_file", str(files["validation"]),
        "--test_file", str(files["test"]),
        "--text_column", "document",
        "--summary_column", "summary",
        "--group_by_length", "false",
        "--sortish_sampler", "true",
    )  # fmt: skip
    check_outputs(tmp_path / "out", results, "rouge1", steps=6, n_test=6)
    assert "Test (6 examples): rouge1" in capsys.readouterr().out
