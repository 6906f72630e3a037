"""The refused Hugging Face arguments: one table, not fields, refused everywhere an argument can be given."""

import dataclasses
import json

import pytest

from s2s.argparser import ArgumentParser
from s2s.arguments.refused import REFUSED_ARGUMENTS, REFUSED_VALUES
from s2s.seq2seq_training_args import Seq2SeqTrainingArguments
from s2s.training_args import TrainingArguments

FIELDS = {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments)}


def make(**kwargs) -> TrainingArguments:
    return TrainingArguments(output_dir="out", report_to="none", **kwargs)


def test_no_refused_argument_is_a_field():
    assert not FIELDS & set(REFUSED_ARGUMENTS)
    assert "hub_token" not in make().to_dict() and "push_to_hub" not in make().to_dict()


@pytest.mark.parametrize("name", sorted(REFUSED_ARGUMENTS))
def test_the_value_that_asks_for_nothing_is_accepted_and_read_back(name):
    off = REFUSED_ARGUMENTS[name].off
    args = make(**{name: off})
    assert getattr(args, name) == off
    assert getattr(make(), name) == off  # Hugging Face scripts read e.g. `if training_args.push_to_hub:`
    assert dataclasses.replace(args, **{name: off}).to_dict() == args.to_dict()


def test_assigning_a_refused_argument_after_construction_is_refused():
    args = make()
    with pytest.raises(
        ValueError, match="push_to_hub=True: pushing to the Hugging Face Hub is not supported"
    ):
        args.push_to_hub = True
    args.push_to_hub = False  # asks for nothing: allowed, and nothing changes
    assert args.push_to_hub is False and "push_to_hub" not in vars(args)
    with pytest.raises(ValueError, match="deepspeed"):
        dataclasses.replace(args, deepspeed="ds.json")


def test_a_token_is_never_echoed():
    with pytest.raises(ValueError, match="hub_token=<REDACTED>") as raised:
        make(hub_token="hf_secret_value")
    assert "hf_secret_value" not in str(raised.value)


def test_unknown_attributes_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_argument'"):
        make().no_such_argument  # noqa: B018


def test_a_subclass_field_takes_a_refused_name_over():
    @dataclasses.dataclass
    class WithDeepSpeed(TrainingArguments):
        deepspeed: str | None = None
        """The subclass honours it itself."""

    args = WithDeepSpeed(output_dir="out", report_to="none", deepspeed="ds.json")
    assert args.deepspeed == "ds.json" and args.to_dict()["deepspeed"] == "ds.json"
    with pytest.raises(ValueError, match="push_to_hub"):
        WithDeepSpeed(output_dir="out", push_to_hub=True)


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, values in REFUSED_VALUES.items() for value in values],
)
def test_refused_values_name_the_argument_why_and_instead(name, value):
    refusal = REFUSED_VALUES[name][value]
    with pytest.raises(ValueError, match=f"{name}='{value}'") as raised:
        make(**{name: value})
    assert refusal.why in str(raised.value) and refusal.instead in str(raised.value)


# ------------------------------------------------------------------------------------------ through the parser
@pytest.fixture
def parser() -> ArgumentParser:
    return ArgumentParser(Seq2SeqTrainingArguments)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--push_to_hub"], "push_to_hub=True: pushing to the Hugging Face Hub is not supported"),
        (["--push-to-hub", "yes"], "push_to_hub=True"),
        (
            ["--deepspeed", "ds.json"],
            "deepspeed='ds.json': DeepSpeed is not supported.*use fsdp='full_shard'",
        ),
        (["--deepspeed"], "deepspeed=True: DeepSpeed"),
        (["--hub_token", "hf_abc"], "hub_token=<REDACTED>"),
        (["--ray_scope", "all"], "Trainer.hyperparameter_search"),
    ],
)
def test_command_line_refusals_give_the_reason(parser, argv, message):
    with pytest.raises(ValueError, match=message):
        parser.parse_args_into_dataclasses(["--output_dir", "o", *argv])


def test_command_line_accepts_the_value_that_asks_for_nothing(parser):
    (args,) = parser.parse_args_into_dataclasses(
        ["--output_dir", "o", "--push_to_hub", "false", "--fp16_opt_level", "O1", "--report_to", "none"]
    )
    assert args.push_to_hub is False and args.fp16_opt_level == "O1"


def test_extra_namespace_holds_only_the_callers_own_options():
    parser = ArgumentParser(TrainingArguments)
    parser.add_argument("--verbose", action="store_true")
    args, extra = parser.parse_args_into_dataclasses(["--output_dir", "o", "--verbose", "--push_to_hub", "0"])
    assert vars(extra) == {"verbose": True} and args.push_to_hub is False


@pytest.mark.parametrize(
    ("text", "refused"),
    [("push_to_hub: true\n", True), ("push_to_hub: 'false'\n", False), ("push_to_hub: false\n", False)],
)
def test_yaml_refuses_or_accepts(parser, tmp_path, text, refused):
    config = tmp_path / "run.yaml"
    config.write_text("output_dir: o\nreport_to: none\n" + text)
    if refused:
        with pytest.raises(ValueError, match="push_to_hub=True"):
            parser.parse_yaml_file(config)
    else:
        assert parser.parse_yaml_file(config)[0].push_to_hub is False


def test_json_config_refuses_with_the_reason(parser, tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"output_dir": "o", "deepspeed": "ds.json"}))
    with pytest.raises(ValueError, match="DeepSpeed is not supported"):
        parser.parse_json_file(config)
    with pytest.raises(ValueError, match="DeepSpeed is not supported"):
        parser.parse_args_into_dataclasses([str(config)])


def test_help_lists_refused_arguments_with_their_reason(parser, capsys):
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--help"])
    text = capsys.readouterr().out
    epilog = text[text.index("refused arguments") :]
    for name, refused in REFUSED_ARGUMENTS.items():
        assert f"--{name} [{refused.off!r}]" in epilog
    flat = " ".join(epilog.split())
    assert "DeepSpeed is not supported" in flat and "use fsdp='full_shard' for sharded training" in flat
    groups = text[: text.index("refused arguments")]
    assert "--push_to_hub" not in groups  # not offered as an option that works


def test_a_callers_epilog_is_kept():
    parser = ArgumentParser(TrainingArguments, epilog="See the README.")
    assert parser.epilog.startswith("See the README.") and "refused arguments" in parser.epilog
