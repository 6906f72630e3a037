"""Ctrl-C (SIGINT) and SIGTERM during training: finish the current step, save a checkpoint, exit cleanly.

The trainer polls ``interrupt.requested`` once per optimizer step (never inside a half-done accumulation window,
so the checkpoint is exactly resumable). A second Ctrl-C raises KeyboardInterrupt at once for users who do not
want to wait. SIGTERM is what batch schedulers (Slurm, Kubernetes) send before SIGKILL, so it gets the same
graceful treatment.

    with GracefulInterrupt() as interrupt:
        for step in ...:
            ...                                   # one full optimizer step
            if interrupt.requested:
                path = save(...) if saving_enabled else None
                interrupt.exit(step=global_step, checkpoint=path)   # raises TrainingInterrupted
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import NoReturn

logger = logging.getLogger(__name__)


class TrainingInterrupted(SystemExit):
    """Raised after an interrupted run has saved its checkpoint.

    A SystemExit so a script ends without a traceback, with the shell's exit status for that signal
    (130 for SIGINT, 143 for SIGTERM); catch it to do something else (tests, notebooks)."""

    def __init__(self, message: str, *, signal_name: str, step: int | None, checkpoint: Path | None):
        super().__init__(128 + signal.Signals[signal_name].value)
        self.message = message
        self.signal_name = signal_name
        self.step = step
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        return self.message


class GracefulInterrupt:
    """Context manager that turns SIGINT/SIGTERM into a flag (``requested``, ``signal_name``).

    Handlers are only installed in the main thread (Python allows no other); elsewhere the flag simply never
    flips. The previous handlers are restored on exit, and ``enabled=False`` makes the whole thing a no-op."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM), *, enabled: bool = True):
        self.signals = tuple(signals)
        self.enabled = enabled
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulInterrupt:
        self.requested = False
        self.signal_name = None
        if self.enabled and threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt(f"second {name}: stopping immediately, without a checkpoint")
            logger.warning("received %s again; already stopping after the current step", name)
            return
        self.requested = True
        self.signal_name = name
        logger.warning(
            "received %s: finishing the current step, then saving a checkpoint and stopping "
            "(press Ctrl-C again to stop immediately without saving)",
            name,
        )

    def request(self, signal_name: str = "SIGTERM") -> None:
        """Set the flag as if the signal had arrived (another rank saw it, or a test)."""
        self.requested = True
        self.signal_name = signal_name

    def exit(self, *, step: int | None, checkpoint: str | Path | None) -> NoReturn:
        """Log what happened and how to continue, then raise TrainingInterrupted."""
        name = self.signal_name or "SIGINT"
        if checkpoint is not None:
            checkpoint = Path(checkpoint)
            message = (
                f"Training interrupted by {name} at step {step}; saved {checkpoint}. "
                f"Resume with resume_from_checkpoint=True (or {str(checkpoint)!r})."
            )
        else:
            message = (
                f"Training interrupted by {name} at step {step}; no checkpoint saved (save_strategy='no'). "
                "Set save_strategy to 'steps' or 'epoch' to be able to resume."
            )
        logger.warning(message)
        raise TrainingInterrupted(message, signal_name=name, step=step, checkpoint=checkpoint)
