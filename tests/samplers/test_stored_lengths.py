"""samplers.stored_lengths: a length column read as stored (ints, or (source, target) pairs), from Arrow in
one read or from a list of dicts; selections respected; bad columns named."""

import datasets
import numpy as np
import pytest

from samplers import stored_lengths

PAIRS = [[3, 5], [7, 2], [1, 1], [9, 4], [6, 6]]


def pair_dataset() -> datasets.Dataset:
    features = datasets.Features({"length": datasets.Sequence(datasets.Value("int32"), length=2)})
    return datasets.Dataset.from_dict({"length": PAIRS}, features=features)


def test_pairs_from_a_fixed_size_list_column():
    lengths = stored_lengths(pair_dataset())
    assert lengths.dtype == np.int64 and lengths.tolist() == PAIRS


def test_a_selection_and_a_shuffle_read_their_own_rows():
    assert stored_lengths(pair_dataset().select([4, 1])).tolist() == [PAIRS[4], PAIRS[1]]
    shuffled = pair_dataset().shuffle(seed=3)
    assert stored_lengths(shuffled).tolist() == [PAIRS[i] for i in shuffled._indices.column(0).to_pylist()]


def test_one_int_per_example_and_a_variable_list_column_of_pairs():
    ints = datasets.Dataset.from_dict({"n": [4, 0, 12]})
    assert stored_lengths(ints, "n").tolist() == [4, 0, 12]
    lists = datasets.Dataset.from_dict({"length": PAIRS})  # inferred as a list column, not fixed-size
    assert stored_lengths(lists).tolist() == PAIRS


def test_a_list_of_dicts():
    rows = [{"input_ids": [1] * 30, "length": pair} for pair in PAIRS]
    assert stored_lengths(rows).tolist() == PAIRS  # as stored, not the ids' 30


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"length": [[1, 2, 3], [4, 5, 6]]}, "holds lists of 3 values"),
        ({"length": ["a", "b"]}, "a length column holds one int"),
        ({"length": [1, None]}, "1 missing values"),
        ({"other": [1, 2]}, "has no column 'length'"),
        ({"length": [3, -1]}, "negative"),
    ],
)
def test_bad_columns_are_named(columns, message):
    with pytest.raises((ValueError, TypeError, KeyError), match=message):
        stored_lengths(datasets.Dataset.from_dict(columns))
