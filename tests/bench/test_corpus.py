"""The synthetic corpus of the scale benchmark: deterministic, WMT-like lengths, the accidents of real corpora."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from bench.corpus import CorpusSpec, main, write_corpus


def read_jsonl(folder, manifest) -> list[tuple[str, str]]:
    pairs = []
    for (name,) in manifest["files"]:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(folder / name, "rt", encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)["translation"]
                pairs.append((record["de"], record["en"]))
    return pairs


def all_bytes(folder, manifest) -> bytes:
    return b"".join((folder / name).read_bytes() for files in manifest["files"] for name in files)


def test_same_seed_same_bytes_other_seed_other_pairs(tmp_path):
    spec = CorpusSpec(pairs=3000, shards=2, seed=7)
    first = write_corpus(spec, tmp_path / "a")
    again = write_corpus(spec, tmp_path / "b")
    other = write_corpus(CorpusSpec(pairs=3000, shards=2, seed=8), tmp_path / "c")
    assert all_bytes(tmp_path / "a", first) == all_bytes(tmp_path / "b", again)
    assert all_bytes(tmp_path / "a", first) != all_bytes(tmp_path / "c", other)


def test_the_shard_count_only_splits_the_same_pairs(tmp_path):
    # Chunks of 700 pairs: chunk boundaries fall inside shards and shard boundaries inside chunks.
    one = write_corpus(CorpusSpec(pairs=5000, shards=1, format="text", chunk_pairs=700), tmp_path / "one")
    seven = write_corpus(CorpusSpec(pairs=5000, shards=7, format="text", chunk_pairs=700), tmp_path / "seven")
    for side in (0, 1):
        joined = b"".join((tmp_path / "seven" / files[side]).read_bytes() for files in seven["files"])
        assert joined == (tmp_path / "one" / one["files"][0][side]).read_bytes()
    lines = [(tmp_path / "seven" / files[0]).read_bytes().count(b"\n") for files in seven["files"]]
    assert lines == seven["shard_pairs"] and sum(lines) == 5000


def test_lengths_are_wmt_like_and_targets_follow_sources(tmp_path):
    manifest = write_corpus(CorpusSpec(pairs=5000, long_fraction=0, empty_fraction=0), tmp_path)
    pairs = read_jsonl(tmp_path, manifest)
    source = np.array([len(s.split()) for s, _ in pairs])
    target = np.array([len(t.split()) for _, t in pairs])
    assert len(pairs) == 5000 and source.min() >= 1 and target.min() >= 1
    assert 19 <= np.median(source) <= 25 and 22 <= source.mean() <= 29  # log-normal: mean above the median
    assert np.percentile(source, 99) > 2 * np.median(source)  # a tail of long sentences
    assert 0.95 <= np.median(target / source) <= 1.15
    assert np.corrcoef(source, target)[0, 1] > 0.9


def test_words_follow_a_zipfian_vocabulary(tmp_path):
    manifest = write_corpus(CorpusSpec(pairs=4000, long_fraction=0, empty_fraction=0), tmp_path)
    words = [w for s, _ in read_jsonl(tmp_path, manifest) for w in s.split()]
    counts = np.sort(np.unique(words, return_counts=True)[1])[::-1]
    # rank 1 about 10x rank 10 and 100x rank 100 under exponent 1 (with the 2.7 offset: 3.4x and 27x)
    assert 2.5 < counts[0] / counts[9] < 5 and 15 < counts[0] / counts[99] < 45
    assert len(counts) > 5000  # a long tail of rare words, as real text has


def test_long_and_empty_lines_are_present_and_counted(tmp_path):
    spec = CorpusSpec(pairs=2000, shards=2, gzip=True, long_fraction=0.002, empty_fraction=0.002)
    manifest = write_corpus(spec, tmp_path)
    pairs = read_jsonl(tmp_path, manifest)
    long = sum(len(s.split()) > 500 for s, _ in pairs)
    empty_source = sum(s == "" for s, _ in pairs)
    empty_target = sum(t == "" for _, t in pairs)
    assert long == manifest["long_sources"] == 4
    assert empty_source == manifest["empty_sources"] and empty_target == manifest["empty_targets"]
    assert empty_source + empty_target >= 4  # 4 pairs with an empty side (some with both)


def test_parallel_text_files_align_line_by_line(tmp_path):
    manifest = write_corpus(CorpusSpec(pairs=1500, format="text", empty_fraction=0.002), tmp_path)
    source_file, target_file = (tmp_path / name for name in manifest["files"][0])
    assert source_file.name.endswith(".de") and target_file.name.endswith(".en")
    source = source_file.read_text(encoding="utf-8").split("\n")[:-1]
    target = target_file.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(source) == len(target) == 1500
    assert sum(s == "" for s in source) == manifest["empty_sources"]


def test_the_command_line_writes_and_reports(tmp_path, capsys):
    manifest = main(["--pairs", "300", "--shards", "3", "--format", "text", "--out", str(tmp_path)])
    assert "300 pairs in 3 shard(s)" in capsys.readouterr().out
    assert json.loads((tmp_path / "corpus.json").read_text())["files"] == manifest["files"]
    with pytest.raises(ValueError, match="shards"):
        CorpusSpec(pairs=2, shards=3)
