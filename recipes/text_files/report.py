"""What a load kept and dropped, and the warning that says so."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

logger = logging.getLogger("recipes.text_files")


@dataclass
class LoadReport:
    """What a load kept and dropped (logged as a warning when something was dropped)."""

    kept: int = 0
    dropped_empty: list[int] = field(default_factory=list)
    """Line (or row) numbers dropped because the source or target was empty (only with `drop_empty=True`)."""


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
