import argparse
import enum
import json
import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest

from s2s.argparser import ArgumentParser, field_docs, string_to_bool
from s2s.seq2seq_training_args import Seq2SeqTrainingArguments
from s2s.training_args import IntervalStrategy, TrainingArguments


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class ModelArgs:
    """Which model to build."""

    model_name: str
    """Name or path of the model to train."""

    d_model: int = 32
    """Width of the model."""

    dropout: float = 0.1
    """Dropout probability."""

    tie_embeddings: bool = True
    """Share the input and output embeddings."""

    use_cache: bool = False
    """Keep a key-value cache."""

    norm: Literal["pre", "post"] = "pre"
    """Where the layer norm goes."""

    color: Color = Color.RED
    """A colour."""

    layers: list[int] = field(default_factory=lambda: [1, 2])
    """Layer sizes."""

    max_len: int | None = None
    """Optional maximum length."""

    maybe_flag: bool | None = None
    """Optional flag."""

    half: bool | Literal["auto"] = False
    """A flag that may also be left to the machine."""

    extra: dict = field(default_factory=dict)
    """Extra settings as JSON."""

    legacy: str = field(default="x", metadata={"help": "help from metadata"})


@dataclass
class DataArgs:
    train_file: str = "train.jsonl"
    """Training data."""

    max_source_length: int = 128
    """Truncate sources to this many tokens."""


@pytest.fixture
def parser() -> ArgumentParser:
    return ArgumentParser((ModelArgs, DataArgs))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], False),
        (["--use_cache"], True),
        (["--use_cache", "true"], True),
        (["--use_cache", "True"], True),
        (["--use_cache", "yes"], True),
        (["--use_cache", "1"], True),
        (["--use_cache", "false"], False),
        (["--use_cache", "no"], False),
        (["--use_cache", "0"], False),
        (["--use-cache"], True),
    ],
)
def test_bool_forms(parser, argv, expected):
    model, _ = parser.parse_args_into_dataclasses(["--model_name", "m", *argv])
    assert model.use_cache is expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], False), (["--half"], True), (["--half", "no"], False), (["--half", "auto"], "auto")],
)
def test_bool_or_word_forms(parser, argv, expected):
    model, _ = parser.parse_args_into_dataclasses(["--model_name", "m", *argv])
    assert model.half == expected and type(model.half) is type(expected)


