"""Lines of a data file, plain or gzip-compressed, decoded as UTF-8; every failure names the file and line."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from recipes.text_files.errors import DataFileError

_GZIP_MAGIC = b"\x1f\x8b"

BadLineHandler = Callable[[DataFileError], None]
"""Called with the error of a line that cannot be used, when the caller chose to skip such lines (it counts
and reports them); without one, the error is raised."""


def check_file(path: Path) -> None:
    """Refuse a path that does not exist or is not a regular file, before any reading."""
    if not path.exists():
        raise DataFileError(
            path, "no such file", fix="check the path (relative paths start from the current directory)"
        )
    if not path.is_file():
        raise DataFileError(
            path, "is not a regular file", fix="pass a data file or a saved dataset directory"
        )


def raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes with the line ending) of a plain or gzip-compressed file.

    Compression is told by the magic bytes, not the name: a `.gz` that is not compressed, or a compressed
    file without the suffix, reads the same."""
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


def decoded_lines(path: Path, on_bad_line: BadLineHandler | None = None) -> Iterator[tuple[int, str | None]]:
    """Lines decoded as UTF-8 (a leading BOM is ignored); undecodable bytes name the line and the byte.

    With `on_bad_line`, an undecodable line is handed to it and yielded as None (so parallel files can drop
    the pair and stay aligned) instead of raising."""
    for number, raw in raw_lines(path):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            error = DataFileError(
                path,
                f"bytes that are not valid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}: {exc.reason})",
                line=number,
                fix="convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 in > out` if it is Latin-1",
            )
            if on_bad_line is None:
                raise error from exc
            on_bad_line(error)
            yield number, None
