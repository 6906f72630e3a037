"""Reading a shard of line-based text from a saved position, so that a resumed stream never re-reads what
came before it.

A shard is one file (JSON Lines, TSV: one example per line) or a tuple of parallel files (``train.de`` +
``train.en``: line i of each is one example). Files may be gzip-compressed, told by their magic bytes, not
their names. Each example comes with the position right after it: the number of lines consumed and, for
plain files, the byte offset of each file, so ``read_from`` continues with a ``seek``. A gzip stream cannot
seek; it is decompressed again from the start of the shard and the consumed lines skipped without being
decoded or parsed: only the current shard is re-read.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO

Shard = str | Path | tuple[str | Path, ...]
Position = dict[str, Any]  # {"lines": n, "bytes": [offset per file] or None for gzip}
_GZIP_MAGIC = b"\x1f\x8b"
logger = logging.getLogger(__name__)


class ShardLines:
    """A shard reader over line-based files: ``parse`` turns the line texts of one example (one string per
    file of the shard, without the line ending) into an example, or returns None to skip the line (a blank
    line, say). A ``ValueError`` from ``parse``, or a line that is not UTF-8, is raised naming the file and the
    line; with ``skip_bad_lines`` such a line is skipped instead, counted in ``bad_lines`` (the first locations
    kept in ``bad_line_examples``) and reported in a warning when its shard has been read, never silently.

    ``reader(shard)`` yields the examples (the plain ``read_shard`` protocol), ``reader.read_from(shard,
    position)`` yields ``(example, position after it)`` from a saved position (None: the start)."""

    def __init__(self, parse: Callable[..., Any], *, skip_bad_lines: bool = False) -> None:
        self.parse = parse
        self.skip_bad_lines = skip_bad_lines
        self.bad_lines = 0  # over every shard this reader read
        self.bad_line_examples: list[str] = []

    def __call__(self, shard: Shard) -> Iterator[Any]:
        for example, _ in self.read_from(shard, None):
            yield example

    def read_from(self, shard: Shard, position: Position | None) -> Iterator[tuple[Any, Position]]:
        return self.parse_lines(shard, self.read_lines_from(shard, position))

    def parse_lines(
        self, shard: Shard, lines: Iterator[tuple[list[bytes], Position]]
    ) -> Iterator[tuple[Any, Position]]:
        """``(example, position after it)`` for the lines of ``shard`` that ``read_lines_from`` gave (the rest
        of them, for a reader that parsed some already); bad lines reported when they run out."""
        paths = shard_paths(shard)
        bad: list[str] = []
        for raws, after in lines:
            example = self._parse(paths, raws, after["lines"], bad)
            if example is not None:
                yield example, after
        self._report(paths, bad)

    def read_lines_from(
        self, shard: Shard, position: Position | None
    ) -> Iterator[tuple[list[bytes], Position]]:
        """Every line from ``position`` on, undecoded (one ``bytes`` per file of the shard), with the position
        after it: what ``read_from`` parses. A resumed stream reads its buffer's lines this way and parses only
        those it still needs (``parse_line``), which costs a fraction of parsing them all."""
        paths = shard_paths(shard)
        lines = int(position["lines"]) if position else 0
        offsets = position.get("bytes") if position else None
        with ExitStack() as stack:
            files = [stack.enter_context(_open(path)) for path in paths]
            seekable = all(not isinstance(f, gzip.GzipFile) for f in files)
            if lines and seekable and offsets is not None:
                for f, offset in zip(files, offsets, strict=True):
                    f.seek(int(offset))
            elif lines:
                _skip_lines(files, paths, lines)
            tells = [f.tell() if seekable else 0 for f in files]
            if len(files) == 1:
                yield from _single_file_lines(files[0], paths[0], lines, tells[0] if seekable else None)
                return
            while True:
                raws = [_next_line(f, path, lines + 1) for f, path in zip(files, paths, strict=True)]
                if all(raw is None for raw in raws):
                    return
                if any(raw is None for raw in raws):
                    _unequal_lengths(paths, raws, lines)
                lines += 1
                if seekable:
                    tells = [t + len(raw) for t, raw in zip(tells, raws, strict=True)]
                yield raws, {"lines": lines, "bytes": list(tells) if seekable else None}

    def parse_line(self, shard: Shard, raws: list[bytes], position: Position) -> Any:
        """The example of one line ``read_lines_from`` gave (None for a line ``parse`` skips); a bad line is
        handled as ``read_from`` handles it (raised naming file and line, or counted when skipped)."""
        return self._parse(shard_paths(shard), raws, int(position["lines"]), self.bad_line_examples[:0])

    def _parse(self, paths: list[Path], raws: list[bytes], number: int, bad: list[str]) -> Any:
        try:
            texts = [_decode(raw, path, number) for raw, path in zip(raws, paths, strict=True)]
        except ValueError as exc:
            self._bad_line(str(exc), bad, exc)
            return None
        try:
            return self.parse(*texts)
        except ValueError as exc:
            self._bad_line(f"{_where(paths)}, line {number}: {exc}", bad, exc)
            return None

    def _bad_line(self, message: str, bad: list[str], cause: ValueError) -> None:
        if not self.skip_bad_lines:
            raise ValueError(
                f"{message} (skip_bad_lines=True skips such lines, counted and reported)"
            ) from cause
        bad.append(message)
        self.bad_lines += 1
        if len(self.bad_line_examples) < 5:
            self.bad_line_examples.append(message)

    @staticmethod
    def _report(paths: list[Path], bad: list[str]) -> None:
        if bad:
            shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
            logger.warning("%s: skipped %d bad line(s): %s", _where(paths), len(bad), shown)


def shard_paths(shard: Shard) -> list[Path]:
    return [Path(p) for p in shard] if isinstance(shard, (tuple, list)) else [Path(shard)]


def _open(path: Path) -> BinaryIO:
    if not path.is_file():
        raise FileNotFoundError(f"shard file {path} does not exist or is not a regular file")
    with open(path, "rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else open(path, "rb")  # type: ignore[return-value]


def _single_file_lines(
    f: BinaryIO, path: Path, lines: int, tell: int | None
) -> Iterator[tuple[list[bytes], Position]]:
    """``read_lines_from`` for a one-file shard, the common case: the file iterated directly, without the
    per-line bookkeeping of parallel files (a resume reads a whole buffer's lines, 200,000 of them, this way)."""
    try:
        for raw in f:
            lines += 1
            if tell is None:
                yield [raw], {"lines": lines, "bytes": None}
            else:
                tell += len(raw)
                yield [raw], {"lines": lines, "bytes": [tell]}
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(
            f"{path}, line {lines + 1}: the gzip stream is corrupt or truncated ({exc})"
        ) from exc


def _next_line(f: BinaryIO, path: Path, number: int) -> bytes | None:
    try:
        raw = f.readline()
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}, line {number}: the gzip stream is corrupt or truncated ({exc})") from exc
    return raw or None


