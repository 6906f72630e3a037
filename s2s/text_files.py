"""Read raw (source, target) text pairs from local files into a `datasets.Dataset`.

Supported inputs, each optionally gzip-compressed (detected from the file's magic bytes, not its name):

- JSON Lines: one object per line; fields by name, nested fields by dotted name (`translation.de`);
- CSV / TSV with a header row (TSV is plain tab-separated: no quoting, so quotes inside a sentence stay as is);
- parallel plain-text files, one sentence per line (`train.de` + `train.en`): give the prefix `train`, or one of
  the two files, with the languages as the field names;
- a `datasets` dataset saved with `save_to_disk` (a `DatasetDict` needs `split=`).

Why one Python parser instead of `load_dataset("json", ...)`: every example passes through a line-by-line
check, so a broken line is reported with its file, line number and field, and the fix, instead of a pyarrow
traceback; and the same parser builds the dataset, so what was validated is exactly what is loaded (pyarrow
would also refuse a file whose *unrelated* fields change type between lines). The validated pairs are then
written by `datasets` (`Dataset.from_generator`) to an Arrow file in the cache, keyed by their content: the
result is file-backed, so the recipes' tokenization `map` caches and runs with `num_proc` as usual.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets

logger = logging.getLogger(__name__)

Format = Literal["json", "csv", "tsv", "text", "saved"]

_SUFFIX_FORMATS: dict[str, Format] = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
_GZIP_MAGIC = b"\x1f\x8b"


class DataFileError(ValueError):
    """A data file cannot be used as it is. Carries where (`path`, `line`, `field`) so callers can act on it."""

    def __init__(self, path: str | Path, problem: str, *, line: int | None = None, field: str | None = None,
                 fix: str | None = None, what: str = "line") -> None:  # fmt: skip
        self.path, self.line, self.field, self.problem, self.fix = str(path), line, field, problem, fix
        where = str(path)
        if line is not None:
            where += f", {what} {line}"
        if field is not None:
            where += f", field {field!r}"
        message = f"{where}: {problem}"
        if fix:
            message += f". Fix: {fix}"
        super().__init__(message)


@dataclass
class LoadReport:
    """What a load kept and dropped (logged as a warning when something was dropped)."""

    kept: int = 0
    dropped_empty: list[int] = field(default_factory=list)
    """Line (or row) numbers dropped because the source or target was empty (only with `drop_empty=True`)."""


# ----------------------------------------------------------------------------------------------------------------
# public API


def detect_format(path: str | Path) -> Format:
    """The format of `path` from its name: a directory is a saved dataset; `.gz` is looked through."""
    path = Path(path)
    if path.is_dir():
        return "saved"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffixes[-1]]
    return "text"


def parallel_files(path: str | Path, source_suffix: str, target_suffix: str) -> tuple[Path, Path] | None:
    """The two files of a parallel corpus named by `path`, or None when `path` does not name one.

    `path` is either the common prefix (`data/train` for `data/train.de` + `data/train.en`) or one of the two
    files (`data/train.de`); either file may carry an extra `.gz`.
    """
    path = Path(path)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    prefixes = [path.with_name(name)]
    for suffix in (source_suffix, target_suffix):
        if name.endswith(f".{suffix}"):
            prefixes.insert(0, path.with_name(name[: -len(suffix) - 1]))
    for prefix in prefixes:
        source = _existing(prefix.with_name(f"{prefix.name}.{source_suffix}"))
        target = _existing(prefix.with_name(f"{prefix.name}.{target_suffix}"))
        if source and target:
            return source, target
    return None


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
    fields = (source_field, target_field)
    columns = (source_column, target_column)
    if source_column == target_column:
        raise ValueError(f"source_column and target_column must differ, both are {source_column!r}")

    if not isinstance(data, (str, Path)):
        files = tuple(Path(p) for p in data)
        if len(files) != 2:
            raise ValueError(f"a parallel corpus is two files (source, target), got {len(files)}: {data!r}")
        for f in files:
            _check_file(f)
        pairs, report = _collect(
            _read_parallel(*files), files=files, fields=fields, max_samples=max_samples, drop_empty=drop_empty
        )
        origin = f"{files[0]} + {files[1]}"
    elif Path(data).is_dir():
        return _load_saved(
            Path(data), fields, columns, split=split, max_samples=max_samples, drop_empty=drop_empty
        )
    else:
        path = Path(data)
        fmt = detect_format(path)
        pair = parallel_files(path, source_field, target_field) if fmt == "text" else None
        if pair is not None:
            pairs, report = _collect(
                _read_parallel(*pair),
                files=pair,
                fields=fields,
                max_samples=max_samples,
                drop_empty=drop_empty,
            )
            origin = f"{pair[0]} + {pair[1]}"
        else:
            if not path.exists() and fmt == "text":
                raise DataFileError(
                    path,
                    "no such file, and no parallel files "
                    f"{path.name}.{source_field} + {path.name}.{target_field} next to it",
                    fix="pass a .jsonl/.csv/.tsv file, a saved dataset directory, or the prefix of two parallel "
                    "text files named <prefix>.<source_lang> and <prefix>.<target_lang>",
                )
            _check_file(path)
            if fmt == "text":
                raise DataFileError(
                    path,
                    f"cannot tell the format from the name (expected .jsonl, .json, .csv, .tsv, or parallel "
                    f"files ending in .{source_field} and .{target_field})",
                    fix="rename the file with one of these suffixes (optionally followed by .gz)",
                )
            reader = _read_json(path, fields) if fmt == "json" else _read_delimited(path, fields, fmt=fmt)
            pairs, report = _collect(
                reader, files=(path, path), fields=fields, max_samples=max_samples, drop_empty=drop_empty
            )
            origin = str(path)

    _log_report(origin, report)
    if report.kept == 0:
        raise DataFileError(
            origin,
            "no examples"
            + (
                f" left after dropping {len(report.dropped_empty)} empty ones" if report.dropped_empty else ""
            ),
            fix="check that the file is the right one and is not empty",
        )
    sources, targets = (list(x) for x in zip(*pairs))
    return _to_dataset(sources, targets, columns, cache_dir=cache_dir)


# ----------------------------------------------------------------------------------------------------------------
# reading: each reader yields (line_number, source, target) with source/target checked to be strings


def _existing(path: Path) -> Path | None:
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataFileError(
            path, "no such file", fix="check the path (relative paths start from the current directory)"
        )
    if not path.is_file():
        raise DataFileError(
            path, "is not a regular file", fix="pass a data file or a saved dataset directory"
        )


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes with the line ending) of a plain or gzip-compressed file."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as f:
            yield from enumerate(f, start=1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFileError(
            path,
            f"the gzip stream is corrupt or truncated ({exc})",
            fix="re-download or re-compress the file",
        ) from exc


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Lines decoded as UTF-8 (a leading BOM is ignored); undecodable bytes name the line and the byte."""
    for number, raw in _raw_lines(path):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataFileError(
                path,
                f"bytes that are not valid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}: {exc.reason})",
                line=number,
                fix="convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 in > out` if it is Latin-1",
            ) from exc


