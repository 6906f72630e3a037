"""One reader per line-based format. Each takes the (source, target) files and fields and yields
(line number, source text, target text), the texts checked to be strings; a problem raises `DataFileError`
with the file, the line and the field. JSON Lines, CSV and TSV read both texts from one file (`files` names it
twice); parallel text reads line i of each file.

A problem confined to one line (malformed JSON, a missing field, a number where text belongs, undecodable
bytes, a ragged CSV row) goes to `on_bad_line` when the caller passes one, and the reader carries on with the
next line; problems of the whole file (a JSON array, a corrupt gzip stream, parallel files of different
lengths, a missing header column) always raise, since no line of such a file can be trusted."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recipes.text_files.errors import DataFileError, a_type, short, text_value
from recipes.text_files.lines import BadLineHandler, decoded_lines

Pairs = Iterator[tuple[int, str, str]]


# ----------------------------------------------------------------------------------------------------------------
# JSON Lines


def read_json(
    files: tuple[Path, Path], fields: tuple[str, str], on_bad_line: BadLineHandler | None = None
) -> Pairs:
    path = files[0]
    for number, line in decoded_lines(path, on_bad_line):
        if line is None or not line.strip():
            continue  # an undecodable line already reported, or a blank one (often a trailing one)
        try:
            source, target = _json_texts(path, number, line, fields)
        except DataFileError as error:
            if on_bad_line is None or error.line is None:
                raise
            on_bad_line(error)
            continue
        yield number, source, target


def _json_texts(path: Path, number: int, line: str, fields: tuple[str, str]) -> tuple[str, str]:
    record = _json_object(path, number, line)
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
        values.append(text_value(path, number, name, value))
    return values[0], values[1]


def _json_object(path: Path, number: int, line: str) -> dict[str, Any]:
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
            f"expected a JSON object, got {a_type(record)} ({short(record)})",
            line=number,
            fix='write one object per line, e.g. {"translation": {"de": "...", "en": "..."}}',
        )
    return record


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


# ----------------------------------------------------------------------------------------------------------------
# CSV and TSV


def read_csv(
    files: tuple[Path, Path], fields: tuple[str, str], on_bad_line: BadLineHandler | None = None
) -> Pairs:
    return _read_delimited(files[0], fields, kind="CSV", options={"delimiter": ","}, on_bad_line=on_bad_line)


def read_tsv(
    files: tuple[Path, Path], fields: tuple[str, str], on_bad_line: BadLineHandler | None = None
) -> Pairs:
    # No quoting: a quote inside a tab-separated sentence is part of the sentence.
    return _read_delimited(
        files[0],
        fields,
        kind="TSV",
        options={"delimiter": "\t", "quoting": csv.QUOTE_NONE},
        on_bad_line=on_bad_line,
    )


def _read_delimited(
    path: Path,
    fields: tuple[str, str],
    *,
    kind: str,
    options: dict[str, Any],
    on_bad_line: BadLineHandler | None,
) -> Pairs:
    tracked = _LineTracker(decoded_lines(path, on_bad_line))
    reader = csv.reader(tracked, strict=True, **options)
    header = _header(path, reader, kind)
    positions = [_column(path, header, name) for name in fields]
    while True:
        start = tracked.number + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            error = DataFileError(
                path,
                f"malformed {kind} row ({exc})",
                line=start,
                fix='quote fields that contain the delimiter, quotes or newlines (a quote inside a quoted field is written "")',
            )
            if on_bad_line is None:
                raise error from exc
            on_bad_line(error)
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            error = DataFileError(
                path,
                f"the row has {len(row)} fields but the header has {len(header)}",
                line=start,
                fix=f"quote fields that contain the delimiter {options['delimiter']!r}, or fix the row"
                if kind == "CSV"
                else "remove the extra or missing tabs from the row (TSV fields cannot contain tabs)",
            )
            if on_bad_line is None:
                raise error
            on_bad_line(error)
            continue
        yield start, row[positions[0]], row[positions[1]]


def _header(path: Path, reader: Iterator[list[str]], kind: str) -> list[str]:
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
    return header


def _column(path: Path, header: list[str], name: str) -> int:
    if name not in header:
        raise DataFileError(
            path,
            f"missing column in the header (the header has: {', '.join(header)})",
            line=1,
            field=name,
            fix="add the column, or name one of the header's columns (recipes: --text_column/--summary_column)",
        )
    return header.index(name)


class _LineTracker:
    """Feeds decoded lines to `csv.reader` and remembers the physical number of the last line read, so a row
    that spans lines (a quoted newline) is reported at the line where it starts."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self.lines, self.number = lines, 0

    def __iter__(self) -> _LineTracker:
        return self

    def __next__(self) -> str:
        self.number, line = next(self.lines)
        while line is None:  # undecodable, already reported to the caller's handler: csv never sees it
            self.number, line = next(self.lines)
        return line


# ----------------------------------------------------------------------------------------------------------------
# parallel plain text


def read_parallel(
    files: tuple[Path, Path], fields: tuple[str, str], on_bad_line: BadLineHandler | None = None
) -> Pairs:
    """Line i of the source file with line i of the target file; files of different lengths are an error.
    An undecodable line (skipped through `on_bad_line`) drops the pair, so the files stay aligned."""
    source, target = files
    source_lines, target_lines = decoded_lines(source, on_bad_line), decoded_lines(target, on_bad_line)
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
        if s[1] is None or t[1] is None:
            continue
        yield count, s[1].rstrip("\r\n"), t[1].rstrip("\r\n")
