"""Pairs from a dataset saved with `datasets` `save_to_disk`: the columns are checked to hold strings, and the
rows to be non-empty, with the same error and the same `drop_empty` choice as the line-based formats."""

from __future__ import annotations

from pathlib import Path

import datasets

from recipes.text_files.errors import DataFileError
from recipes.text_files.report import LoadReport, log_report


def load_saved(
    path: Path,
    fields: tuple[str, str],
    columns: tuple[str, str],
    *,
    split: str | None,
    max_samples: int | None,
    drop_empty: bool,
) -> datasets.Dataset:
    """The dataset at `path` with the two `fields` renamed to `columns`; rows dropped as empty are logged."""
    dataset = _open(path, split)
    if any("." in name for name in fields):
        dataset = dataset.flatten()  # nested {"translation": {"de": ...}} becomes the column "translation.de"
    for name in fields:
        _check_column(path, dataset, name)
    dataset = dataset.select_columns(list(fields))
    keep, dropped = _usable_rows(path, dataset, fields, max_samples=max_samples, drop_empty=drop_empty)
    log_report(str(path), LoadReport(kept=len(keep), dropped_empty=dropped))
    if not keep:
        raise DataFileError(
            path, "the dataset has no usable rows", fix="check that the directory is the right one"
        )
    if len(keep) < len(dataset):
        dataset = dataset.select(keep)
    rename = {old: new for old, new in zip(fields, columns) if old != new}
    return dataset.rename_columns(rename) if rename else dataset


def _open(path: Path, split: str | None) -> datasets.Dataset:
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise DataFileError(
            path,
            "is a directory but not a dataset saved with `save_to_disk` (no dataset_info.json / dataset_dict.json)",
            fix="pass a data file, or a directory written by Dataset.save_to_disk",
        ) from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split is None or split not in loaded:
            raise DataFileError(
                path,
                f"is a DatasetDict with splits {sorted(loaded)}; "
                + ("no split was named" if split is None else f"it has no split {split!r}"),
                fix="name the split (split=...), or save the split on its own",
            )
        loaded = loaded[split]
    return loaded


def _check_column(path: Path, dataset: datasets.Dataset, name: str) -> None:
    if name not in dataset.column_names:
        raise DataFileError(
            path,
            f"missing column (the dataset has: {', '.join(dataset.column_names)})",
            field=name,
            fix="name one of the dataset's columns (dotted for nested ones, e.g. translation.de)",
        )
    feature = dataset.features[name]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        raise DataFileError(
            path,
            f"the column holds {feature}, not strings",
            field=name,
            fix="convert the column to strings before saving (dataset.cast_column or map)",
        )


def _usable_rows(
    path: Path,
    dataset: datasets.Dataset,
    fields: tuple[str, str],
    *,
    max_samples: int | None,
    drop_empty: bool,
) -> tuple[list[int], list[int]]:
    """Row numbers to keep (the first `max_samples` usable ones) and those dropped as empty or missing."""
    keep, dropped = [], []
    for row, (source, target) in enumerate(zip(dataset[fields[0]], dataset[fields[1]])):
        bad = [name for name, text in zip(fields, (source, target)) if text is None or not text.strip()]
        if bad:
            if not drop_empty:
                raise DataFileError(
                    path,
                    "is empty or missing",
                    line=row,
                    field=bad[0],
                    what="row",
                    fix="drop such rows before saving, or pass drop_empty=True (recipes: --drop_empty_examples)",
                )
            dropped.append(row)
            continue
        keep.append(row)
        if max_samples is not None and len(keep) >= max_samples:
            break
    return keep, dropped
