"""The error a data file raises: where (file, line or row, field), what is wrong, and how to fix it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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


def text_value(path: Path, line: int, name: str, value: Any, *, what: str = "line") -> str:
    """`value` when it is a string; otherwise the error that says what it is instead and how to fix the file."""
    if isinstance(value, str):
        return value
    if value is None:
        problem, fix = "is null", "give the field a string value, or remove the example"
    elif isinstance(value, (list, tuple)):
        problem = f"is {a_type(value)} ({short(value)}), not a string"
        fix = "join the pieces into one string (e.g. ' '.join(...)) when writing the file"
    elif isinstance(value, dict):
        problem = f"is an object with fields {sorted(value)}, not a string"
        fix = f"name a nested string field, e.g. {name}.{next(iter(value), 'key')}"
    else:
        problem = f"is {a_type(value)} ({short(value)}), not a string"
        fix = f'quote the value in the file ("{value}")'
    raise DataFileError(path, problem, line=line, field=name, fix=fix, what=what)


def a_type(value: Any) -> str:
    """'a list', 'an int': the type of `value` with its article, for messages."""
    name = type(value).__name__
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def short(value: Any, width: int = 40) -> str:
    """`value` as the file wrote it, cut to `width` characters, to quote in a message."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."
