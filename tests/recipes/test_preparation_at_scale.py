"""Preparation that scales: shards read once into a memory-mapped Arrow cache, tokenization reused on the next
run, lengths read from the stored ids without touching examples, and bad lines skipped only when asked,
counted and reported."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest

from recipes import preprocessing
from recipes.arguments import DataArguments
from recipes.data import load_splits
from recipes.text_files import READERS, DataFileError, load_text_pairs
from tests.recipes.test_text_files import TRANSLATION, translation_records, write_jsonl

SHARD_PAIRS = [[(f"Satz {s}.{i} hier.", f"Sentence {s}.{i} here.") for i in range(400)] for s in range(3)]


def write_shards(folder: Path, *, bad: dict[tuple[int, int], str] | None = None) -> list[Path]:
    """Three JSONL shards of 400 pairs; `bad` replaces line (shard, index) by the given raw text."""
    paths = []
    for shard, pairs in enumerate(SHARD_PAIRS):
        lines = [json.dumps(r, ensure_ascii=False) for r in translation_records(pairs)]
        for (bad_shard, index), text in (bad or {}).items():
            if bad_shard == shard:
                lines[index] = text
        path = folder / f"train-{shard:05d}.jsonl.gz"
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))
        paths.append(path)
    return paths


@pytest.fixture
def load(tmp_path):
    def _load(data, **kwargs):
        return load_text_pairs(data, cache_dir=tmp_path / "cache", **TRANSLATION, **kwargs)

    return _load


class CountingReader:
    """Wraps a reader of the READERS table and counts the files it is asked to read."""

    def __init__(self, reader):
        self.reader, self.calls = reader, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.reader(*args, **kwargs)


# ------------------------------------------------------------------------------------------- shards and cache
def test_a_glob_reads_the_shards_in_name_order(load, tmp_path):
    write_shards(tmp_path)
    dataset = load(str(tmp_path / "train-*.jsonl.gz"))
    assert dataset["source"] == [s for pairs in SHARD_PAIRS for s, _ in pairs]
    with pytest.raises(DataFileError, match="no file matches"):
        load(str(tmp_path / "valid-*.jsonl"))


def test_max_samples_stops_inside_a_later_shard(load, tmp_path):
    write_shards(tmp_path, bad={(2, 0): "{broken"})  # never read: the limit is reached before
    dataset = load(str(tmp_path / "train-*.jsonl.gz"), max_samples=650)
    assert len(dataset) == 650 and dataset["source"][-1] == SHARD_PAIRS[1][249][0]


def test_parallel_text_shards_pair_by_name(load, tmp_path):
    for shard in range(2):
        (tmp_path / f"part-{shard}.de").write_text(f"Hund {shard}.\nKatze {shard}.\n", encoding="utf-8")
        (tmp_path / f"part-{shard}.en").write_text(f"Dog {shard}.\nCat {shard}.\n", encoding="utf-8")
    dataset = load_text_pairs(str(tmp_path / "part-*"), source_field="de", target_field="en",
                              cache_dir=tmp_path / "cache")  # fmt: skip
    assert list(zip(dataset["source"], dataset["target"])) == [
        ("Hund 0.", "Dog 0."), ("Katze 0.", "Cat 0."), ("Hund 1.", "Dog 1."), ("Katze 1.", "Cat 1."),
    ]  # fmt: skip


def test_the_second_load_opens_the_arrow_cache_without_reading(load, tmp_path, monkeypatch):
    write_shards(tmp_path)
    counting = CountingReader(READERS["json"])
    monkeypatch.setitem(READERS, "json", counting)
    first = load(str(tmp_path / "train-*.jsonl.gz"))
    assert counting.calls == 3
    again = load(str(tmp_path / "train-*.jsonl.gz"))
    assert counting.calls == 3  # no shard read again
    assert again._fingerprint == first._fingerprint and again["target"] == first["target"]
    # memory-mapped from the cache folder, not held in the process
    (cache_file,) = {f["filename"] for f in again.cache_files}
    assert Path(cache_file).is_relative_to(tmp_path / "cache")
    assert isinstance(again.data, datasets.table.MemoryMappedTable)
    # other options are another cache: the reader runs again
    load(str(tmp_path / "train-*.jsonl.gz"), max_samples=10)
    assert counting.calls == 4


def test_an_edited_corpus_replaces_its_cache_instead_of_piling_up(load, tmp_path):
    paths = write_shards(tmp_path)
    load(str(tmp_path / "train-*.jsonl.gz"))
    load(str(tmp_path / "train-*.jsonl.gz"), max_samples=5)  # read another way: a cache of its own
    caches = tmp_path / "cache" / "s2s_text_pairs"
    before = {p.name for p in caches.iterdir()}
    assert len(before) == 2
    paths[1].write_bytes(gzip.compress(b'{"translation": {"de": "Neu.", "en": "New."}}\n'))
    edited = load(str(tmp_path / "train-*.jsonl.gz"))
    assert len(edited) == 801 and "Neu." in edited["source"]
    after = {p.name for p in caches.iterdir()}
    assert len(after) == 2 and len(after - before) == 1  # the full read's old cache went, max_samples' stayed


def test_a_load_that_fails_leaves_no_cache_behind(load, tmp_path):
    write_shards(tmp_path, bad={(1, 3): "{broken"})
    with pytest.raises(DataFileError):
        load(str(tmp_path / "train-*.jsonl.gz"))
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == []


# ------------------------------------------------------------------------------------------- bad lines
BAD_LINES = {
    (0, 5): "{not json",
    (1, 399): '{"translation": {"de": "nur Deutsch"}}',
    (2, 17): '{"translation": {"de": 42, "en": "A number."}}',
    (2, 18): "[1, 2]",
}


def test_a_bad_line_deep_in_a_shard_names_the_file_and_line(load, tmp_path):
    write_shards(tmp_path, bad={(1, 399): "{not json"})
    with pytest.raises(DataFileError) as exc:
        load(str(tmp_path / "train-*.jsonl.gz"))
    assert exc.value.path.endswith("train-00001.jsonl.gz") and exc.value.line == 400
    assert "malformed JSON" in str(exc.value) and "--skip_bad_lines" in str(exc.value)


def test_skip_bad_lines_skips_counts_and_warns_with_locations(load, tmp_path, caplog):
    write_shards(tmp_path, bad=BAD_LINES)
    with caplog.at_level(logging.WARNING, logger="recipes.text_files"):
        dataset = load(str(tmp_path / "train-*.jsonl.gz"), skip_bad_lines=True)
    assert len(dataset) == 1200 - len(BAD_LINES)
    assert "Satz 0.5 hier." not in dataset["source"] and "Satz 0.6 hier." in dataset["source"]
    (warning,) = [r.getMessage() for r in caplog.records if "bad line" in r.getMessage()]
    assert "skipped 4 bad line(s)" in warning and f"kept {1200 - 4}" in warning
    assert "train-00000.jsonl.gz: 1" in warning and "train-00002.jsonl.gz: 2" in warning
    assert "train-00000.jsonl.gz:6: malformed JSON" in warning
    assert "train-00001.jsonl.gz:400 (field 'translation.en'): missing field" in warning
    assert "train-00002.jsonl.gz:18 (field 'translation.de')" in warning

    caplog.clear()  # the cached load repeats the warning: skipped lines are never silent
    with caplog.at_level(logging.WARNING, logger="recipes.text_files"):
        again = load(str(tmp_path / "train-*.jsonl.gz"), skip_bad_lines=True)
    assert len(again) == len(dataset) and "skipped 4 bad line(s)" in caplog.text


def test_skip_bad_lines_in_csv_and_undecodable_parallel_text(tmp_path, caplog):
    (tmp_path / "d.csv").write_text('de,en\n"Hund","Dog"\n"Katze","Cat","extra"\n"Haus","House"\n')
    (tmp_path / "p.de").write_bytes(b"Hund.\n" + b"Caf\xe9.\n" + b"Haus.\n")
    (tmp_path / "p.en").write_text("Dog.\nCafe.\nHouse.\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="recipes.text_files"):
        rows = load_text_pairs(tmp_path / "d.csv", source_field="de", target_field="en",
                               skip_bad_lines=True, cache_dir=tmp_path / "cache")  # fmt: skip
        text = load_text_pairs(tmp_path / "p", source_field="de", target_field="en",
                               skip_bad_lines=True, cache_dir=tmp_path / "cache")  # fmt: skip
    assert rows["source"] == ["Hund", "Haus"]
    # the undecodable line drops its pair: the files stay aligned
    assert list(zip(text["source"], text["target"])) == [("Hund.", "Dog."), ("Haus.", "House.")]
    assert (
        "d.csv:3: the row has 3 fields" in caplog.text
        and "p.de:2: bytes that are not valid UTF-8" in caplog.text
    )


def test_whole_file_problems_still_raise_with_skip_bad_lines(load, tmp_path):
    path = tmp_path / "array.jsonl"
    path.write_text(json.dumps(translation_records(), indent=1) + "\n")  # a pretty-printed array
    with pytest.raises(DataFileError, match="JSON array"):
        load(path, skip_bad_lines=True)
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(gzip.compress(b'{"translation": {"de": "a", "en": "b"}}\n' * 50)[:-12])
    with pytest.raises(DataFileError, match="gzip"):
        load(corrupt, skip_bad_lines=True)


def test_the_recipe_argument_reaches_the_loader(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", translation_records() + ["{broken"])
    data_args = DataArguments(train_file=str(path), source_lang="de", target_lang="en",
                              dataset_cache_dir=str(tmp_path / "cache"))  # fmt: skip
    training_args = SimpleNamespace(do_train=True, do_eval=False, do_predict=False, eval_strategy="no")
    with pytest.raises(DataFileError, match="skip_bad_lines"):
        load_splits("translation", data_args, training_args)
    data_args.skip_bad_lines = True
    assert len(load_splits("translation", data_args, training_args)["train"]) == 3


# ------------------------------------------------------------------------------------------- tokenization
@pytest.fixture(scope="module")
def tokenizer():
    from s2s.tokenization import train_joint_tokenizer

    pairs = [pair for shard in SHARD_PAIRS for pair in shard]
    return train_joint_tokenizer(pairs, vocab_size=80, hard_vocab_limit=False)


def test_the_second_run_reuses_the_tokenized_cache(load, tmp_path, tokenizer, monkeypatch):
    write_shards(tmp_path)
    data_args = DataArguments(max_source_length=8, max_target_length=8)
    calls = []
    real = preprocessing.tokenize_batch

    def counting(batch, **kwargs):
        calls.append(len(batch["source"]))
        return real(batch, **kwargs)

    monkeypatch.setattr(preprocessing, "tokenize_batch", counting)
    first = preprocessing.tokenize_splits(
        {"train": load(str(tmp_path / "train-*.jsonl.gz"))}, tokenizer, data_args
    )
    assert sum(calls) == 1200
    # a new run: the raw text comes from its Arrow cache, the ids from the map's cache; nothing is tokenized
    again = preprocessing.tokenize_splits(
        {"train": load(str(tmp_path / "train-*.jsonl.gz"))}, tokenizer, data_args
    )
    assert sum(calls) == 1200
    assert again["train"]["input_ids"] == first["train"]["input_ids"]
    # the tokenized file sits beside the text's, and stores ids as int32 and the mask as int8
    assert again["train"].features["input_ids"].feature.dtype == "int32"
    assert again["train"].features["attention_mask"].feature.dtype == "int8"
    # another length limit is another cache
    preprocessing.tokenize_splits({"train": load(str(tmp_path / "train-*.jsonl.gz"))}, tokenizer,
                                  DataArguments(max_source_length=9, max_target_length=8))  # fmt: skip
    assert sum(calls) == 2400


def test_lengths_come_from_the_stored_ids_without_reading_examples(load, tmp_path, tokenizer, monkeypatch):
    """The batching reads every example's lengths from the `length` column the map stored, one vectorised
    read: no example is materialised (millions of them would take minutes)."""
    from s2s.dataloaders import dataset_lengths

    write_shards(tmp_path)
    data_args = DataArguments(max_source_length=64, max_target_length=64)
    tokenized = preprocessing.tokenize_splits({"train": load(str(tmp_path / "train-*.jsonl.gz"))}, tokenizer,
                                              data_args)["train"]  # fmt: skip
    expected = np.array([[len(s), len(t)] for s, t in zip(tokenized["input_ids"], tokenized["labels"])])
    original = datasets.Dataset.__getitem__

    def no_rows(self, key):
        if not isinstance(key, str):
            raise AssertionError(f"an example was read ({key!r}) to compute lengths")
        return original(self, key)

    monkeypatch.setattr(datasets.Dataset, "__getitem__", no_rows)
    lengths = dataset_lengths(tokenized, length_column_name="length")
    assert lengths.shape == (1200, 2) and (lengths == expected).all()
