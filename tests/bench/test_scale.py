"""bench.scale's parts on a corpus of a few hundred pairs: each side's run records its stages and steps, the
memory sampler sees the child's tree, and the summary reads the runs as the README reports them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.corpus import CorpusSpec, Generator, write_corpus
from bench.scale import TreeMemorySampler, run_hf, run_ours, summarize


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from s2s.tokenization import train_joint_tokenizer

    folder = tmp_path_factory.mktemp("scale")
    spec = CorpusSpec(pairs=400, shards=2, vocab_size=500, empty_fraction=0.005)
    write_corpus(spec, folder / "c")
    words = [f"w{i}" for i in range(50)] + ["der", "the", ",", "."]
    tokenizer = train_joint_tokenizer(
        [(" ".join(words), " ".join(reversed(words)))] * 20, vocab_size=300, backend="bpe"
    )
    tokenizer.save_pretrained(folder / "tok")
    return folder, len(Generator(spec).empty_pairs)


def options(folder, side: str) -> dict:
    return {
        "corpus": str(folder / "c"),
        "tokenizer": str(folder / "tok"),
        "cache": str(folder / f"{side}-cache"),
        "output": str(folder / f"{side}-out"),
        "num_proc": 1,
        "steps": 2,
        "budget": 2048,
        "batch_size": 8,
    }


@pytest.mark.slow  # a real (tiny) training run: ~10 s of imports, optimizer set-up and first steps
def test_our_run_records_its_stages_and_each_update(inputs):
    folder, with_an_empty_side = inputs
    cold = run_ours(options(folder, "ours"))
    assert with_an_empty_side == 2 and cold["pairs"] == 400 - 2  # the recipe drops them (drop_empty_examples)
    assert set(cold["stages_s"]) >= {"read", "tokenize", "lengths", "train"}
    assert [s["step"] for s in cold["steps"]] == [1, 2]
    assert cold["steps"][0]["since_launch_s"] < cold["steps"][1]["since_launch_s"]
    assert all(s["rss_mb"] >= s["anon_mb"] > 0 for s in cold["steps"])
    assert cold["mean_cost"] > 1


@pytest.mark.slow
def test_their_run_records_its_stages_and_each_update(inputs):
    pytest.importorskip("transformers")
    folder, _ = inputs
    result = run_hf(options(folder, "hf"))
    assert result["pairs"] == 400 and [s["step"] for s in result["steps"]] == [1, 2]


def test_the_sampler_sees_the_memory_of_child_processes():
    # A parent that holds little starts a child that holds 150 MB: the tree's peak includes the child.
    code = (
        "import subprocess, sys; subprocess.run([sys.executable, '-c', "
        "'import time; x = bytearray(150 * 2**20); time.sleep(1.5)'])"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    sampler = TreeMemorySampler(process.pid, interval=0.05)
    sampler.start()
    process.wait()
    sampler.stop()
    assert sampler.peak_anon_kb > 150 * 1024 and sampler.peak_rss_kb >= sampler.peak_anon_kb
    assert 150 * 1024 < sampler.peak_pss_kb <= sampler.peak_rss_kb  # memory of its own counts whole in PSS


def test_pages_of_a_file_two_processes_map_count_once_in_the_pss_sum(tmp_path):
    # Parent and child both map the same 96 MB file and read every page: summed RSS counts those pages twice,
    # summed PSS once.
    path = tmp_path / "mapped.bin"
    path.write_bytes(b"\1" * (96 * 2**20))
    touch = (
        f"import mmap, time; f = open({str(path)!r}, 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); "
        "s = sum(m[i] for i in range(0, len(m), 4096)); time.sleep(2.5)"
    )
    code = f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {touch!r}]); exec({touch!r}); p.wait()"
    process = subprocess.Popen([sys.executable, "-c", code])
    sampler = TreeMemorySampler(process.pid, interval=0.05)
    sampler.start()
    process.wait()
    sampler.stop()
    file_kb = 96 * 1024
    assert sampler.peak_rss_kb > 2 * file_kb * 0.9
    assert sampler.peak_pss_kb < sampler.peak_rss_kb - file_kb * 0.8


def test_the_summary_reads_preparation_first_step_and_training_memory():
    def run(stages, first_step, rss):
        steps = [{"step": i + 1, "since_launch_s": first_step + i, "rss_mb": r, "anon_mb": r / 2}
                 for i, r in enumerate(rss)]  # fmt: skip
        return {"stages_s": stages, "steps": steps, "pairs": 1000, "peak_tree_rss_mb": 900,
                "peak_tree_anon_mb": 500, "cache_bytes": 3 * 2**20}  # fmt: skip

    summary = summarize(
        {
            "cold": run({"read": 1.0, "tokenize": 3.0, "lengths": 1.0, "train": 9.0}, 20.0, [100, 120]),
            "cached": run({"read": 0.1, "train": 9.0}, 4.5, [90, 130, 110]),
        },
        batch_size=None,
    )
    assert summary["preparation_s"] == 5.0 and summary["preparation_pairs_per_s"] == 200
    assert summary["cached_first_step_s"] == 4.5 and summary["cold_first_step_s"] == 20.0
    assert summary["training_rss_mb_max"] == 130 and summary["cache_disk_mb"] == 3
