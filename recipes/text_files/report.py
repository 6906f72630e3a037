"""What a load kept, dropped and skipped, and the warnings that say so (never silently)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from recipes.text_files.errors import DataFileError

logger = logging.getLogger("recipes.text_files")

SHOWN_LOCATIONS = 5
"""How many skipped lines the warning quotes (file:line and the problem); the rest are counted per file."""


@dataclass
class LoadReport:
    """What a load kept and dropped (logged as a warning when something was dropped)."""

    kept: int = 0
    dropped_empty: list[int] = field(default_factory=list)
    """Line (or row) numbers dropped because the source or target was empty (only with `drop_empty=True`)."""


@dataclass
class SkippedLines:
    """Lines skipped as unusable (only with `skip_bad_lines=True`): counted per file, the first few kept with
    their problem, so the warning can say where to look."""

    per_file: Counter = field(default_factory=Counter)
    first: list[str] = field(default_factory=list)
    """`file:line: problem` of the first `SHOWN_LOCATIONS` skipped lines."""

    def add(self, error: DataFileError) -> None:
        self.per_file[error.path] += 1
        if len(self.first) < SHOWN_LOCATIONS:
            where = f"{error.path}:{error.line}" + (f" (field {error.field!r})" if error.field else "")
            self.first.append(f"{where}: {error.problem}")

    @property
    def total(self) -> int:
        return sum(self.per_file.values())

    def to_json(self) -> dict[str, Any]:
        return {"per_file": dict(self.per_file), "first": list(self.first)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SkippedLines:
        return cls(per_file=Counter(data["per_file"]), first=list(data["first"]))


def log_report(origin: str, report: LoadReport) -> None:
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


def log_skipped(skipped: SkippedLines, *, kept: int) -> None:
    """The warning after a load that skipped lines: how many, in which files, and the first few locations."""
    if not skipped.total:
        return
    files = ", ".join(f"{path}: {count}" for path, count in sorted(skipped.per_file.items()))
    first = "; ".join(skipped.first)
    more = " ..." if skipped.total > len(skipped.first) else ""
    logger.warning(
        "skipped %d bad line(s) (skip_bad_lines) and kept %d examples; per file: %s. First: %s%s",
        skipped.total,
        kept,
        files,
        first,
        more,
    )
