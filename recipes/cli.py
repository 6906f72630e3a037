"""How the recipes' commands end on a user error: `error: <message>` on stderr and exit status 2, the way
argparse reports a bad option, instead of a traceback that buries the one line that says what to fix.

A user error is an exception of the kinds the checks raise on purpose, each with a message that names the
argument, file or line and the fix: `ValueError` (bad values, contradictory options; `DataFileError` for a bad
data line is one), `KeyError` (a metric or column that is not there), and the file errors of the operating
system (a path that does not exist, a folder where a file belongs, no permission). Any other exception is a
bug, and keeps its traceback. `--debug` on the command line, or `S2S_DEBUG=1` in the environment, shows the
traceback of user errors too.

`--debug` alone is this switch, and is taken off the arguments before the command parses them: the training
recipes already have a `--debug VALUE` option (the trainer's debug features, e.g. `--debug underflow_overflow`),
which needs its value. That option, given with a value, passes through and shows tracebacks as well.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)

DEBUG_HELP = (
    "On a user error (a bad argument, a missing or malformed file), show the Python traceback instead of the "
    "one-line message; S2S_DEBUG=1 in the environment does the same."
)
ERRORS_EPILOG = (
    "A bad argument, file or data line ends the job with 'error: <message>' on stderr and exit status 2. "
    "--debug alone (or S2S_DEBUG=1 in the environment) shows the Python traceback instead; --debug with a "
    "value sets the trainer's debug features."
)


def debug_requested(argv: Sequence[str]) -> bool:
    """`--debug` among the arguments, or S2S_DEBUG set to anything but "", "0", "false" or "no"."""
    flag = os.environ.get("S2S_DEBUG", "").strip().lower()
    return "--debug" in argv or flag not in ("", "0", "false", "no")


def without_bare_debug(argv: Sequence[str]) -> list[str]:
    """`argv` less each `--debug` that has no value after it (the end, or another option next)."""
    return [
        arg
        for i, arg in enumerate(argv)
        if not (arg == "--debug" and (i + 1 == len(argv) or argv[i + 1].startswith("-")))
    ]


def error_message(err: BaseException) -> str:
    """The exception's message on one line. A KeyError's str() is the repr of its key (quotes included), so
    its argument is used as written."""
    text = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else str(err)
    text = " ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return text or type(err).__name__


def recorded_for_torchrun(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """Under torchrun (which names an error file per worker in TORCHELASTIC_ERROR_FILE), `main` wrapped in
    torch's `record`, so a failing worker writes its exception and traceback there and torchrun's failure
    summary names the rank and the cause; elsewhere `main` itself, and torch is not imported for it."""
    if "TORCHELASTIC_ERROR_FILE" not in os.environ:
        return main
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(main)


def run_command(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)` as a command: 0 when it returns, 2 with `error: <message>` on a user error."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        recorded_for_torchrun(main)(without_bare_debug(args))
    except USER_ERRORS as err:
        if debug_requested(args):
            raise
        sys.stdout.flush()  # what the job printed before the error stays above the message
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 2
    return 0