def test_bool_or_word_from_a_file_and_its_errors(parser, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model_name: m\nhalf: auto\n")
    assert parser.parse_yaml_file(config)[0].half == "auto"
    config.write_text("model_name: m\nhalf: 'true'\n")
    assert parser.parse_yaml_file(config)[0].half is True
    config.write_text("model_name: m\nhalf: sometimes\n")
    with pytest.raises(ValueError, match=r"half: expected true, false or one of \['auto'\], got 'sometimes'"):
        parser.parse_yaml_file(config)
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--model_name", "m", "--half", "sometimes"])
    assert "one of ['auto']" in capsys.readouterr().err
    assert "{true,false,auto}" in parser.format_help()


def test_none_unsets_an_optional_field_that_a_config_file_set(parser, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model_name: m\nmax_len: 64\nmaybe_flag: true\n")
    model, _ = parser.parse_args_into_dataclasses([str(config), "--max_len", "none", "--maybe_flag", "null"])
    assert model.max_len is None and model.maybe_flag is None
    model, _ = parser.parse_args_into_dataclasses([str(config), "--max_len", "7"])
    assert model.max_len == 7 and model.maybe_flag is True
    with pytest.raises(SystemExit):  # a required int has no None to fall back on
        parser.parse_args_into_dataclasses(["--model_name", "m", "--d_model", "none"])


def test_no_flag_for_true_defaults(parser):
    model, _ = parser.parse_args_into_dataclasses(["--model_name", "m", "--no_tie_embeddings"])
    assert model.tie_embeddings is False
    model, _ = parser.parse_args_into_dataclasses(["--model_name", "m", "--tie_embeddings", "false"])
    assert model.tie_embeddings is False
    assert "--no_use_cache" not in parser.format_help()  # only for fields that default to True


def test_bad_bool_is_an_error(parser, capsys):
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--model_name", "m", "--use_cache", "maybe"])
    assert "expected a boolean" in capsys.readouterr().err
    with pytest.raises(argparse.ArgumentTypeError):
        string_to_bool("maybe")


def test_types_choices_lists_optional_and_json(parser):
    model, data = parser.parse_args_into_dataclasses(
        [
            "--model_name", "m", "--d_model", "64", "--dropout", "0.3", "--norm", "post", "--color", "blue",
            "--layers", "3", "4", "5", "--max_len", "7", "--maybe_flag", "--extra", '{"a": [1, 2]}',
            "--max_source_length", "256",
        ]
    )  # fmt: skip
    assert (model.d_model, model.dropout, model.norm, model.color) == (64, 0.3, "post", Color.BLUE)
    assert model.layers == [3, 4, 5] and model.max_len == 7 and model.maybe_flag is True
    assert model.extra == {"a": [1, 2]}
    assert data.max_source_length == 256 and data.train_file == "train.jsonl"
    defaults, _ = parser.parse_args_into_dataclasses(["--model_name", "m"])
    assert defaults.max_len is None and defaults.maybe_flag is None and defaults.layers == [1, 2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--norm", "middle"], "'middle' is not one of"),
        (["--color", "green"], "'green' is not one of"),
        (["--extra", "[1]"], "expected a JSON object"),
        (["--d_model", "wide"], "invalid int value"),
    ],
)
def test_bad_values_exit_with_message(parser, capsys, argv, message):
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--model_name", "m", *argv])
    assert message in capsys.readouterr().err


def test_required_field_is_required(parser, capsys):
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses([])
    assert "--model_name" in capsys.readouterr().err


def test_unknown_option_lists_close_matches(parser):
    with pytest.raises(ValueError, match=r"'--d_modle'.*did you mean '--d_model'"):
        parser.parse_args_into_dataclasses(["--model_name", "m", "--d_modle", "3"])
    *_, remaining = parser.parse_args_into_dataclasses(
        ["--model_name", "m", "--d_modle", "3"], return_remaining_strings=True
    )
    assert remaining == ["--d_modle", "3"]


def test_no_abbreviations(parser):
    with pytest.raises(ValueError, match="--d_mod"):
        parser.parse_args_into_dataclasses(["--model_name", "m", "--d_mod", "3"])


def test_help_shows_field_docs_defaults_and_choices(parser):
    text = parser.format_help()
    assert "Name or path of the model to train." in text
    assert "help from metadata" in text
    assert "Which model to build." in text  # the class docstring heads its group
    assert "{pre,post}" in text and "{red,blue}" in text
    assert "(default: 32)" in text


def test_field_docs_include_inherited_fields():
    docs = field_docs(Seq2SeqTrainingArguments)
    assert docs["predict_with_generate"].startswith("Evaluate and predict by generating")
    assert docs["gradient_accumulation_steps"].startswith("Micro-batches per optimizer step.")


def test_parse_dict_and_unknown_keys(parser):
    model, data = parser.parse_dict({"model_name": "m", "d_model": 8, "train_file": "t.jsonl"})
    assert (model.model_name, model.d_model, data.train_file) == ("m", 8, "t.jsonl")
    with pytest.raises(ValueError, match=r"'d_modle' \(did you mean 'd_model'"):
        parser.parse_dict({"model_name": "m", "d_modle": 8})
    model, _ = parser.parse_dict({"model_name": "m", "whatever": 1}, allow_extra_keys=True)
    assert model.model_name == "m"


def test_missing_required_key_in_dict_is_named(parser):
    with pytest.raises(ValueError, match=r"ModelArgs is missing required argument\(s\) \['model_name'\]"):
        parser.parse_dict({"d_model": 8})


def test_json_and_yaml_files(parser, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"model_name": "j", "layers": [9], "use_cache": True}))
    (tmp_path / "c.yaml").write_text("model_name: y\ndropout: 1e-3\nmax_source_length: 64\ncolor: blue\n")
    model, _ = parser.parse_json_file(tmp_path / "c.json")
    assert (model.model_name, model.layers, model.use_cache) == ("j", [9], True)
    model, data = parser.parse_yaml_file(tmp_path / "c.yaml")
    # YAML 1.1 reads "1e-3" as a string; the float field converts it
    assert (model.model_name, model.dropout, data.max_source_length) == ("y", 1e-3, 64)
    assert model.color is Color.BLUE  # converted to the field's type, as on the command line
    (tmp_path / "bad.yaml").write_text("model_name: y\nlearning_rat: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*'learning_rat'"):
        parser.parse_yaml_file(tmp_path / "bad.yaml")
    (tmp_path / "choice.yaml").write_text("model_name: y\nnorm: middle\n")
    with pytest.raises(ValueError, match=r"norm: 'middle' is not one of \['pre', 'post'\]"):
        parser.parse_yaml_file(tmp_path / "choice.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        parser.parse_yaml_file(tmp_path / "list.yaml")


def test_config_file_as_sole_argument_with_overrides(parser, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name: y\nd_model: 16\nuse_cache: true\n")
    model, _ = parser.parse_args_into_dataclasses([str(config)])
    assert (model.model_name, model.d_model, model.use_cache) == ("y", 16, True)
    model, _ = parser.parse_args_into_dataclasses([str(config), "--d_model", "24", "--use_cache", "false"])
    assert (model.model_name, model.d_model, model.use_cache) == ("y", 24, False)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        parser.parse_args_into_dataclasses([str(tmp_path / "missing.yaml")])


def test_args_file(parser, tmp_path):
    args_file = tmp_path / "run.args"
    args_file.write_text("--model_name from_file\n--d_model 12\n")
    model, _ = parser.parse_args_into_dataclasses(["--d_model", "20"], args_filename=args_file)
    assert (model.model_name, model.d_model) == ("from_file", 20)  # the command line comes last and wins


def test_script_args_file_is_read_by_default_as_in_hugging_face(parser, tmp_path, monkeypatch):
    script = tmp_path / "train.py"
    script.with_suffix(".args").write_text("--model_name next_to_script --d_model 8")
    monkeypatch.setattr(sys, "argv", [str(script), "--d_model", "40"])
    model, _ = parser.parse_args_into_dataclasses()
    assert (model.model_name, model.d_model) == ("next_to_script", 40)
    model, _ = parser.parse_args_into_dataclasses(["--model_name", "cli"], look_for_args_file=False)
    assert (model.model_name, model.d_model) == ("cli", 32)  # the file is not read
    other = tmp_path / "other.args"
    other.write_text("--d_model 16")  # args_filename replaces the script's file
    model, _ = parser.parse_args_into_dataclasses(["--model_name", "cli"], args_filename=other)
    assert (model.model_name, model.d_model) == ("cli", 16)


def test_args_file_flag_reads_each_named_file_in_order(parser, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "train.py")])  # no train.args next to it
    base, tuned = tmp_path / "base.args", tmp_path / "tuned.args"
    base.write_text("--model_name base --d_model 8 --train_file base.jsonl")
    tuned.write_text("--d_model 12")
    argv = ["--args_file", str(base), f"--args_file={tuned}", "--max_source_length", "64"]
    model, data = parser.parse_args_into_dataclasses(argv, args_file_flag="--args_file")
    assert (model.model_name, model.d_model) == ("base", 12)  # the later file wins
    assert (data.train_file, data.max_source_length) == ("base.jsonl", 64)
    with pytest.raises(FileNotFoundError, match="--args_file: args file .*nowhere.args does not exist"):
        parser.parse_args_into_dataclasses(["--args_file", "nowhere.args"], args_file_flag="--args_file")
    with pytest.raises(FileNotFoundError, match="args_filename: args file"):
        parser.parse_args_into_dataclasses([], args_filename=tmp_path / "nowhere.args")
    with pytest.raises(ValueError, match="--args_file needs a file name"):
        parser.parse_args_into_dataclasses(["--args_file"], args_file_flag="--args_file")


