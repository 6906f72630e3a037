"""`python -m bench` end to end on the smoke profile (tiny models, a few steps), and one memory child.

Sides whose toolkit is missing (transformers, or s2s.Seq2SeqTrainer while it is being written) are left
empty by the suite; the test checks whatever could run, and that at least one side did.
"""

from __future__ import annotations

import importlib.util
import json
from argparse import Namespace

import pytest
import torch

from bench.__main__ import main
from bench.data import DATA, load_bench_data
from bench.eval_memory import child
from bench.toolkits import available_toolkits

COMPARISONS = (
    "trainer_throughput",
    "eval_generate",
    "generation",
    "model_training",
    "trainer_overhead",
    "time_to_quality",
)
TOOLKITS, MISSING = available_toolkits()
pytestmark = pytest.mark.skipif(not TOOLKITS, reason=f"neither toolkit imports: {MISSING}")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on 2 busy cores run far faster on one thread (no OpenMP barriers to wait at)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-cache")


def test_smoke_suite_writes_positive_figures(tmp_path, cache):
    code = main(
        ["--profile", "smoke", "--only", *COMPARISONS, "--output-dir", str(tmp_path), "--cache", str(cache)]
        + ["--in-process"]  # one process: the isolation costs a fresh interpreter per comparison
    )
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"meta", "peak", "comparisons", "skipped"}
    assert results["meta"]["profile"] == "smoke" and results["meta"]["threads"] == 1
    assert results["peak"]["fp32"]["gflops"] > 0 and results["peak"]["bf16"]["gflops"] > 0
    assert set(results["comparisons"]) == set(COMPARISONS)

    sides_seen = set()
    for name, comparison in results["comparisons"].items():
        assert "error" not in comparison, f"{name}: {comparison.get('error')}"
        assert comparison["rows"], name
        for setting, row in comparison["rows"].items():
            assert row["unit"]
            for side in ("ours", "theirs"):
                if row[side] is None:
                    continue
                sides_seen.add(side)
                if row["unit"].endswith("BLEU"):
                    assert 0 <= row[side] <= 100, (name, setting, side)
                else:
                    assert row[side] > 0, (name, setting, side)
            if row["ours"] is not None and row["theirs"] is not None and not row["unit"].endswith("BLEU"):
                assert row["ratio"] > 0
    assert sides_seen
    throughput = results["comparisons"]["trainer_throughput"]["rows"]
    assert set(throughput) == {"fp32 identical batches", "fp32 best batching"}
    for row in throughput.values():
        for side in ("ours", "theirs"):
            if row[side] is not None:
                assert row[f"mfu_{side}"] > 0  # measured against the peak of the same run

    generation = results["comparisons"]["generation"]
    assert set(generation["rows"]) == {"fp32 greedy", "fp32 2 beams"}  # smoke: fp32, beams (1, 2)
    for row in [*generation["rows"].values(), *results["comparisons"]["model_training"]["rows"].values()]:
        for side in ("ours", "theirs"):
            if row[side] is not None:
                assert row[f"mfu_{side}"] > 0
    if "theirs" in TOOLKITS and importlib.util.find_spec("ctranslate2"):
        ct2 = generation["ctranslate2"]["rows"]
        assert {"greedy float32", "2 beams float32"} <= set(ct2)
        for row in ct2.values():
            assert row["ctranslate2"] > 0 and row["mfu_ctranslate2"] > 0 and row["ratio_theirs_fp32"] > 0

    table = (tmp_path / "results.md").read_text()
    assert "| fp32 identical batches | target tokens/s |" in table
    assert "| fp32 greedy | sequences/s |" in table
    assert "Time to quality" in table


@pytest.mark.parametrize("preprocess", ["argmax", "none"])
def test_memory_child_measures_an_evaluation(cache, preprocess):
    """The body of one memory subprocess, run in this process: it evaluates and reports its peak RSS."""
    data = load_bench_data(vocab_size=400, train_examples=400, cache=cache)
    side = "ours" if "ours" in TOOLKITS else "theirs"
    args = Namespace(
        side=side,
        preprocess=preprocess,
        examples=16,
        vocab_size=1000,
        target_length=6,
        batch_size=8,
        model=json.dumps(
            {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "num_heads": 2, "ffn_dim": 32}
        ),
        tokenizer_dir=data.tokenizer_dir,
        data=DATA / "validation.jsonl.gz",
    )
    measured = child(args)
    assert measured["value"] >= measured["before_eval_mb"] > 0  # peak since start >= RSS before evaluate
    assert 0 <= measured["token_accuracy"] <= 1


def test_an_isolated_comparison_runs_in_a_child_with_this_process_thread_count(cache, monkeypatch):
    """`python -m bench` runs each comparison in a fresh process (bench/isolation.py): the result comes back
    whole, the child used the parent's number of threads (1 here, from the fixture), and nothing of this
    process's state reaches it (a sabotaged `run` here is not the one the child calls)."""
    from bench.__main__ import OWN
    from bench.common import PROFILES
    from bench.isolation import run_isolated

    def sabotaged(*args, **kwargs):
        raise AssertionError("ran in the parent process")

    monkeypatch.setitem(OWN, "model_training", sabotaged)
    peak = {"fp32": {"gflops": 10.0}, "bf16": {"gflops": 20.0}}
    result = run_isolated("model_training", PROFILES["smoke"], cache=cache, peak=peak)
    assert result["setup"]["threads"] == 1
    assert result["rows"] and all(
        row["ours"] > 0 for row in result["rows"].values() if row["ours"] is not None
    )


def test_an_isolated_comparison_that_fails_raises_with_the_child_traceback(cache):
    from bench.common import PROFILES
    from bench.isolation import run_isolated

    with pytest.raises(RuntimeError, match="no_such_comparison, in its own process:(.|\n)*KeyError"):
        run_isolated("no_such_comparison", PROFILES["smoke"], cache=cache, peak=None)
