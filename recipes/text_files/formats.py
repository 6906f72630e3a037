"""Which format a data path is: told from its name (a folder is a saved dataset, `.gz` is looked through)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Format = Literal["json", "csv", "tsv", "text", "saved"]

_SUFFIX_FORMATS: dict[str, Format] = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv"}


def detect_format(path: str | Path) -> Format:
    """The format of `path` from its name: a directory is a saved dataset; `.gz` is looked through; any other
    name is "text" (parallel plain-text files, or a name the loader will refuse)."""
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


def _existing(path: Path) -> Path | None:
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None