def test_parser_without_dataclasses_returns_the_callers_options():
    parser = ArgumentParser()
    parser.add_argument("--steps", type=int, default=1)
    (extra,) = parser.parse_args_into_dataclasses(["--steps", "3"], look_for_args_file=False)
    assert extra.steps == 3


def test_extra_arguments_added_by_the_caller_come_back_as_namespace():
    parser = ArgumentParser(DataArgs)
    parser.add_argument("--verbose", action="store_true")
    data, extra = parser.parse_args_into_dataclasses(["--verbose"])
    assert data.train_file == "train.jsonl" and extra.verbose is True


def test_training_arguments_from_command_line():
    parser = ArgumentParser(Seq2SeqTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir", "o", "--evaluation_strategy", "steps", "--eval_steps", "10", "--save_steps", "20",
            "--load_best_model_at_end", "--metric_for_best_model", "bleu", "--report_to", "none",
            "--no_remove_unused_columns", "--fsdp", "full_shard", "auto_wrap",
            "--fsdp_transformer_layer_cls_to_wrap", "EncoderLayer", "--lr_scheduler_type", "polynomial",
            "--lr_scheduler_kwargs", '{"power": 2.0}', "--predict_with_generate", "--generation_num_beams", "4",
            "--log_level", "info",
        ]
    )  # fmt: skip
    assert args.eval_strategy is IntervalStrategy.STEPS and args.evaluation_strategy == IntervalStrategy.STEPS
    assert args.greater_is_better is True and args.report_to == [] and args.remove_unused_columns is False
    assert args.fsdp == ["full_shard", "auto_wrap"] and args.lr_scheduler_kwargs == {"power": 2.0}
    assert args.predict_with_generate and args.generation_num_beams == 4


def test_training_arguments_round_trip_through_json(tmp_path):
    original = Seq2SeqTrainingArguments(
        output_dir="o", eval_strategy="epoch", save_strategy="epoch", optim="sgd"
    )
    path = tmp_path / "training_args.json"
    path.write_text(original.to_json_string())
    (loaded,) = ArgumentParser(Seq2SeqTrainingArguments).parse_json_file(path)
    assert loaded.to_dict() == original.to_dict()


def test_construction_errors_surface_from_parsing():
    with pytest.raises(ValueError, match="push_to_hub"):
        ArgumentParser(TrainingArguments).parse_args_into_dataclasses(["--push_to_hub"])


def test_rejects_non_dataclasses():
    with pytest.raises(TypeError, match="dataclass"):
        ArgumentParser([dict])


@dataclass
class WithPercent:
    ratio: float = 0.5
    """Share of the step, e.g. ~4% of it."""


def test_help_shows_a_literal_percent_from_a_field_doc(capsys):
    parser = ArgumentParser(WithPercent)
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(args=["--help"])
    assert "~4% of it" in capsys.readouterr().out
