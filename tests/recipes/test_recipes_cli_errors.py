"""The command-line tools end a user error with one line, `error: <message>` naming the argument, file or
line, and exit status 2, without a traceback; `--debug` or S2S_DEBUG=1 brings the traceback back, and an
internal bug keeps it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipes import cli
from tests.paths import REPO

DEBUG_CONFIG = REPO / "recipes" / "configs" / "debug_translation.yaml"


def run(module: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "S2S_DEBUG"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=300,
    )


def assert_user_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    missing = [f for f in fragments if f not in errors[0]]
    assert not missing, f"{missing} not in {errors[0]!r}"
    return errors[0]


def bad_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    good = json.dumps({"translation": {"de": "Ein Hund.", "en": "A dog."}})
    path.write_text(good + "\n" + '{"translation": {"de": "Zwei Katzen.", "en": }\n' + good + "\n")
    return path


TRAIN = ["--do_train", "--source_lang", "de", "--target_lang", "en", "--report_to", "none"]


def test_misspelt_argument(tmp_path):
    done = run("recipes.translation", DEBUG_CONFIG, "--max_source_lenght", "5", "--output_dir", tmp_path)
    assert_user_error(done, "--max_source_lenght", "did you mean")


def test_missing_data_file(tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    done = run("recipes.translation", *TRAIN, "--train_file", missing, "--output_dir", tmp_path / "out")
    assert_user_error(done, str(missing), "no such file")


def test_bad_data_line_names_file_and_line(tmp_path):
    data = bad_jsonl(tmp_path)
    done = run("recipes.translation", *TRAIN, "--train_file", data, "--output_dir", tmp_path / "out")
    assert_user_error(done, str(data), "line 2", "malformed JSON")


def test_bad_config_value_in_summarization(tmp_path):
    done = run(
        "recipes.summarization", "--do_train", "--train_file", "x.jsonl", "--max_train_minutes", "0",
        "--output_dir", tmp_path,
    )  # fmt: skip
    assert_user_error(done, "max_train_minutes must be > 0")


def test_debug_flag_and_environment_show_the_traceback(tmp_path):
    data = bad_jsonl(tmp_path)
    argv = [*TRAIN, "--train_file", data, "--output_dir", tmp_path / "out"]
    for done in (
        run("recipes.translation", *argv, "--debug"),
        run("recipes.translation", *argv, env={"S2S_DEBUG": "1"}),
    ):
        assert done.returncode != 0 and "Traceback" in done.stderr and "DataFileError" in done.stderr


def test_generate_missing_model_and_input(tmp_path):
    assert_user_error(
        run("recipes.generate", tmp_path / "no_model"), str(tmp_path / "no_model"), "no such folder"
    )
    done = run("recipes.generate", REPO / "recipes", "--input", tmp_path / "in.txt")  # not a model folder
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr


def test_generate_bad_argument_is_argparse_error(tmp_path):
    done = run("recipes.generate", tmp_path, "--num_beams", "0")
    assert (
        done.returncode == 2 and "--num_beams must be >= 1" in done.stderr and "Traceback" not in done.stderr
    )


def test_metrics_missing_file_and_debug(tmp_path):
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("a cat\n")
    assert_user_error(run("metrics", "bleu", "-p", hyp, "-r", tmp_path / "ref.txt"), "ref.txt", "cannot read")
    shown = run("metrics", "bleu", "-p", hyp, "-r", tmp_path / "ref.txt", env={"S2S_DEBUG": "1"})
    assert shown.returncode != 0 and "Traceback" in shown.stderr and "InputFileError" in shown.stderr


# ---------------------------------------------------------------------------------------- in process


def test_user_errors_exit_2_and_bugs_keep_their_traceback(capsys):
    def bad_value(argv):
        raise ValueError("--num_beams must be >= 1,\n  got 0")

    def missing_metric(argv):
        raise KeyError("metric_for_best_model='bleu' is not among the evaluation metrics")

    def bug(argv):
        raise RuntimeError("an internal bug")

    assert cli.run_command(bad_value, []) == 2
    assert capsys.readouterr().err == "error: --num_beams must be >= 1, got 0\n"  # one line
    assert cli.run_command(missing_metric, []) == 2
    assert (
        capsys.readouterr().err == "error: metric_for_best_model='bleu' is not among the evaluation metrics\n"
    )
    with pytest.raises(RuntimeError, match="internal bug"):
        cli.run_command(bug, [])
    with pytest.raises(ValueError):
        cli.run_command(bad_value, ["--debug"])


def test_bare_debug_is_taken_off_and_debug_with_a_value_stays():
    seen = []
    assert cli.run_command(seen.append, ["cfg.yaml", "--debug", "--max_steps", "2"]) == 0
    assert cli.run_command(seen.append, ["--debug", "underflow_overflow", "--debug"]) == 0
    assert seen == [["cfg.yaml", "--max_steps", "2"], ["--debug", "underflow_overflow"]]
    assert cli.debug_requested(["--debug", "underflow_overflow"])
    assert not cli.debug_requested(["--max_steps", "2"]) or os.environ.get("S2S_DEBUG")
