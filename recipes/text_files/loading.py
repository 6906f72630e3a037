"""`load_text_pairs`: find the reader for a path (the `READERS` table), check every example it yields, and
write the pairs to a file-backed `datasets.Dataset`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import datasets

from recipes.text_files.errors import DataFileError
from recipes.text_files.formats import Format, detect_format, parallel_files
from recipes.text_files.lines import check_file
from recipes.text_files.readers import Pairs, read_csv, read_json, read_parallel, read_tsv
from recipes.text_files.report import LoadReport, log_report
from recipes.text_files.saved import load_saved

Reader = Callable[[tuple[Path, Path], tuple[str, str]], Pairs]

READERS: dict[Format, Reader] = {
    "json": read_json,
    "csv": read_csv,
    "tsv": read_tsv,
    "text": read_parallel,  # two files, line i of one translating line i of the other
}
"""The reader of each line-based format. A saved dataset ("saved") is already columnar and is checked column
by column instead (`saved.load_saved`)."""


def load_text_pairs(
    data: str | Path | tuple[str | Path, str | Path],
    *,
    source_field: str,
    target_field: str,
    source_column: str = "source",
    target_column: str = "target",
    max_samples: int | None = None,
    drop_empty: bool = False,
    split: str | None = None,
    cache_dir: str | Path | None = None,
) -> datasets.Dataset:
    """Load (source, target) string pairs as a `datasets.Dataset` with the columns `source_column`, `target_column`.

    Args:
        data: a JSONL/CSV/TSV file, a saved dataset directory, a parallel-text prefix or file (see
            `parallel_files`), or an explicit `(source_file, target_file)` pair.
        source_field / target_field: the field (dotted for nested JSON: `translation.de`), the CSV/TSV header
            name, or, for parallel text, the file suffix (the language).
        max_samples: keep the first `max_samples` valid examples and stop reading there (the rest of the file
            is not checked).
        drop_empty: drop examples whose source or target is empty or only whitespace, and log how many and
            which lines (by default they are an error, since they usually mean a broken export).
        split: for a saved `DatasetDict`, the split to use.
        cache_dir: where `datasets` writes the Arrow file (default: the `datasets` cache).

    Raises:
        DataFileError: naming the file, the line and the field, with the fix.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be a positive number or None, got {max_samples}")
    if source_column == target_column:
        raise ValueError(f"source_column and target_column must differ, both are {source_column!r}")
    fields, columns = (source_field, target_field), (source_column, target_column)
    if isinstance(data, (str, Path)) and Path(data).is_dir():
        return load_saved(
            Path(data), fields, columns, split=split, max_samples=max_samples, drop_empty=drop_empty
        )
    fmt, files = _resolve(data, fields)
    pairs, report = _collect(
        READERS[fmt](files, fields),
        files=files,
        fields=fields,
        max_samples=max_samples,
        drop_empty=drop_empty,
    )
    origin = str(files[0]) if files[0] == files[1] else f"{files[0]} + {files[1]}"
    log_report(origin, report)
    if report.kept == 0:
        dropped = (
            f" left after dropping {len(report.dropped_empty)} empty ones" if report.dropped_empty else ""
        )
        raise DataFileError(
            origin, "no examples" + dropped, fix="check that the file is the right one and is not empty"
        )
    sources, targets = (list(x) for x in zip(*pairs))
    return _to_dataset(sources, targets, columns, cache_dir=cache_dir)


def _resolve(
    data: str | Path | tuple[str | Path, str | Path], fields: tuple[str, str]
) -> tuple[Format, tuple[Path, Path]]:
    """The line-based format of `data` and the (source, target) files to read, both checked to exist; a
    single-file format names its file twice."""
    if not isinstance(data, (str, Path)):
        files = tuple(Path(p) for p in data)
        if len(files) != 2:
            raise ValueError(f"a parallel corpus is two files (source, target), got {len(files)}: {data!r}")
        for f in files:
            check_file(f)
        return "text", (files[0], files[1])
    path = Path(data)
    fmt = detect_format(path)
    if fmt != "text":
        check_file(path)
        return fmt, (path, path)
    pair = parallel_files(path, *fields)
    if pair is not None:
        return "text", pair
    if not path.exists():
        raise DataFileError(
            path,
            f"no such file, and no parallel files {path.name}.{fields[0]} + {path.name}.{fields[1]} next to it",
            fix="pass a .jsonl/.csv/.tsv file, a saved dataset directory, or the prefix of two parallel "
            "text files named <prefix>.<source_lang> and <prefix>.<target_lang>",
        )
    check_file(path)
    raise DataFileError(
        path,
        f"cannot tell the format from the name (expected .jsonl, .json, .csv, .tsv, or parallel "
        f"files ending in .{fields[0]} and .{fields[1]})",
        fix="rename the file with one of these suffixes (optionally followed by .gz)",
    )


def _collect(
    reader: Pairs,
    *,
    files: tuple[Path, Path],
    fields: tuple[str, str],
    max_samples: int | None,
    drop_empty: bool,
) -> tuple[list[tuple[str, str]], LoadReport]:
    """Run a reader to the end (or `max_samples` kept pairs), checking for empty sources and targets.

    `files` and `fields` name where the source and the target come from (the same file twice, except for
    parallel text), for the error message.
    """
    report, pairs = LoadReport(), []
    for number, source, target in reader:
        empty = [side for side, text in enumerate((source, target)) if not text.strip()]
        if empty:
            if drop_empty:
                report.dropped_empty.append(number)
                continue
            raise DataFileError(
                files[empty[0]],
                "is empty" if len(empty) == 1 else "source and target are both empty",
                line=number,
                field=fields[empty[0]],
                fix="remove the example from the file, or pass drop_empty=True (recipes: --drop_empty_examples) "
                "to drop such examples and count them",
            )
        pairs.append((source, target))
        if max_samples is not None and len(pairs) >= max_samples:
            break
    report.kept = len(pairs)
    return pairs, report


def _generate_pairs(
    sources: list[str], targets: list[str], source_column: str, target_column: str
) -> Iterator[dict[str, str]]:
    for source, target in zip(sources, targets):
        yield {source_column: source, target_column: target}


def _to_dataset(
    sources: list[str], targets: list[str], columns: tuple[str, str], *, cache_dir: str | Path | None
) -> datasets.Dataset:
    # The content is the cache key: the same pairs give the same Arrow file and fingerprint, so the tokenization
    # `map` that follows hits its cache, and an edited file (same path, new content) never reuses a stale one.
    features = datasets.Features({columns[0]: datasets.Value("string"), columns[1]: datasets.Value("string")})
    return datasets.Dataset.from_generator(
        _generate_pairs,
        features=features,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        gen_kwargs={
            "sources": sources,
            "targets": targets,
            "source_column": columns[0],
            "target_column": columns[1],
        },
    )