def _text_value(path: Path, line: int, name: str, value: Any, *, what: str = "line") -> str:
    if isinstance(value, str):
        return value
    if value is None:
        problem, fix = "is null", "give the field a string value, or remove the example"
    elif isinstance(value, (list, tuple)):
        problem = f"is {_a(value)} ({_short(value)}), not a string"
        fix = "join the pieces into one string (e.g. ' '.join(...)) when writing the file"
    elif isinstance(value, dict):
        problem = f"is an object with fields {sorted(value)}, not a string"
        fix = f"name a nested string field, e.g. {name}.{next(iter(value), 'key')}"
    else:
        problem = f"is {_a(value)} ({_short(value)}), not a string"
        fix = f'quote the value in the file ("{value}")'
    raise DataFileError(path, problem, line=line, field=name, fix=fix, what=what)


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."


def _lookup(record: dict[str, Any], name: str) -> tuple[bool, Any]:
    """Field `name` of a JSON object: a literal key first, then a dotted path into nested objects."""
    if name in record:
        return True, record[name]
    node: Any = record
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _field_names(record: dict[str, Any], prefix: str = "") -> list[str]:
    names = []
    for key, value in record.items():
        if isinstance(value, dict) and value:
            names += _field_names(value, f"{prefix}{key}.")
        else:
            names.append(f"{prefix}{key}")
    return names


def _read_json(path: Path, fields: tuple[str, str]) -> Iterator[tuple[int, str, str]]:
    for number, line in _decoded_lines(path):
        if not line.strip():
            continue  # blank lines (often a trailing one) carry no example
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == 1 and line.lstrip().startswith("["):
                raise DataFileError(
                    path,
                    "is a JSON array, not JSON Lines",
                    fix="write one object per line, e.g. `jq -c '.[]' in.json > out.jsonl`",
                ) from exc
            raise DataFileError(
                path,
                f"malformed JSON ({exc.msg} at column {exc.colno})",
                line=number,
                fix="each line must be one complete JSON object; check quotes and escapes, or remove the line",
            ) from exc
        if not isinstance(record, dict):
            raise DataFileError(
                path,
                f"expected a JSON object, got {_a(record)} ({_short(record)})",
                line=number,
                fix='write one object per line, e.g. {"translation": {"de": "...", "en": "..."}}',
            )
        values = []
        for name in fields:
            found, value = _lookup(record, name)
            if not found:
                raise DataFileError(
                    path,
                    f"missing field (the line has: {', '.join(_field_names(record)) or 'no fields'})",
                    line=number,
                    field=name,
                    fix="add the field to the line, or name the field the file uses (dotted for nested fields, "
                    "e.g. translation.de; recipes: --source_lang/--target_lang or --text_column/--summary_column)",
                )
            values.append(_text_value(path, number, name, value))
        yield number, values[0], values[1]


