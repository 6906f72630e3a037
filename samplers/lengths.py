"""Example lengths: validated once into a numpy array, and the sort keys every sampler shares.

Lengths are either one length per example, shape ``(n,)``, or a ``(src_len, tgt_len)`` pair per example,
shape ``(n, 2)``. For pairs, the padded cost of an example is ``max(src, tgt)``: a batch of ``b`` examples
costs ``b * max_i max(src_i, tgt_i)`` tokens (the larger of the two padded tensors), which is what a
token budget has to bound.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: Above this many examples, a Python loop over a dataset shows a progress bar.
PROGRESS_THRESHOLD = 10_000

LengthsLike = Sequence[int] | Sequence[Sequence[int]] | np.ndarray | torch.Tensor


def as_lengths(lengths: Any, *, name: str = "lengths") -> np.ndarray:
    """Return ``lengths`` as an int64 array of shape ``(n,)`` or ``(n, 2)``, checked once.

    Accepts a list (of ints or of ``(src, tgt)`` pairs), a numpy array or a torch tensor.
    """
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    if _looks_like_dataset(lengths):
        raise TypeError(
            f"{name} is a dataset; pass its lengths instead, e.g. "
            f"samplers.lengths_from_dataset(dataset, column='input_ids')"
        )
    try:
        array = np.asarray(lengths)
    except ValueError as err:  # ragged nested lists
        raise ValueError(
            f"{name} must be one int per example or one (src, tgt) pair per example: {err}"
        ) from err
    if array.size == 0:
        raise ValueError(f"{name} is empty: a sampler needs at least one example")
    if array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] != 2):
        raise ValueError(
            f"{name} must have shape (n,) or (n, 2) for (src, tgt) pairs, got shape {tuple(array.shape)}"
        )
    whole = np.issubdtype(array.dtype, np.integer) or (
        np.issubdtype(array.dtype, np.floating) and bool(np.all(np.mod(array, 1) == 0))
    )
    if not whole:
        raise TypeError(f"{name} must hold whole numbers, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if (array < 0).any():
        bad = int(np.argwhere(array < 0)[0][0])
        raise ValueError(f"{name}[{bad}] is negative ({array[bad].tolist()}); lengths are token counts")
    return array


def example_costs(lengths: np.ndarray) -> np.ndarray:
    """Padded tokens one example adds to a batch: its length, or ``max(src, tgt)`` for pairs."""
    return lengths if lengths.ndim == 1 else lengths.max(axis=1)


def sort_descending(
    lengths: np.ndarray, candidates: np.ndarray, groups: np.ndarray | None = None
) -> np.ndarray:
    """Reorder ``candidates`` (example indices) by descending length inside each group, stably.

    ``groups`` (same shape as ``candidates``, ascending ids) keeps each mega-batch or chunk together. For
    pairs the key is ``(max(src, tgt), src, tgt)``: the cost decides the batch, and the source and target
    lengths break its ties so that both padded tensors of a batch stay tight. Remaining ties keep the order
    of ``candidates``, so a random permutation in gives random tie-breaking out.
    """
    sub = lengths[candidates]
    keys: list[np.ndarray] = []  # np.lexsort: last key is the primary one
    if sub.ndim == 2:
        keys += [_descending(sub[:, 1]), _descending(sub[:, 0]), _descending(sub.max(axis=1))]
    else:
        keys.append(_descending(sub))
    if groups is not None:
        keys.append(_narrow(groups))
    return candidates[np.lexsort(keys)]


_U16 = np.iinfo(np.uint16).max


def _descending(values: np.ndarray) -> np.ndarray:
    """A key whose ascending order is `values`' descending order; uint16 when the values fit (lengths
    almost always do), which numpy sorts by radix, 5x faster than int64 keys: the token-budget sampler
    sorts the whole corpus each epoch, seconds at millions of examples otherwise."""
    if len(values) and values.min() >= 0 and values.max() <= _U16:
        return (_U16 - values).astype(np.uint16)
    return -values


def _narrow(values: np.ndarray) -> np.ndarray:
    """Ascending ids (mega-batch or chunk numbers) as uint16 when they fit, for the same radix sort."""
    if len(values) and values.min() >= 0 and values.max() <= _U16:
        return values.astype(np.uint16)
    return values


def lengths_from_dataset(
    dataset: Any,
    column: str = "input_ids",
    target_column: str | None = None,
    *,
    show_progress: bool | None = None,
) -> np.ndarray:
    """Lengths of a dataset's examples, computed once: shape ``(n,)``, or ``(n, 2)`` with ``target_column``.

    ``column`` is either a list column (token ids: its length is used) or an integer column that already
    holds lengths. A Hugging Face ``datasets.Dataset`` is read straight from its Arrow columns (vectorised,
    selections and shuffles respected); any other map-style dataset of dicts is read example by example,
    with a progress bar above ``PROGRESS_THRESHOLD`` examples.
    """
    columns = [column] if target_column is None else [column, target_column]
    if hasattr(dataset, "with_format") and hasattr(dataset, "column_names"):
        for name in columns:
            if name not in dataset.column_names:
                raise KeyError(f"dataset has no column {name!r}; its columns are {dataset.column_names}")
        arrow = dataset.with_format("arrow")
        parts = [_arrow_lengths(arrow[name], name) for name in columns]
    else:
        parts = _looped_lengths(dataset, columns, show_progress=show_progress)
    stacked = parts[0] if len(parts) == 1 else np.stack(parts, axis=1)
    return as_lengths(stacked, name=f"lengths of {columns}")


def stored_lengths(dataset: Any, column: str = "length") -> np.ndarray:
    """The lengths a dataset stores in ``column``, read as they are: one int per example (shape ``(n,)``) or a
    ``(source, target)`` pair per example (shape ``(n, 2)``; in Arrow a list column of two ints per row).

    Written once when the dataset is tokenized, they spare every run a pass over the token ids, and they are
    what the sampler uses even where they differ from the ids (a length recorded before some processing). A
    Hugging Face ``datasets.Dataset`` is read from its Arrow column in one vectorised step; another map-style
    dataset of dicts example by example."""
    if hasattr(dataset, "with_format") and hasattr(dataset, "column_names"):
        if column not in dataset.column_names:
            raise KeyError(f"dataset has no column {column!r}; its columns are {dataset.column_names}")
        array = _arrow_stored(dataset.with_format("arrow")[column], column)
    else:
        values = [dataset[i][column] for i in range(len(dataset))]
        try:
            array = np.asarray(values)
        except ValueError as err:  # rows of mixed shapes
            raise ValueError(
                f"column {column!r} must hold one length or one (source, target) pair per example: {err}"
            ) from err
    return as_lengths(array, name=f"the lengths stored in column {column!r}")


def _arrow_stored(values: Any, name: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.null_count:
        raise ValueError(f"column {name!r} has {values.null_count} missing values; fill or filter them first")
    kind = values.type
    if pa.types.is_integer(kind):
        return values.to_numpy()
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        widths = pc.list_value_length(values).to_numpy()
        if len(widths) and (widths != 2).any():
            row = int(np.argmax(widths != 2))
            raise ValueError(
                f"column {name!r} holds lists of {int(widths[row])} values (row {row}); a length column holds "
                "one int, or a (source, target) pair, per example"
            )
        # flatten() honours the array's offset (a selected or sliced dataset), .values would not
        return values.flatten().to_numpy(zero_copy_only=False).reshape(-1, 2)
    raise TypeError(
        f"column {name!r} has Arrow type {kind}; a length column holds one int, or a (source, target) pair of "
        "ints, per example"
    )


def _arrow_lengths(values: Any, name: str) -> np.ndarray:
    import pyarrow as pa  # ships with `datasets`; only needed when a dataset is given
    import pyarrow.compute as pc

    kind = values.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        counts = pc.list_value_length(values)
    elif pa.types.is_integer(kind):
        counts = values
    else:
        raise TypeError(
            f"column {name!r} has Arrow type {kind}; expected token ids (a list column) or an integer "
            f"length column. Tokenize the dataset first (dataset.map(tokenize, batched=True))."
        )
    if counts.null_count:
        raise ValueError(f"column {name!r} has {counts.null_count} missing values; fill or filter them first")
    return counts.to_numpy().astype(np.int64)


def _looped_lengths(dataset: Any, columns: list[str], *, show_progress: bool | None) -> list[np.ndarray]:
    n = len(dataset)
    if show_progress is None:
        show_progress = n > PROGRESS_THRESHOLD
    rows = range(n)
    if show_progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="computing lengths", unit="ex")
    out = np.empty((len(columns), n), dtype=np.int64)
    for i in rows:
        example = dataset[i]
        for j, name in enumerate(columns):
            out[j, i] = _length_of(example[name])
    return list(out)


def _length_of(value: Any) -> int:
    """A token sequence's length, or the value itself when the column already holds lengths."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return int(value.shape[-1]) if value.ndim else int(value)
    return int(value) if isinstance(value, (int, np.integer)) else len(value)


def _looks_like_dataset(obj: Any) -> bool:
    return hasattr(obj, "column_names") and hasattr(obj, "with_format")
