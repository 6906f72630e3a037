"""Lengths in every accepted form, evaluation order and its inverse, and padding statistics."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplers import (
    SortishSampler,
    as_lengths,
    batch_padding_counts,
    eval_order,
    lengths_from_dataset,
    padding_counts,
    padding_efficiency,
    restore_order,
)


@pytest.mark.parametrize(
    "given_lengths",
    [[3, 1, 2], np.array([3, 1, 2], dtype=np.int32), torch.tensor([3, 1, 2]), np.array([3.0, 1.0, 2.0])],
    ids=["list", "numpy", "tensor", "whole floats"],
)
def test_lengths_accept_list_array_and_tensor(given_lengths):
    array = as_lengths(given_lengths)
    assert array.dtype == np.int64 and array.tolist() == [3, 1, 2]
    assert list(SortishSampler(given_lengths, 2)) == list(SortishSampler([3, 1, 2], 2))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "empty"),
        ([[1, 2, 3]], r"shape \(n,\) or \(n, 2\)"),
        ([1, -2], r"lengths\[1\] is negative"),
        ([1.5, 2.0], "whole numbers"),
        ([[1, 2], [3]], "one int per example"),
    ],
)
def test_bad_lengths_raise_a_clear_error(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        as_lengths(bad)


def test_a_dataset_passed_as_lengths_points_to_the_helper():
    dataset = datasets.Dataset.from_dict({"input_ids": [[1, 2], [3]]})
    with pytest.raises(TypeError, match="lengths_from_dataset"):
        SortishSampler(dataset, 2)


@pytest.fixture
def tokenized() -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "input_ids": [[5, 6, 3], [7, 3], [8, 9, 10, 11, 3], [3]],
            "labels": [[4, 3], [5, 6, 7, 3], [3], [9, 9, 3]],
            "n_tokens": [30, 20, 50, 10],
            "text": ["a", "b", "c", "d"],
        }
    )


def test_lengths_from_dataset_reads_list_and_length_columns(tokenized):
    assert lengths_from_dataset(tokenized).tolist() == [3, 2, 5, 1]
    assert lengths_from_dataset(tokenized, column="n_tokens").tolist() == [30, 20, 50, 10]
    pairs = lengths_from_dataset(tokenized, "input_ids", target_column="labels")
    assert pairs.tolist() == [[3, 2], [2, 4], [5, 1], [1, 3]]


def test_lengths_from_dataset_follows_select_and_shuffle(tokenized):
    assert lengths_from_dataset(tokenized.select([2, 0])).tolist() == [5, 3]
    shuffled = tokenized.shuffle(seed=1)
    assert lengths_from_dataset(shuffled).tolist() == [len(x) for x in shuffled["input_ids"]]


def test_lengths_from_dataset_errors_name_the_column(tokenized):
    with pytest.raises(KeyError, match="'tokens'.*input_ids"):
        lengths_from_dataset(tokenized, column="tokens")
    with pytest.raises(TypeError, match="'text'.*Tokenize the dataset first"):
        lengths_from_dataset(tokenized, column="text")


def test_lengths_from_a_plain_dataset_loops_with_a_progress_bar(capsys):
    rows = [{"input_ids": torch.ones(i % 7 + 1), "labels": [0] * (i % 3 + 1)} for i in range(50)]
    pairs = lengths_from_dataset(rows, target_column="labels", show_progress=True)
    assert pairs.tolist() == [[i % 7 + 1, i % 3 + 1] for i in range(50)]
    assert "computing lengths" in capsys.readouterr().err


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=200))
def test_eval_order_is_stable_descending_and_restore_inverts_it(lengths):
    order, inverse = eval_order(lengths)
    assert sorted(order) == list(range(len(lengths)))
    keys = [(-lengths[i], i) for i in order]  # descending length, ties in dataset order
    assert keys == sorted(keys)
    predictions = [f"pred-{i}" for i in order]  # what a model produces, in sorted order
    assert restore_order(predictions, order) == [f"pred-{i}" for i in range(len(lengths))]
    assert [predictions[inverse[i]] for i in range(len(lengths))] == [
        f"pred-{i}" for i in range(len(lengths))
    ]


def test_eval_order_on_pairs_and_restore_of_arrays_and_tensors():
    order, _ = eval_order([(2, 9), (5, 1), (9, 2), (5, 5)])
    assert order == [2, 0, 3, 1]  # max 9 (src 9 before src 2), then max 5 (tgt 5 before tgt 1)
    values = np.array([20, 0, 30, 10])
    assert restore_order(values, order).tolist() == [0, 10, 20, 30]
    assert restore_order(torch.tensor(values), order).tolist() == [0, 10, 20, 30]
    with pytest.raises(ValueError, match="3 items for an order of 4"):
        restore_order([1, 2, 3], order)


def test_padding_counts_by_hand():
    src, tgt = [3, 1, 4, 4], [2, 2, 5, 1]
    # batch [0, 1]: src pads to 2x3 (real 4), tgt 2x2 (real 4); batch [2, 3]: src 2x4 (8), tgt 2x5 (6)
    assert padding_counts([[0, 1], [2, 3]], src, tgt) == (22, 28)
    assert padding_efficiency([[0, 1], [2, 3]], src, tgt) == pytest.approx(22 / 28)
    assert padding_counts([[0, 1], [2, 3]], list(zip(src, tgt))) == (22, 28)
    assert padding_efficiency([[0], [1], [2], [3]], src, tgt) == 1.0
    with pytest.raises(ValueError, match="tgt_lengths has shape"):
        padding_counts([[0]], src, tgt[:3])


def test_batch_padding_counts_from_collated_tensors():
    attention_mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    labels = torch.tensor([[5, 3, -100, -100], [6, 7, 8, 3]])
    assert batch_padding_counts(attention_mask) == (4, 6)
    assert batch_padding_counts(attention_mask, labels) == (4 + 6, 6 + 8)