def _read_delimited(path: Path, fields: tuple[str, str], *, fmt: Format) -> Iterator[tuple[int, str, str]]:
    lines = _decoded_lines(path)
    kind = "CSV" if fmt == "csv" else "TSV"
    options: dict[str, Any] = (
        {"delimiter": ","} if fmt == "csv" else {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    )
    tracked = _LineTracker(lines)
    reader = csv.reader(tracked, strict=True, **options)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DataFileError(
            path, f"malformed {kind} header ({exc})", line=1, fix="fix the header row"
        ) from exc
    if header is None:
        raise DataFileError(
            path,
            "the file is empty (no header row)",
            fix=f"write a {kind} header row, then one example per row",
        )
    positions = []
    for name in fields:
        if name not in header:
            raise DataFileError(
                path,
                f"missing column in the header (the header has: {', '.join(header)})",
                line=1,
                field=name,
                fix="add the column, or name one of the header's columns (recipes: --text_column/--summary_column)",
            )
        positions.append(header.index(name))
    while True:
        start = tracked.number + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataFileError(
                path,
                f"malformed {kind} row ({exc})",
                line=start,
                fix='quote fields that contain the delimiter, quotes or newlines (a quote inside a quoted field is written "")',
            ) from exc
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise DataFileError(
                path,
                f"the row has {len(row)} fields but the header has {len(header)}",
                line=start,
                fix=f"quote fields that contain the delimiter {options['delimiter']!r}, or fix the row"
                if fmt == "csv"
                else "remove the extra or missing tabs from the row (TSV fields cannot contain tabs)",
            )
        yield start, row[positions[0]], row[positions[1]]


class _LineTracker:
    """Feeds decoded lines to `csv.reader` and remembers the physical number of the last line read."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self.lines, self.number = lines, 0

    def __iter__(self) -> _LineTracker:
        return self

    def __next__(self) -> str:
        self.number, line = next(self.lines)
        return line


def _read_parallel(source: Path, target: Path) -> Iterator[tuple[int, str, str]]:
    source_lines, target_lines = _decoded_lines(source), _decoded_lines(target)
    count = 0
    while True:
        s, t = next(source_lines, None), next(target_lines, None)
        if s is None and t is None:
            return
        if s is None or t is None:
            longer, shorter = (target, source) if s is None else (source, target)
            rest = sum(1 for _ in (target_lines if s is None else source_lines)) + 1
            raise DataFileError(
                shorter,
                f"has {count} lines but {longer} has {count + rest}: parallel files need one sentence per line, "
                "line i of one translating line i of the other",
                fix="re-export the pair from the same source, or remove the unpaired lines",
            )
        count += 1
        yield count, s[1].rstrip("\r\n"), t[1].rstrip("\r\n")


def _collect(
    reader: Iterator[tuple[int, str, str]],
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


def _log_report(origin: str, report: LoadReport) -> None:
    if report.dropped_empty:
        shown = ", ".join(map(str, report.dropped_empty[:10])) + (
            ", ..." if len(report.dropped_empty) > 10 else ""
        )
        logger.warning(
            "%s: dropped %d example(s) with an empty source or target (lines %s); kept %d",
            origin,
            len(report.dropped_empty),
            shown,
            report.kept,
        )


# ----------------------------------------------------------------------------------------------------------------
# building the dataset


def _generate_pairs(sources: list[str], targets: list[str], source_column: str, target_column: str):
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


def _load_saved(
    path: Path,
    fields: tuple[str, str],
    columns: tuple[str, str],
    *,
    split: str | None,
    max_samples: int | None,
    drop_empty: bool,
) -> datasets.Dataset:
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
    dataset: datasets.Dataset = loaded
    if any("." in name for name in fields):
        dataset = dataset.flatten()  # nested {"translation": {"de": ...}} becomes the column "translation.de"
    for name in fields:
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
    dataset = dataset.select_columns(list(fields))
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
    _log_report(str(path), LoadReport(kept=len(keep), dropped_empty=dropped))
    if not keep:
        raise DataFileError(
            path, "the dataset has no usable rows", fix="check that the directory is the right one"
        )
    if len(keep) < len(dataset):
        dataset = dataset.select(keep)
    rename = {old: new for old, new in zip(fields, columns) if old != new}
    return dataset.rename_columns(rename) if rename else dataset
