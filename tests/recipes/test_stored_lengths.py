"""The tokenization map stores each example's (source, target) lengths once, after truncation, in a `length`
column; the trainer's token-budget sampler reads that column (no pass over the ids, no example read), and the
model never receives it."""

import datasets
import numpy as np
import pytest

from recipes import preprocessing
from recipes.arguments import DataArguments
from s2s.dataloaders import dataset_lengths
from samplers import lengths as sampler_lengths


@pytest.fixture(scope="module")
def tokenizer():
    from s2s.tokenization import train_joint_tokenizer

    pairs = [("ein kleiner hund läuft", "a small dog runs"), ("zwei große katzen", "two big cats")] * 20
    return train_joint_tokenizer(pairs, vocab_size=60, hard_vocab_limit=False)


def raw_pairs() -> datasets.Dataset:
    sources = ["ein kleiner hund läuft " * (1 + i % 5) for i in range(30)]
    targets = ["a small dog runs " * (1 + i % 3) for i in range(30)]
    return datasets.Dataset.from_dict({"source": sources, "target": targets})


def test_the_map_stores_the_lengths_after_truncation(tokenizer):
    data_args = DataArguments(max_source_length=9, max_target_length=7)
    train = preprocessing.tokenize_splits({"train": raw_pairs()}, tokenizer, data_args)["train"]
    assert train.features["length"] == datasets.Sequence(datasets.Value("int32"), length=2)
    ids = [[len(s), len(t)] for s, t in zip(train["input_ids"], train["labels"], strict=True)]
    assert train["length"] == ids
    assert max(s for s, _ in ids) == 9 and max(t for _, t in ids) == 7  # the cut lengths, not the raw ones


def test_the_sampler_lengths_are_read_from_the_column_not_measured(tokenizer, monkeypatch):
    data_args = DataArguments(max_source_length=64, max_target_length=64)
    train = preprocessing.tokenize_splits({"train": raw_pairs()}, tokenizer, data_args)["train"]
    measured = []
    real = sampler_lengths._arrow_lengths
    monkeypatch.setattr(sampler_lengths, "_arrow_lengths", lambda *a: measured.append(a[1]) or real(*a))
    lengths = dataset_lengths(train, length_column_name="length")
    assert measured == []  # neither input_ids nor labels was measured
    assert lengths.shape == (30, 2) and (lengths == np.array(train["length"])).all()
    assert (lengths[:, 0] == [len(ids) for ids in train["input_ids"]]).all()
