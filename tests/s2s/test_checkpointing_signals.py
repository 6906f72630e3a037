"""GracefulInterrupt: SIGINT/SIGTERM become a flag, a second Ctrl-C stops at once, handlers are restored."""

import os
import signal
import threading
import time

import pytest

from s2s.signals import GracefulInterrupt, TrainingInterrupted


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # Python runs the handler at the next bytecode boundary of the main thread


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_sets_the_flag_instead_of_killing(signum):
    with GracefulInterrupt() as interrupt:
        assert not interrupt.requested
        _deliver(signum)
        assert interrupt.requested
        assert interrupt.signal_name == signal.Signals(signum).name


def test_second_sigint_raises_keyboard_interrupt_immediately():
    with GracefulInterrupt() as interrupt:
        _deliver(signal.SIGTERM)
        _deliver(signal.SIGTERM)  # a repeated SIGTERM keeps waiting for the checkpoint
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
            _deliver(signal.SIGINT)


def test_previous_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with GracefulInterrupt():
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before


def test_disabled_or_off_main_thread_installs_nothing():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulInterrupt(enabled=False):
        assert signal.getsignal(signal.SIGTERM) is before
    errors = []

    def worker():
        try:
            with GracefulInterrupt() as interrupt:
                assert not interrupt.requested
        except Exception as err:  # signal.signal outside the main thread would raise ValueError
            errors.append(err)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert errors == []


def test_exit_names_the_signal_step_and_checkpoint(tmp_path):
    with GracefulInterrupt() as interrupt:
        _deliver(signal.SIGTERM)
        with pytest.raises(TrainingInterrupted) as info:
            interrupt.exit(step=7, checkpoint=tmp_path / "checkpoint-7")
    err = info.value
    assert err.code == 128 + signal.SIGTERM
    assert (err.signal_name, err.step, err.checkpoint) == ("SIGTERM", 7, tmp_path / "checkpoint-7")
    assert (
        "SIGTERM at step 7" in str(err)
        and "checkpoint-7" in str(err)
        and "resume_from_checkpoint" in str(err)
    )


def test_exit_without_saving_says_how_to_enable_it():
    interrupt = GracefulInterrupt()
    interrupt.request("SIGINT")
    with pytest.raises(TrainingInterrupted, match="no checkpoint saved.*save_strategy") as info:
        interrupt.exit(step=3, checkpoint=None)
    assert info.value.code == 130
