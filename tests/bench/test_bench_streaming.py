"""bench.streaming runs end to end on a small generated corpus: figures in range, the resume check passes."""

import json

from bench.streaming import main


def test_streaming_bench_on_a_small_corpus(tmp_path):
    out = tmp_path / "streaming.json"
    results = main(
        [
            "--corpus", str(tmp_path / "corpus"),
            "--gzip_corpus", str(tmp_path / "corpus_gz"),
            "--pairs", "6000",
            "--shards", "4",
            "--budgets", "1024", "4096",
            "--efficiency_pairs", "3000",
            "--window_size", "1000",
            "--buffer_size", "1000",
            "--resume_shard", "1",
            "--resume_into_buffer", "3",
            "--resume_max_tokens", "1024",
            "--tokenizer", "words",
            "--output", str(out),
        ]
    )  # fmt: skip
    assert json.loads(out.read_text()) == results
    for budget, figures in results["efficiency"].items():
        assert 0.5 < figures["padding_efficiency"] <= 1.0
        assert figures["largest_batch_cost"] <= int(budget)
        assert figures["examples"] >= 3000
    for kind in ("plain", "gzip"):  # the script itself checks the resumed batch against the uninterrupted one
        state = results["resume"][kind]["state"]
        assert state["shard"] >= 1 and state["batches"] >= 3
    assert results["resume"]["gzip"]["state"]["position"]["bytes"] is None  # gzip: no seek
