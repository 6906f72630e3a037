"""`python -m bench.gpu` (the one-command GPU check) kept working on a machine without a GPU: its tiny mode
end to end on CPU, the parsing of the CUDA test log, and the section harness that records failures and
timeouts and still runs the next section."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from bench.gpu.__main__ import main
from bench.gpu.harness import Results
from bench.gpu.report import render
from bench.gpu.tests import parse_log

HF = (
    importlib.util.find_spec("transformers") is not None
    and importlib.util.find_spec("accelerate") is not None
)


@pytest.mark.skipif(not HF, reason="the comparison needs transformers and accelerate (the 'hf' extra)")
def test_tiny_check_runs_end_to_end_on_cpu(tmp_path):
    code = main(
        [
            "--device",
            "cpu",
            "--tiny",
            "--out",
            str(tmp_path),
            "--sections",
            "environment,peak,training,generation",
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    sections = results["sections"]
    assert list(sections) == ["environment", "peak", "training", "generation"]
    assert {name: entry["status"] for name, entry in sections.items()} == dict.fromkeys(sections, "ok")
    assert sections["peak"]["result"]["bf16"]["tflops"] > 0
    training = sections["training"]["result"]
    assert not training["errors"]
    (row,) = training["rows"].values()
    assert row["ours"] > 0 and row["theirs"] > 0 and row["ratio"] > 0 and row["mfu_ours"] > 0
    assert training["setup"]["batching"]["theirs"]["per_device_train_batch_size"] > 1
    generation = sections["generation"]["result"]
    assert not generation["errors"]
    assert set(generation["rows"]) == {"bf16 greedy", "fp32 greedy", "bf16 2 beams", "fp32 2 beams"}
    assert all(row["ours"] > 0 and row["theirs"] > 0 for row in generation["rows"].values())
    page = (tmp_path / "results.md").read_text()
    assert "## Training throughput" in page and "| bf16 2 beams | sequences/s |" in page


LOG = """\
tests/s2s/test_cuda.py::test_accumulation_equals_one_big_batch[model-loss-cuda] PASSED         [  5%]
tests/s2s/test_cuda.py::test_resume_equals_uninterrupted[cuda] FAILED                          [ 10%]
tests/s2s/test_cuda.py::test_ddp_on_two_gpus_equals_one_process_with_the_doubled_batch SKIPPED [ 15%]
=================================== FAILURES ===================================
___________________ test_resume_equals_uninterrupted[cuda] _____________________
E   AssertionError: losses differ
=========== 1 failed, 1 passed, 1 skipped, 6 deselected in 12.34s ===========
"""


def test_cuda_test_log_is_parsed_into_outcomes():
    parsed = parse_log(LOG)
    assert parsed["outcomes"]["tests/s2s/test_cuda.py::test_resume_equals_uninterrupted[cuda]"] == "FAILED"
    assert parsed["counts"] == {"PASSED": 1, "FAILED": 1, "SKIPPED": 1}
    assert parsed["summary"] == "1 failed, 1 passed, 1 skipped, 6 deselected in 12.34s"
    assert "losses differ" in parsed["failures"]
    cut_short = parse_log(LOG.splitlines()[0])  # a run stopped at its limit: what finished is kept
    assert cut_short["counts"] == {"PASSED": 1} and cut_short["summary"] is None


def test_a_failing_or_slow_section_is_recorded_and_the_next_one_runs(tmp_path):
    results = Results(tmp_path, {"mode": "test", "device": "cpu"}, render)

    def fails(partial):
        partial["before"] = 1
        raise ValueError("broken on purpose")

    def too_slow(partial):
        partial["rows_done"] = 2
        while True:
            time.sleep(0.01)

    results.run("first", fails, cap=5)
    results.run("second", too_slow, cap=0.3)
    results.run("third", lambda partial: {"fine": True}, cap=5)
    written = json.loads((tmp_path / "results.json").read_text())["sections"]
    assert written["first"]["status"] == "failed" and "broken on purpose" in written["first"]["traceback"]
    assert written["first"]["result"] == {"before": 1}
    assert written["second"]["status"] == "timeout" and written["second"]["result"] == {"rows_done": 2}
    assert written["third"] == {
        "status": "ok",
        "result": {"fine": True},
        "seconds": written["third"]["seconds"],
    }
    assert "| second | timeout |" in (tmp_path / "results.md").read_text()
