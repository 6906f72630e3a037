"""No flag silently does nothing: every field of (Seq2Seq)TrainingArguments is read by the library (or by the
recipe scripts, for do_train/do_eval/do_predict), read through a TrainingArguments property that the library
uses, resolved as a deprecated alias at construction, or validated at construction with a message that names
it. Hugging Face arguments that cannot work here are not fields at all: they are one table of refusals, each
with a reason and an alternative. The lists below are the exceptions; keep them short and honest."""

from __future__ import annotations

import re
import warnings
from dataclasses import fields

import pytest

from s2s.arguments.refused import REFUSED_ARGUMENTS
from s2s.training_args import TrainingArguments
from tests.paths import REPO

ARGS_FILES = {"training_args.py", "seq2seq_training_args.py"}

try:
    from s2s.seq2seq_training_args import Seq2SeqTrainingArguments

    ARGS_CLASS = Seq2SeqTrainingArguments
except ImportError:  # written by another engineer; TrainingArguments alone until then
    ARGS_CLASS = TrainingArguments

SEQ2SEQ_ONLY = {f.name for f in fields(ARGS_CLASS)} - {f.name for f in fields(TrainingArguments)}

# Read through a property/method of TrainingArguments: field -> (the property the library reads, a value
# that changes it). The test checks both that the library reads the property and that the field moves it.
THROUGH_PROPERTY = {
    "per_device_train_batch_size": ("train_batch_size", 3),
    "per_device_eval_batch_size": ("eval_batch_size", 5),
    "warmup_ratio": ("get_warmup_steps", 0.5),
    "warmup_steps": ("get_warmup_steps", 7),
    "save_on_each_node": ("should_save", True),
    "local_rank": ("device", 0),
    "use_cpu": ("device", True),
}

# Deprecated names resolved into their replacement at construction: field -> (value, replacement, expected).
ALIASES = {
    "adafactor": (True, "optim", "adafactor"),
    "no_cuda": (True, "use_cpu", True),
    "fp16_backend": ("cpu_amp", "half_precision_backend", "cpu_amp"),
    "evaluation_strategy": ("epoch", "eval_strategy", "epoch"),  # the seed's name; Hugging Face renamed it
}

# Validated only: a field with a value that must raise, naming it, on this machine.
VALIDATED = {
    "half_precision_backend": "apex",  # torch autocast is the only backend; 'cuda_amp' is checked against the device
    "use_mps_device": True,  # refused where MPS is absent (this machine); read by the device property elsewhere
    "tf32": True,  # needs an Ampere GPU; read by the Trainer where one exists
}

# The Hugging Face arguments refused here: not fields, but one table (s2s.arguments.refused) with why and what
# to use instead. Listed again here so that an entry cannot leave the table unnoticed.
REFUSED_NAMES = {
    "use_ipex": True,  # Intel Extension for PyTorch
    "xpu_backend": "ccl",  # Intel XPU
    "tpu_num_cores": 8,  # TPUs
    "sharded_ddp": "simple",  # FairScale
    "deepspeed": "ds_config.json",  # no DeepSpeed engine
    "fp16_opt_level": "O2",  # NVIDIA apex opt levels
    "jit_mode_eval": True,  # TorchScript
    "torchdynamo": "inductor",  # deprecated: torch_compile_backend
    "ray_scope": "all",  # Ray Tune
    "push_to_hub": True,  # no network
    "hub_model_id": "me/model",
    "hub_token": "secret",
    "hub_private_repo": True,
    "hub_strategy": "end",
}


def library_source() -> str:
    # the arguments' own modules (s2s/arguments/ validates and normalises them) are not readers
    files = [
        p for p in (REPO / "s2s").rglob("*.py") if p.name not in ARGS_FILES and p.parent.name != "arguments"
    ]
    files += list((REPO / "recipes").rglob("*.py"))
    return "\n".join(p.read_text() for p in files)


SOURCE = library_source()


def is_read(name: str) -> bool:
    return re.search(rf"\b(?:args|training_args)\.{name}\b", SOURCE) is not None


ALL_FIELDS = [f.name for f in fields(ARGS_CLASS) if f.init]


@pytest.mark.parametrize("name", ALL_FIELDS)
def test_every_argument_has_a_reader(name):
    if name in THROUGH_PROPERTY or name in ALIASES or name in VALIDATED:
        return  # checked by the tests below
    if name in SEQ2SEQ_ONLY and not (REPO / "s2s" / "seq2seq_trainer.py").exists():
        pytest.skip("s2s/seq2seq_trainer.py (the reader of the Seq2Seq arguments) is not written yet")
    assert is_read(name), f"TrainingArguments.{name} is read by nothing in s2s/ or recipes/ (args.{name})"


def test_exception_lists_name_real_fields():
    names = set(ALL_FIELDS)
    for table in (THROUGH_PROPERTY, ALIASES, VALIDATED):
        assert set(table) <= names, set(table) - names
    # an exception that has become a plain reader should leave the list
    assert not [n for n in VALIDATED if is_read(n) and n not in ("tf32",)]


@pytest.mark.parametrize("name", sorted(THROUGH_PROPERTY))
def test_property_readers_follow_their_field(name, tmp_path, monkeypatch):
    prop, value = THROUGH_PROPERTY[name]
    if name == "save_on_each_node":  # the first process of the second node: saves only with save_on_each_node
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("LOCAL_RANK", "0")
    assert is_read(prop), f"nothing in s2s/ reads args.{prop}, so {name} has no reader"
    base = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    changed = TrainingArguments(output_dir=str(tmp_path), report_to="none", **{name: value})

    def observe(args):
        attribute = getattr(args, prop)
        return attribute(100) if callable(attribute) else attribute

    if name in ("local_rank", "use_cpu"):  # CPU-only machine: the device does not move; the field is stored
        assert observe(changed).type == "cpu" and getattr(changed, name) == value
        return
    assert observe(changed) != observe(base)


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_aliases_are_resolved(name, tmp_path):
    value, target, expected = ALIASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        args = TrainingArguments(output_dir=str(tmp_path), report_to="none", **{name: value})
    assert str(getattr(getattr(args, target), "value", getattr(args, target))) == str(expected)
    assert is_read(target) or target in THROUGH_PROPERTY or target in VALIDATED


@pytest.mark.parametrize("name", sorted(VALIDATED))
def test_validated_arguments_raise_naming_themselves(name, tmp_path):
    with pytest.raises(ValueError, match=name):
        TrainingArguments(output_dir=str(tmp_path), report_to="none", **{name: VALIDATED[name]})


def test_refused_names_are_the_table_and_not_fields():
    assert set(REFUSED_ARGUMENTS) == set(REFUSED_NAMES)
    assert not set(REFUSED_NAMES) & set(ALL_FIELDS), "a refused argument must not be a dataclass field"
    for name, refused in REFUSED_ARGUMENTS.items():
        assert refused.why.strip() and refused.instead.strip(), f"{name} needs a reason and an alternative"


@pytest.mark.parametrize("name", sorted(REFUSED_NAMES))
def test_refused_arguments_raise_naming_themselves_why_and_instead(name, tmp_path):
    refused = REFUSED_ARGUMENTS[name]
    with pytest.raises(ValueError, match=name) as raised:
        ARGS_CLASS(output_dir=str(tmp_path), report_to="none", **{name: REFUSED_NAMES[name]})
    assert refused.why in str(raised.value) and refused.instead in str(raised.value)
