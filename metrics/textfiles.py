"""Reading line-aligned system and reference files, with errors that name the file and the line."""

from __future__ import annotations

from pathlib import Path


class InputFileError(ValueError):
    """A prediction or reference file that cannot be scored as given; the message says where and why."""


def read_lines(path: str | Path, *, encoding: str = "utf-8") -> list[str]:
    """One example per line. A final newline does not make an extra line; ``\\r\\n`` is read as ``\\n``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputFileError(f"{path}: cannot read ({e.strerror or e})") from e
    if not data:
        raise InputFileError(f"{path}: the file is empty; expected one example per line")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputFileError(
            f"{path}, line {line}, byte column {column}: not valid {encoding} "
            f"(byte 0x{data[e.start]:02x}); re-encode the file (e.g. `iconv -f latin1 -t utf-8`) "
            "or pass --encoding"
        ) from e
    except LookupError as e:
        raise InputFileError(f"unknown --encoding {encoding!r}") from e
    if text.startswith("\ufeff"):  # a UTF-8 byte order mark is not part of the first example
        text = text[1:]
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_aligned(prediction_file: str | Path, reference_files: list[str | Path], *, encoding: str = "utf-8"):
    """Predictions and reference streams, checked to have one line per example each."""
    if not reference_files:
        raise InputFileError("no reference file given")
    predictions = read_lines(prediction_file, encoding=encoding)
    streams = []
    for ref_file in reference_files:
        refs = read_lines(ref_file, encoding=encoding)
        if len(refs) != len(predictions):
            shorter, longer = (
                (ref_file, prediction_file) if len(refs) < len(predictions) else (prediction_file, ref_file)
            )
            raise InputFileError(
                f"{ref_file} has {len(refs)} lines but {prediction_file} has {len(predictions)}: line "
                f"{min(len(refs), len(predictions)) + 1} of {longer} has no counterpart in {shorter}"
            )
        streams.append(refs)
    return predictions, streams
