"""A JSON object read from a file, with errors that name the file, the line and the column: model configs,
generation configs and Hugging Face folders all need the same checks, and a user editing one by hand needs to
be told where the mistake is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_object(
    path: Path, *, missing: str | None = None, what: str = "a JSON object"
) -> dict[str, Any]:
    """The JSON object in `path`. `missing` replaces the message when the file does not exist (say what the
    caller expected there); `what` names the object in the message when the file holds something else."""
    if not path.is_file():
        raise FileNotFoundError(missing or f"{path} not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected {what}, got {type(data).__name__}")
    return data
