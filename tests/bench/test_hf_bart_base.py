"""`python -m bench.hf_bart_base` end to end at a tiny size: a saved BART folder, imported, both sides measured."""

from __future__ import annotations

import json

import pytest
import torch

from bench.common import PROFILES, native_precisions
from bench.hf_bart_base import SETUPS, main, make_training_batches, run

pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on 2 busy cores run far faster on one thread (no OpenMP barriers to wait at)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("bf16_native", [True, False])
def test_smoke_run_writes_both_sides_figures_and_checks(tmp_path, monkeypatch, bf16_native):
    monkeypatch.setattr("s2s.precision.bf16_is_native", lambda *, on_cuda: bf16_native)
    output = tmp_path / "hf_bart_base.json"
    main(["--setup", "smoke", "--output", str(output)])
    result = json.loads(output.read_text())

    assert {"title", "setup", "rows", "checks", "command", "peak", "load_average_before"} <= set(result)
    assert result["setup"]["model"]["d_model"] == 32 and result["setup"]["vocab_size"] == 500
    # bf16 where the CPU has bf16 instructions; elsewhere fp32 only, training included
    precisions = ("fp32", "bf16") if bf16_native else ("fp32",)
    assert native_precisions(("fp32", "bf16")) == precisions
    expected_rows = {f"training {precisions[-1]}"} | {
        f"generation {precision} {mode}" for precision in precisions for mode in ("greedy", "4 beams")
    }
    assert set(result["rows"]) == expected_rows
    for name, row in result["rows"].items():
        assert row["ours"] > 0 and row["theirs"] > 0, name
        assert len(row["ours_runs"]) == len(row["theirs_runs"]) == 1, name
        assert row["ratio"] == pytest.approx(row["ours"] / row["theirs"]), name
        assert row["goal"] == (1.5 if name.startswith("training") else 2.0)

    # the same weights give the same loss before any step (fp32 exactly up to summation order)
    losses = result["checks"]["step0_loss"]
    assert losses["fp32"]["abs_difference"] < 1e-5
    if "bf16" in precisions:
        assert losses["bf16"]["abs_difference"] < 1e-2
    # both sides decoded every source; in fp32 greedy they found the same tokens
    agreement = result["checks"]["generation_agreement"]
    assert set(agreement) == {f"{p} {m}" for p in precisions for m in ("greedy", "4 beams")}
    assert all(entry["sequences"] == SETUPS["smoke"].generation_sources for entry in agreement.values())
    assert agreement["fp32 greedy"]["identical"]
    assert set(result["checks"]["engine_paths"]) == {
        "decode_attention_kernel",
        "packed_weights_fp32",
        "packed_weights_bf16",
    }


def test_training_batches_are_padded_with_ignored_labels():
    batches = make_training_batches(SETUPS["smoke"], 3)
    for batch in batches:
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        assert ids.shape == labels.shape == (2, 8)
        assert (ids[mask == 0] == 1).all() and (ids[mask == 1] != 1).all()  # BART's pad id is 1
        assert (labels >= 0).sum(dim=1).min() >= 6  # at least 3/4 of the longest target
    assert any((b["attention_mask"] == 0).any() or (b["labels"] == -100).any() for b in batches)


def test_suite_entry_skips_without_transformers():
    result = run(PROFILES["smoke"], toolkits={"ours": object()})
    assert "transformers" in result["skipped"]
