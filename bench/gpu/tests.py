"""The `cuda` tests (tests/s2s/test_cuda.py), run by pytest in a child process under a time limit.

The outcome of each test is read from pytest's verbose output as it is written, so a run stopped at the limit
still reports the tests it finished. The CPU decoding kernel is switched off (`S2S_DECODE_KERNEL=0`): a GPU
check must not spend its minutes compiling C++ for the few CPU references.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.common import REPO

OUTCOME = re.compile(r"^(tests/\S+::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", re.MULTILINE)
SUMMARY = re.compile(r"^=+ (.*(?:passed|failed|skipped|error|deselected).*) =+$", re.MULTILINE)


def run_cuda_tests(out: Path, *, timeout: float, partial: dict) -> dict:
    log_path = out / "cuda_tests.log"
    command = [
        sys.executable, "-m", "pytest", "tests/s2s/test_cuda.py", "-m", "cuda", "-v", "-rfEs",
        "-p", "no:cacheprovider", "--durations=8",
    ]  # fmt: skip
    env = {**os.environ, "S2S_DECODE_KERNEL": "0", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    partial.update(command=" ".join(command[1:]), log=log_path.name)
    with log_path.open("w") as handle:
        try:
            proc = subprocess.run(
                command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout
            )
            partial["exit_code"] = proc.returncode
        except subprocess.TimeoutExpired:
            partial["exit_code"] = None
            partial["timed_out_after_s"] = timeout
    partial.update(parse_log(log_path.read_text(errors="replace")))
    return partial


def parse_log(text: str) -> dict:
    """Each test's outcome, the counts, pytest's summary line and the failure report, from a `-v` log (whole
    or cut short)."""
    outcomes = dict(OUTCOME.findall(text))
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    summary = SUMMARY.findall(text)
    return {
        "outcomes": outcomes,
        "counts": counts,
        "summary": summary[-1] if summary else None,
        "failures": _failure_sections(text),
    }


def _failure_sections(text: str, *, limit: int = 6000) -> str | None:
    """The FAILURES / ERRORS part of the log (the assertion messages), cut to `limit` characters."""
    start = min((i for i in (text.find("= FAILURES ="), text.find("= ERRORS =")) if i >= 0), default=-1)
    if start < 0:
        return None
    body = text[start:]
    return body if len(body) <= limit else body[:limit] + "\n... (cut; the whole log is in cuda_tests.log)"
