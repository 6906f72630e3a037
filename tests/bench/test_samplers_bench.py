"""The padding-efficiency goals of issue 5, measured on the real Multi30k training set."""

import pytest

from bench.padding_efficiency import GOALS, run


@pytest.mark.slow
def test_padding_efficiency_goals_on_multi30k(shared_data, tmp_path):
    report = run(
        shared_data / "multi30k" / "train.jsonl",
        batch_size=64,
        epochs=1,
        vocab_size=8000,
        seed=0,
        cache_dir=tmp_path,
    )
    results = report["results"]
    for name, goal in GOALS.items():
        assert results[name]["padding_efficiency"] >= goal, (name, results[name])
    assert results["random"]["padding_efficiency"] < results["sortish"]["padding_efficiency"]
    assert abs(results["token_budget"]["mean_batch_size"] - 64) < 1
