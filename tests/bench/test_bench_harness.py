"""The benchmark's measuring machinery: alternation, paired ratios, FLOP counts, peak, capped subprocesses."""

from __future__ import annotations

import pytest
import torch

from bench.common import alternate, compare, run_json_subprocess
from bench.data import TokenCounter, fixed_batches, pad_batch
from bench.models import training_flops
from bench.peak import run as measure_peak
from bench.report import markdown

SIZE = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 2, "num_heads": 2, "ffn_dim": 64}


def test_alternate_runs_the_sides_in_turn_and_skips_a_missing_one():
    calls = []

    def runner(name, value):
        def run():
            calls.append(name)
            return {"value": value}

        return run

    runs = alternate({"ours": runner("ours", 2.0), "theirs": runner("theirs", 1.0)}, 3, log=lambda _: None)
    assert calls == ["ours", "theirs"] * 3
    assert [r["value"] for r in runs["ours"]] == [2.0, 2.0, 2.0]

    calls.clear()
    runs = alternate({"ours": None, "theirs": runner("theirs", 1.0)}, 2, log=lambda _: None)
    assert calls == ["theirs", "theirs"] and "ours" not in runs


def test_compare_takes_the_median_of_paired_ratios():
    ours = [{"value": 2.0, "mfu": 0.1}, {"value": 6.0, "mfu": 0.3}, {"value": 9.0, "mfu": 0.2}]
    theirs = [{"value": 1.0}, {"value": 2.0}, {"value": 9.0}]
    row = compare(ours, theirs, unit="tokens/s", goal=2.0)
    # pairs 2/1, 6/2, 9/9 -> median 2.0; the ratio of medians (6/2 = 3) would hide the third pair
    assert row["ratio"] == pytest.approx(2.0)
    assert row["ours"] == 6.0 and row["theirs"] == 2.0
    assert row["mfu_ours"] == pytest.approx(0.2) and "mfu_theirs" not in row
    assert row["goal"] == 2.0

    lower = compare([{"value": 100.0}], [{"value": 300.0}], unit="MiB", higher_is_better=False)
    assert lower["ratio"] == pytest.approx(3.0)  # above 1 still means we are ahead
    assert compare([{"value": 1.0}], None, unit="x")["ratio"] is None


def test_training_flops_by_hand():
    size = {"d_model": 2, "encoder_layers": 1, "decoder_layers": 1, "num_heads": 1, "ffn_dim": 4}
    # source token: encoder 4*4 + 2*2*4 = 32, cross-attention keys/values 2*4 = 8 -> 40 MACs
    assert training_flops(size, vocab_size=10, source_tokens=1, target_tokens=0) == 3 * 2 * 40
    # target token: 6*4 + 2*2*4 = 40 in the decoder layer, 2*10 = 20 output projection -> 60 MACs
    assert training_flops(size, vocab_size=10, source_tokens=0, target_tokens=1) == 3 * 2 * 60


