"""Padding rules shared by the tokenizers and the data collators.

One place decides how wide a padded batch is, so that `Tokenizer.__call__`, `Tokenizer.pad` and the collators
agree, including at the `pad_to_multiple_of` boundary (a longest length of 8 with multiple 8 stays 8).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")


def padding_strategy(padding: bool | str) -> str:
    """Map the Hugging Face spellings (`True`, `False`, "longest", "max_length", "do_not_pad") to one name."""
    if padding is True:
        return "longest"
    if padding is False or padding is None:
        return "do_not_pad"
    if isinstance(padding, str) and padding in PADDING_STRATEGIES:
        return padding
    value = getattr(padding, "value", None)  # transformers.utils.PaddingStrategy is a str Enum
    if isinstance(value, str) and value in PADDING_STRATEGIES:
        return value
    raise ValueError(
        f"padding={padding!r} is not supported; use True/'longest', 'max_length' or False/'do_not_pad'"
    )


def round_up(length: int, multiple_of: int | None) -> int:
    """Smallest multiple of `multiple_of` that is >= `length` (8 stays 8, 9 becomes 16)."""
    if not multiple_of:
        return length
    if not isinstance(multiple_of, int) or multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be a positive int, got {multiple_of!r}")
    return -(-length // multiple_of) * multiple_of


def padded_width(
    lengths: Sequence[int],
    *,
    padding: bool | str,
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
    name: str = "input_ids",
) -> int | None:
    """Width the batch is padded to, or None when it is left ragged (`padding=False`).

    With "max_length" every row is padded to `max_length` (rounded up to the multiple); a longer row is an error,
    because padding never truncates: truncate when tokenizing.
    """
    strategy = padding_strategy(padding)
    if strategy == "do_not_pad":
        return None
    if strategy == "max_length":
        if max_length is None:
            raise ValueError("padding='max_length' needs max_length= (or a tokenizer with model_max_length)")
        too_long = [n for n in lengths if n > max_length]
        if too_long:
            raise ValueError(
                f"{name}: a sequence of length {max(too_long)} is longer than max_length={max_length}; "
                "padding does not truncate, so tokenize with truncation=True and the same max_length"
            )
        return round_up(max_length, pad_to_multiple_of)
    return round_up(max(lengths, default=0), pad_to_multiple_of)


def pad_rows(
    rows: Sequence[Sequence[int]], *, value: int, width: int, side: str = "right"
) -> list[list[int]]:
    """Pad each row with `value` up to `width` on `side` ("right" or "left")."""
    if side == "right":
        return [list(row) + [value] * (width - len(row)) for row in rows]
    if side == "left":
        return [[value] * (width - len(row)) + list(row) for row in rows]
    raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")


def pad_to_array(
    rows: Sequence[Sequence[int]], *, value: int, width: int, side: str = "right"
) -> tuple[np.ndarray, np.ndarray]:
    """Pad rows straight into an int64 array (vectorised: no per-row Python lists) and return it with the
    boolean mask of real tokens."""
    if side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    positions = np.arange(width)
    mask = positions < lengths[:, None] if side == "right" else positions >= (width - lengths)[:, None]
    array = np.full((len(rows), width), value, dtype=np.int64)
    array[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return array, mask


def as_int_lists(rows: Any) -> list[list[int]]:
    """Lists, numpy arrays and torch tensors (1-D rows or a 2-D batch) as a list of int lists."""
    if hasattr(rows, "tolist") and not isinstance(rows, list):
        rows = rows.tolist()
    return [row.tolist() if hasattr(row, "tolist") else list(row) for row in rows]


def to_tensor(rows: Any, return_tensors: str | None, *, name: str) -> Any:
    """Equal-length int rows (lists or an array) as a torch LongTensor ("pt"), an int64 numpy array ("np") or
    unchanged (None)."""
    if return_tensors is None:
        return rows
    if return_tensors not in ("pt", "np"):
        raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
    if isinstance(rows, np.ndarray):
        array = rows.astype(np.int64, copy=False)
        return array if return_tensors == "np" else _torch_from_numpy(array)
    if len(rows) and isinstance(rows[0], (list, tuple)):
        lengths = {len(row) for row in rows}
        if len(lengths) > 1:
            raise ValueError(
                f"{name}: rows have different lengths {sorted(lengths)[:2]}..., so they cannot form one "
                f"tensor; pass padding=True (or truncation=True with padding='max_length')"
            )
    array = np.asarray(rows, dtype=np.int64)
    if return_tensors == "np":
        return array
    return _torch_from_numpy(array)


def _torch_from_numpy(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(array)


# Keys padded together and the value each is padded with. Encoder-side keys share one width and decoder-side keys
# another, so `decoder_input_ids` always lines up with `labels`.
_PAD_ID = object()  # stands for the tokenizer's pad id
_LABEL_PAD = object()  # stands for label_pad_token_id (-100)
ENCODER_KEYS = {"input_ids": _PAD_ID, "attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}
DECODER_KEYS = {"labels": _LABEL_PAD, "decoder_input_ids": _PAD_ID, "decoder_attention_mask": 0}


def _is_sequence(value: Any) -> bool:
    if isinstance(value, (str, bytes)):
        return False
    ndim = getattr(value, "ndim", None)
    if ndim is not None:
        return ndim >= 1
    return isinstance(value, Sequence)


def pad_features(
    features: Sequence[Any] | dict[str, Any],
    *,
    pad_token_id: int | None,
    label_pad_token_id: int = -100,
    padding: bool | str = True,
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
    padding_side: str = "right",
    return_tensors: str | None = None,
    return_attention_mask: bool = True,
) -> Any:
    """Collate a list of feature dicts (or one dict of lists) into a padded `BatchEncoding`.

    `input_ids` pad with `pad_token_id`, `attention_mask` with 0 (created from the lengths when absent), `labels`
    with `label_pad_token_id`, `decoder_input_ids` with `pad_token_id`. Scalars and equal-length sequences under any
    other key are stacked; strings are kept as lists. Only the tokenizer's pad id is needed, so this works for any
    tokenizer, ours or Hugging Face's.
    """
    from s2s.tokenization.batch_encoding import BatchEncoding

    rows = _as_rows(features)
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    columns = {key: values for key, values in columns.items() if not all(v is None for v in values)}
    if return_attention_mask and "input_ids" in columns and "attention_mask" not in columns:
        columns["attention_mask"] = [[1] * len(ids) for ids in columns["input_ids"]]

    batch = BatchEncoding()
    for group in (ENCODER_KEYS, DECODER_KEYS):
        present = [key for key in group if key in columns and _is_sequence(columns[key][0])]
        if not present:
            continue
        lists = {key: as_int_lists(columns[key]) for key in present}
        lengths = [len(row) for key in present for row in lists[key]]
        width = padded_width(
            lengths,
            padding=padding,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            name=present[0],
        )
        for key in present:
            values = lists[key]
            if width is not None:
                fill = group[key]
                if fill is _PAD_ID:
                    if pad_token_id is None:
                        raise ValueError(
                            f"cannot pad {key!r}: the tokenizer has no pad_token_id; set one "
                            "(for a Hugging Face tokenizer: tokenizer.pad_token = tokenizer.eos_token)"
                        )
                    fill = pad_token_id
                elif fill is _LABEL_PAD:
                    fill = label_pad_token_id
                if return_tensors is None:
                    values = pad_rows(values, value=fill, width=width, side=padding_side)
                else:
                    values, _ = pad_to_array(values, value=fill, width=width, side=padding_side)
            batch[key] = to_tensor(values, return_tensors, name=key)
    for key, values in columns.items():
        if key not in batch:
            batch[key] = stack_values(values, return_tensors, name=key)
    return batch


def _as_rows(features: Sequence[Any] | dict[str, Any]) -> list[dict[str, Any]]:
    """A list of dicts, whether given a list of mappings/objects or one dict of batched columns."""
    if isinstance(features, dict):
        keys = list(features)
        if not keys:
            raise ValueError("cannot pad an empty dict of features")
        n = len(features[keys[0]])
        return [{key: features[key][i] for key in keys} for i in range(n)]
    rows = [f if isinstance(f, dict) else dict(f) if hasattr(f, "keys") else vars(f) for f in features]
    if not rows:
        raise ValueError("cannot collate an empty list of features")
    keys = set(rows[0])
    for i, row in enumerate(rows):
        if set(row) != keys:
            raise ValueError(
                f"features[{i}] has keys {sorted(row)} but features[0] has {sorted(keys)}; "
                "every example in a batch needs the same keys"
            )
    return rows


def stack_values(values: list[Any], return_tensors: str | None, *, name: str) -> Any:
    """Stack one non-padded column: numbers and equal-length sequences become a tensor, strings stay a list."""
    first = values[0]
    if return_tensors is None or first is None or isinstance(first, (str, bytes)):
        return list(values)
    if return_tensors not in ("pt", "np"):
        raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
    if type(first).__module__.startswith("torch"):
        import torch

        stacked = torch.stack(list(values))
        return stacked if return_tensors == "pt" else stacked.numpy()
    try:
        array = np.asarray([v.tolist() if hasattr(v, "tolist") else v for v in values])
    except ValueError as err:  # ragged
        raise ValueError(
            f"{name!r} holds sequences of different lengths, and only {sorted({**ENCODER_KEYS, **DECODER_KEYS})} "
            f"are padded; pad {name!r} yourself or drop it before collating"
        ) from err
    if array.dtype.kind not in "biuf":
        return list(values)
    if array.dtype == np.float64:
        array = array.astype(np.float32)  # torch's default float, as torch.tensor(list_of_floats) gives
    if return_tensors == "np":
        return array
    import torch

    return torch.from_numpy(array)
