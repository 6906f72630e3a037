"""What Hugging Face example scripts read from `training_args` about processes: parallel_mode, ranks,
should_log and get_process_log_level, with Hugging Face's meanings."""

import contextlib
import logging
import sys

import pytest

from s2s.training_args import ParallelMode, TrainingArguments


def make(**kwargs) -> TrainingArguments:
    return TrainingArguments(output_dir="out", report_to="none", use_cpu=True, **kwargs)


@pytest.fixture
def replica(monkeypatch):
    """This process as the second of two torchrun processes (no process group needed for these properties)."""
    for name, value in (("RANK", "1"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)


@pytest.fixture
def main_of_two(monkeypatch):
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)


@pytest.fixture
def bare_logging():
    """Python's default levels, as at the start of a script; put back afterwards."""
    root, s2s_logger = logging.getLogger(), logging.getLogger("s2s")
    saved = (root.level, s2s_logger.level)
    root.setLevel(logging.WARNING)
    s2s_logger.setLevel(logging.NOTSET)
    yield
    root.setLevel(saved[0])
    s2s_logger.setLevel(saved[1])


@contextlib.contextmanager
def no_root_handlers():
    """A root logger without handlers, as at the start of a script: pytest's capture handlers would make
    `logging.basicConfig` do nothing. Entered inside the test body, since pytest adds them for each phase."""
    root = logging.getLogger()
    saved = root.handlers[:]
    for handler in saved:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)


# ------------------------------------------------------------------------------------------ parallel_mode
def test_parallel_mode_of_a_single_process():
    args = make()
    assert args.parallel_mode is ParallelMode.NOT_PARALLEL
    assert args.parallel_mode.value == "not_parallel" and args.world_size == 1


def test_parallel_mode_under_torchrun_with_two_processes(replica):
    args = make()
    assert args.parallel_mode is ParallelMode.DISTRIBUTED
    assert args.parallel_mode.value == "distributed" == args.parallel_mode  # a str enum equals its value
    assert (args.world_size, args.process_index, args.local_rank) == (2, 1, 1)


def test_parallel_mode_members_are_hugging_faces():
    hf = pytest.importorskip("transformers.training_args")
    assert {m.name: m.value for m in ParallelMode} == {m.name: m.value for m in hf.ParallelMode}


def test_the_attributes_hugging_face_scripts_read_exist():
    # run_translation.py / run_summarization.py read these from training_args
    args = make()
    summary = (
        f"Process rank: {args.local_rank}, device: {args.device}, n_gpu: {args.n_gpu}, "
        f"distributed training: {args.parallel_mode.value == 'distributed'}, 16-bits training: {args.fp16}"
    )
    assert (
        summary
        == "Process rank: -1, device: cpu, n_gpu: 0, distributed training: False, 16-bits training: False"
    )
    assert args.should_log and args.push_to_hub is False
    with args.main_process_first(desc="train dataset map pre-processing"):
        pass


# ------------------------------------------------------------------------------------------ log levels
@pytest.mark.usefixtures("bare_logging")
def test_passive_is_info_on_the_logging_process_and_warning_elsewhere(monkeypatch):
    assert make().get_process_log_level() == logging.INFO
    for name, value in (("RANK", "1"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    assert make().get_process_log_level() == logging.WARNING  # log_level_replica="warning", the default
    assert make(log_level_replica="passive").get_process_log_level() == logging.WARNING
    assert make(log_level_replica="error").get_process_log_level() == logging.ERROR


@pytest.mark.usefixtures("bare_logging")
def test_passive_keeps_a_level_the_application_set():
    logging.getLogger().setLevel(logging.ERROR)
    assert make().get_process_log_level() == logging.ERROR
    logging.getLogger("s2s").setLevel(logging.DEBUG)  # the s2s logger's own level wins over the root's
    assert make().get_process_log_level() == logging.DEBUG
    assert make(log_level="critical").get_process_log_level() == logging.CRITICAL  # an explicit level wins


@pytest.mark.usefixtures("bare_logging")
def test_log_on_each_node_decides_which_process_logs(monkeypatch):
    # the first process of the second node
    for name, value in (("RANK", "2"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "4")):
        monkeypatch.setenv(name, value)
    assert make().should_log and make().get_process_log_level() == logging.INFO
    quiet = make(log_on_each_node=False)
    assert not quiet.should_log and quiet.get_process_log_level() == logging.WARNING


def _run_script_start(args: TrainingArguments) -> None:
    """The first lines of Hugging Face's run_translation.py, with s2s's arguments."""
    with no_root_handlers():
        logging.basicConfig(
            format="%(levelname)s - %(name)s - %(message)s", handlers=[logging.StreamHandler(sys.stdout)]
        )
        logger = logging.getLogger("run_translation")
        logger.setLevel(args.get_process_log_level())
        logger.warning(f"Process rank: {args.local_rank}, device: {args.device}")
        logger.info("Training/evaluation parameters")


@pytest.mark.usefixtures("bare_logging")
def test_a_scripts_own_info_lines_show_on_the_main_process(capsys):
    _run_script_start(make())
    out = capsys.readouterr().out
    assert "WARNING - run_translation - Process rank: -1, device: cpu" in out
    assert "INFO - run_translation - Training/evaluation parameters" in out


@pytest.mark.usefixtures("bare_logging", "replica")
def test_a_replicas_info_lines_stay_hidden(capsys):
    _run_script_start(make())
    out = capsys.readouterr().out
    assert "Process rank: 1" in out and "Training/evaluation parameters" not in out


@pytest.mark.usefixtures("bare_logging", "main_of_two")
def test_only_the_main_process_of_two_shows_info(capsys):
    _run_script_start(make(log_level="warning"))  # an explicit level hides them on the main process too
    assert "Training/evaluation parameters" not in capsys.readouterr().out
    _run_script_start(make())
    assert "Training/evaluation parameters" in capsys.readouterr().out