def test_training_flops_agree_with_torch_flop_counter():
    """The hand count matches torch's own count of the model's forward matmuls (x3 for forward+backward),
    up to the attention scores it leaves out."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench.models import build_ours

    model = build_ours(SIZE, vocab_size=500).eval()
    batch = {
        "input_ids": torch.randint(4, 500, (4, 6)),
        "labels": torch.randint(4, 500, (4, 5)),
    }
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**batch)
    expected = training_flops(SIZE, vocab_size=500, source_tokens=24, target_tokens=20) / 3
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.1)


def test_fixed_batches_are_deterministic_and_padded_like_the_collators():
    features = [{"input_ids": [5] * n + [3], "labels": [6] * (n % 3) + [3]} for n in range(1, 12)]
    first = fixed_batches(features, batch_size=4, count=5, seed=7)
    again = fixed_batches(features, batch_size=4, count=5, seed=7)
    assert len(first) == 5  # more batches than one pass over 11 examples: the order is cycled
    for a, b in zip(first, again):
        assert all(torch.equal(a[k], b[k]) for k in a)
    batch = pad_batch([features[0], features[2]])  # sources [5, 3] and [5, 5, 5, 3]; targets [6, 3] and [3]
    assert batch["input_ids"].tolist() == [[5, 3, 0, 0], [5, 5, 5, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[6, 3], [3, -100]]


def test_token_counter_counts_real_tokens_in_order():
    features = [{"input_ids": [5, 5, 3], "labels": [6, 3]}, {"input_ids": [5, 3], "labels": [6, 6, 6, 3]}]
    counter = TokenCounter(pad_batch)
    counter(features[:1])
    counter(features)
    assert counter.source == [3, 5] and counter.target == [2, 6]


def test_peak_measures_both_precisions():
    result = measure_peak(size=64, runs=2)
    for precision in ("fp32", "bf16"):
        assert result[precision]["gflops"] > 0 and len(result[precision]["runs"]) == 2
    assert result["bf16_over_fp32"] > 0
    with pytest.raises(ValueError, match="size and runs"):
        measure_peak(size=0, runs=1)


def test_a_capped_subprocess_fails_alone():
    # 40000^2 float32 = 6 GiB: more than the 2 GiB cap, so the child fails and the parent gets an error
    capped = run_json_subprocess("bench.peak", ["--size", "40000", "--runs", "1"], timeout=120, cap_gb=2)
    assert "error" in capped and "exit code" in capped["error"]


def test_markdown_marks_goals_and_capped_cells():
    results = {
        "meta": {
            "command": "python -m bench",
            "cpu": "cpu",
            "cores": 2,
            "threads": 2,
            "torch": "2",
            "date": "today",
            "total_minutes": 1.0,
            "profile": "full",
            "load_average_before": (0.1, 0, 0),
        },
        "peak": None,
        "comparisons": {
            "speed": {
                "title": "Speed",
                "rows": {
                    "bf16": compare([{"value": 3.0}], [{"value": 1.0}], unit="tokens/s", goal=2.0),
                    "fp32": compare([{"value": 1.0}], [{"value": 1.0}], unit="tokens/s", goal=2.0),
                },
            },
            "memory": {
                "title": "Memory",
                "rows": {"big": {"unit": "MiB", "ours": 10.0, "theirs": "> 8 GiB cap"}},
            },
            "broken": {"title": "Broken", "error": "RuntimeError: boom"},
        },
        "skipped": {"generation": "not there yet"},
    }
    text = markdown(results)
    assert "| bf16 | tokens/s | 3.0 | 1.0 | 3.00x (goal 2x: met) |" in text
    assert "(goal 2x: MISSED)" in text
    assert "> 8 GiB cap" in text and "RuntimeError: boom" in text and "generation: not there yet" in text


def test_memory_row_reports_a_capped_side_without_a_number():
    from bench.eval_memory import _row

    row = _row(
        {
            "ours": [{"value": 900.0, "before_eval_mb": 500.0}],
            "theirs": [{"error": "exit code 1: MemoryError"}],
        },
        cap_gb=14,
    )
    assert row["ours"] == 900.0 and row["theirs"] == "> 14 GiB cap" and row["ratio"] is None
    assert row["theirs_error"].endswith("MemoryError")
    both = _row(
        {
            "ours": [{"value": 100.0, "before_eval_mb": 1.0}],
            "theirs": [{"value": 300.0, "before_eval_mb": 1.0}],
        },
        cap_gb=1,
    )
    assert both["ratio"] == pytest.approx(3.0)  # theirs / ours: above 1, we use less


def test_a_partial_run_replaces_its_comparisons_and_keeps_the_others():
    from bench.report import merge

    previous = {
        "meta": {"command": "python -m bench", "date": "monday"},
        "peak": {"old": True},
        "comparisons": {"a": {"rows": {"x": 1}}, "b": {"rows": {"x": 2}}},
        "skipped": {"c": "missing", "b": "old reason"},
    }
    update = {
        "meta": {"command": "python -m bench --only b"},
        "peak": {"new": True},
        "comparisons": {"b": {"rows": {"x": 3}}},
        "skipped": {},
    }
    merged = merge(previous, update)
    assert merged["comparisons"] == {"a": {"rows": {"x": 1}}, "b": {"rows": {"x": 3}}}
    assert merged["skipped"] == {"c": "missing"} and merged["peak"] == {"new": True}
    assert merged["meta"]["earlier_runs"][0]["date"] == "monday"