def _skip_lines(files: list[BinaryIO], paths: list[Path], count: int) -> None:
    for f, path in zip(files, paths, strict=True):
        for number in range(1, count + 1):
            if _next_line(f, path, number) is None:
                raise ValueError(
                    f"{path} has {number - 1} lines but the saved position is after line {count}: the shard "
                    "changed since the position was saved; resume on the same files or start a fresh epoch"
                )


def _decode(raw: bytes, path: Path, number: int) -> str:
    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}, line {number}: bytes that are not valid UTF-8 (byte {raw[exc.start]:#04x} at column "
            f"{exc.start + 1}); convert the file to UTF-8"
        ) from exc


def _unequal_lengths(paths: list[Path], raws: list[bytes | None], lines: int) -> None:
    ended = [str(p) for p, raw in zip(paths, raws, strict=True) if raw is None]
    raise ValueError(
        f"{', '.join(ended)} ended after {lines} lines while {_where(paths)} go on: parallel files need one "
        "sentence per line, line i of one translating line i of the other"
    )


def _where(paths: list[Path]) -> str:
    return " + ".join(str(p) for p in paths)


# ----------------------------------------------------------------------------------------------- parsers
def parallel_text(source_key: str = "source", target_key: str = "target") -> Callable[..., Any]:
    """Parser for a pair of parallel plain-text files: ``{source_key: line of file 1, target_key: line of
    file 2}``."""

    def parse(source: str, target: str) -> dict[str, str]:
        return {source_key: source, target_key: target}

    return parse


def tsv_pair(
    source_column: int = 0, target_column: int = 1, *, source_key: str = "source", target_key: str = "target"
) -> Callable[..., Any]:
    """Parser for tab-separated lines (no quoting: a quote is part of the sentence); blank lines skipped."""

    def parse(line: str) -> dict[str, str] | None:
        if not line.strip():
            return None
        fields = line.split("\t")
        if max(source_column, target_column) >= len(fields):
            raise ValueError(
                f"the line has {len(fields)} tab-separated fields, columns {source_column} and {target_column} "
                "are needed"
            )
        return {source_key: fields[source_column], target_key: fields[target_column]}

    return parse


def jsonl_pair(
    source_field: str, target_field: str, *, source_key: str = "source", target_key: str = "target"
) -> Callable[..., Any]:
    """Parser for JSON Lines: fields by name, nested ones by dotted name (``translation.de``); blank lines
    skipped; a missing or non-string field is an error naming it."""

    def parse(line: str) -> dict[str, str] | None:
        if not line.strip():
            return None
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"malformed JSON ({exc.msg} at column {exc.colno})") from exc
        return {source_key: _field(record, source_field), target_key: _field(record, target_field)}

    return parse


def _field(record: Any, name: str) -> str:
    node = record
    if isinstance(node, dict) and name in node:
        node = node[name]
    else:
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"missing field {name!r}")
            node = node[part]
    if not isinstance(node, str):
        raise ValueError(f"field {name!r} is {type(node).__name__}, not a string")
    return node
