"""Bad input, table-driven: every case raises a named exception whose message points at the file, line, field
or argument, and the raise comes from our code, never from deep inside torch or pyarrow.

Each row is (name, action, exception type, fragments that must all appear in the message). An action gets a
fresh `tmp_path`; argparse cases that end with `SystemExit(2)` are checked on stderr instead.
"""

from __future__ import annotations

import json
import pickle
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from s2s import checkpointing as ckpt
from s2s.checkpointing import CheckpointError, load_checkpoint, safe_join, save_checkpoint, verify_checkpoint
from tests.paths import REPO


@dataclass
class Case:
    name: str
    action: Callable[[Path], object]
    error: type[BaseException]
    fragments: tuple[str, ...]
    stderr: bool = False
    """argparse reports bad values on stderr and exits with status 2 (its documented behaviour)."""


CASES: list[Case] = []


def case(error: type[BaseException], *fragments: str, stderr: bool = False):
    def register(action: Callable[[Path], object]) -> Callable[[Path], object]:
        CASES.append(Case(action.__name__, action, error, fragments, stderr))
        return action

    return register


# ------------------------------------------------------------------------------------------- helpers


def _tiny_model(vocab_size: int = 32, layers: int = 1):
    from s2s.models import TransformerConfig, TransformerForConditionalGeneration

    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=vocab_size, d_model=16, encoder_layers=layers, decoder_layers=1, num_heads=2, ffn_dim=32
    )
    return TransformerForConditionalGeneration(config)


def _checkpoint(tmp_path: Path, **kwargs) -> Path:
    model = _tiny_model(**kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return save_checkpoint(
        tmp_path / "out" / "checkpoint-5",
        model=model,
        optimizer=optimizer,
        trainer_state={"global_step": 5},
        training_args={"learning_rate": 1e-3},
    )


def _resume(path: Path, **kwargs):
    model = _tiny_model(**kwargs)
    return load_checkpoint(path, model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3))


def _tamper(path: Path, name: str, data: bytes) -> None:
    """Replace a file and re-write the manifest to match: the bytes are bad, the bookkeeping is consistent."""
    (path / name).write_bytes(data)
    ckpt._write_manifest(path)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _pairs(path: Path, **kwargs):
    from recipes.text_files import load_text_pairs

    return load_text_pairs(
        path, source_field="de", target_field="en", cache_dir=path.parent / "cache", **kwargs
    )


def _training_args(**kwargs):
    from s2s.training_args import TrainingArguments

    return TrainingArguments(**{"output_dir": "unused", **kwargs})


def _seq2seq_args(**kwargs):
    from s2s.seq2seq_training_args import Seq2SeqTrainingArguments

    return Seq2SeqTrainingArguments(**{"output_dir": "unused", **kwargs})


def _parser():
    from s2s.argparser import ArgumentParser
    from s2s.seq2seq_training_args import Seq2SeqTrainingArguments

    return ArgumentParser(Seq2SeqTrainingArguments)


class _RunsCode:
    def __reduce__(self):
        return (print, ("code ran while loading a checkpoint",))


# ------------------------------------------------------------------------------------------- checkpoints


@case(CheckpointError, "model.safetensors", "not a valid safetensors file", "corrupt")
def corrupt_safetensors(tmp_path):
    path = _checkpoint(tmp_path)
    _tamper(path, "model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage" + bytes(100))
    _resume(path)


@case(CheckpointError, "checkpoint-5: model.safetensors", "bytes", "truncated")
def truncated_weights(tmp_path):
    path = _checkpoint(tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    _resume(path)


@case(
    CheckpointError,
    "embed_tokens.weight",
    "checkpoint (32, 16) vs model (48, 16)",
    "another model",
    "vocab_size=32",
)
def checkpoint_from_another_vocabulary(tmp_path):
    _resume(_checkpoint(tmp_path), vocab_size=48)


@case(CheckpointError, "missing key", "encoder.layers.1", "another model", "encoder_layers=1")
def checkpoint_from_a_shallower_model(tmp_path):
    _resume(_checkpoint(tmp_path), layers=2)


@case(CheckpointError, "checkpoint-5", "no manifest.json", "interrupted")
def missing_manifest(tmp_path):
    path = _checkpoint(tmp_path)
    (path / "manifest.json").unlink()
    _resume(path)


@case(CheckpointError, "manifest.json", "corrupt")
def corrupt_manifest(tmp_path):
    path = _checkpoint(tmp_path)
    (path / "manifest.json").write_text('{"files": {"model.safetensors": ')
    verify_checkpoint(path)


@case(CheckpointError, "checkpoint-5: rng_state.pt", "missing")
def file_listed_but_missing(tmp_path):
    path = _checkpoint(tmp_path)
    (path / "rng_state.pt").unlink()
    _resume(path)


@case(CheckpointError, "optimizer.pt", "sha256", "corrupt")
def bit_flip_in_optimizer_state(tmp_path):
    path = _checkpoint(tmp_path)
    data = bytearray((path / "optimizer.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "optimizer.pt").write_bytes(bytes(data))
    _resume(path)


@case(CheckpointError, "optimizer.pt", "corrupt or truncated")
def garbage_optimizer_state(tmp_path):
    path = _checkpoint(tmp_path)
    _tamper(path, "optimizer.pt", b"PK\x03\x04 not really a zip archive")
    _resume(path)


@case(CheckpointError, "optimizer.pt was refused", "pickled Python objects", "execute code")
def pickled_code_in_optimizer_state(tmp_path):
    path = _checkpoint(tmp_path)
    with open(path / "optimizer.pt", "wb") as f:
        torch.save({"state": {}, "param_groups": [], "hook": _RunsCode()}, f, pickle_module=pickle)
    ckpt._write_manifest(path)
    _resume(path)


@case(CheckpointError, "optimizer.pt does not fit this optimizer", "another model")
def optimizer_state_for_other_parameters(tmp_path):
    path = _checkpoint(tmp_path)
    load_checkpoint(path, optimizer=torch.optim.AdamW(torch.nn.Linear(2, 2).parameters()))


@case(CheckpointError, "trainer_state.json", "not valid JSON")
def corrupt_trainer_state(tmp_path):
    path = _checkpoint(tmp_path)
    _tamper(path, "trainer_state.json", b'{"global_step": 5,')
    _resume(path)


@case(CheckpointError, "pytorch_model.bin", "pickle", "execute code", "safetensors")
def pickle_weights_only(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(_tiny_model().state_dict(), folder / "pytorch_model.bin")
    ckpt.load_model_weights(_tiny_model(), folder)


@case(CheckpointError, "checkpoint-999", "does not exist")
def checkpoint_that_does_not_exist(tmp_path):
    load_checkpoint(tmp_path / "checkpoint-999")


@case(CheckpointError, "manifest.json", "unsafe file name", "..")
def manifest_escaping_the_folder(tmp_path):
    path = _checkpoint(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["../../escape"] = {"size": 0, "sha256": ""}
    (path / "manifest.json").write_text(json.dumps(manifest))
    verify_checkpoint(path)


@case(ValueError, "'../../etc/cron.d/x'", "'..'")
def config_path_escaping_output_dir(tmp_path):
    safe_join(tmp_path, "../../etc/cron.d/x")


@case(ValueError, "'/etc/passwd'", "relative")
def absolute_config_path(tmp_path):
    safe_join(tmp_path, "/etc/passwd")


# ------------------------------------------------------------------------------------------- arguments


@case(ValueError, "--learning_rte", "did you mean '--learning_rate'")
def unknown_command_line_argument(tmp_path):
    _parser().parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--learning_rte", "1e-3"])


@case(SystemExit, "--fp16", "'maybe'", "expected a boolean", stderr=True)
def bad_boolean_value(tmp_path):
    _parser().parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--fp16", "maybe"])


@case(SystemExit, "--save_strategy", "'hourly'", "'steps'", stderr=True)
def bad_choice(tmp_path):
    _parser().parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--save_strategy", "hourly"])


@case(ValueError, "config.yaml", "'lerning_rate'", "did you mean 'learning_rate'")
def unknown_key_in_yaml_config(tmp_path):
    _parser().parse_yaml_file(_write(tmp_path, "config.yaml", "output_dir: out\nlerning_rate: 0.001\n"))


@case(ValueError, "num_train_epochs", "'many'")
def wrong_type_in_config_dict(tmp_path):
    _parser().parse_dict({"output_dir": str(tmp_path), "num_train_epochs": "many"})


@case(ValueError, "load_best_model_at_end", "save_strategy='epoch'", "eval_strategy='steps'")
def best_model_with_mismatched_strategies(tmp_path):
    _training_args(load_best_model_at_end=True, eval_strategy="steps", save_strategy="epoch")


@case(ValueError, "save_steps=7", "eval_steps=5", "multiple")
def save_steps_not_multiple_of_eval_steps(tmp_path):
    _training_args(load_best_model_at_end=True, eval_strategy="steps", save_steps=7, eval_steps=5)


@case(ValueError, "eval_strategy='steps'", "evaluation_strategy='epoch'", "give only one")
def contradictory_aliases(tmp_path):
    _training_args(eval_strategy="steps", evaluation_strategy="epoch")


@case(ValueError, "fp16=True", "CUDA", "bf16")
def fp16_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("fp16 is valid on this machine")
    _training_args(fp16=True)


@case(ValueError, "label_smoothing_factor", "[0, 1)", "1.5")
def label_smoothing_out_of_range(tmp_path):
    _training_args(label_smoothing_factor=1.5)


@case(ValueError, "optim='adamw_apex_fused'", "not supported", "adamw_torch_fused")
def unavailable_optimizer(tmp_path):
    _training_args(optim="adamw_apex_fused")


@case(ValueError, "'adamw_nonsense'", "adamw_torch")
def unknown_optimizer(tmp_path):
    _training_args(optim="adamw_nonsense")


@case(ValueError, "per_device_train_batch_size", ">= 1", "0")
def zero_batch_size(tmp_path):
    _training_args(per_device_train_batch_size=0)


@case(ValueError, "sortish_sampler", "group_by_length", "keep one")
def two_training_orders(tmp_path):
    _seq2seq_args(sortish_sampler=True, group_by_length=True)


# ------------------------------------------------------------------------------------------- generation


@case(ValueError, "'num_beam'", "did you mean 'num_beams'")
def unknown_generation_option(tmp_path):
    _seq2seq_args(generation_config={"num_beam": 4})


@case(ValueError, "num_beams", ">= 1", "0")
def zero_beams(tmp_path):
    from s2s.generation import GenerationConfig

    GenerationConfig(num_beams=0)


@case(ValueError, "num_return_sequences", "num_beams")
def more_returned_sequences_than_beams(tmp_path):
    from s2s.generation import GenerationConfig

    GenerationConfig(num_beams=2, num_return_sequences=4)


@case(ValueError, "top_p", "(0, 1]", "2")
def top_p_out_of_range(tmp_path):
    from s2s.generation import GenerationConfig

    GenerationConfig(do_sample=True, top_p=2.0)


@case(ValueError, "generation.json", "line 2", "column")
def malformed_generation_config_file(tmp_path):
    _seq2seq_args(
        generation_config=str(_write(tmp_path, "generation.json", '{"num_beams": 4,\n "top_k": }\n'))
    )


@case(ValueError, "generation_config=", "no such file")
def missing_generation_config_file(tmp_path):
    _seq2seq_args(generation_config=str(tmp_path / "nowhere.json"))


# ------------------------------------------------------------------------------------------- model config


@case(ValueError, "d_model (30)", "num_heads (4)", "divisible")
def heads_do_not_divide_width(tmp_path):
    from s2s.models import TransformerConfig

    TransformerConfig(d_model=30, num_heads=4)


@case(ValueError, "'num_head'", "did you mean 'num_heads'")
def unknown_model_config_field(tmp_path):
    from s2s.models import TransformerConfig

    TransformerConfig.from_dict({"num_head": 4})


# ------------------------------------------------------------------------------------------- data files


@case(ValueError, "train.jsonl, line 2", "malformed JSON")
def malformed_jsonl_line(tmp_path):
    _pairs(_write(tmp_path, "train.jsonl", '{"de": "a", "en": "b"}\n{"de": "c", "en": \n'))


@case(ValueError, "train.jsonl, line 1, field 'en'", "missing field")
def missing_target_field(tmp_path):
    _pairs(_write(tmp_path, "train.jsonl", '{"de": "a"}\n'))


@case(ValueError, "train.jsonl, line 2, field 'de'", "empty", "drop_empty")
def empty_source_field(tmp_path):
    _pairs(_write(tmp_path, "train.jsonl", '{"de": "a", "en": "b"}\n{"de": "  ", "en": "b"}\n'))


@case(ValueError, "train.jsonl, line 1, field 'en'", "int", "not a string")
def wrong_type_in_field(tmp_path):
    _pairs(_write(tmp_path, "train.jsonl", '{"de": "a", "en": 5}\n'))


@case(ValueError, "train.jsonl", "no examples")
def empty_dataset(tmp_path):
    _pairs(_write(tmp_path, "train.jsonl", ""))


@case(ValueError, "train.csv, line 2", "malformed CSV")
def malformed_csv_row(tmp_path):
    _pairs(_write(tmp_path, "train.csv", 'de,en\n"a,b\n'))


@case(ValueError, "missing.jsonl", "no such file")
def missing_data_file(tmp_path):
    _pairs(tmp_path / "missing.jsonl")


# ------------------------------------------------------------------------------------------- trainer


def _collate(features):
    def pad(rows, value):
        width = max(map(len, rows))
        return torch.tensor([row + [value] * (width - len(row)) for row in rows])

    input_ids = pad([f["input_ids"] for f in features], 0)
    labels = pad([f["labels"] for f in features], -100)
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(), "labels": labels}


_EXAMPLES = [{"input_ids": [5 + i % 7, 6, 3], "labels": [7, 8 + i % 5, 3]} for i in range(8)]


def _trainer(tmp_path: Path, model=None, *, seq2seq: bool = False, **overrides):
    from s2s.seq2seq_trainer import Seq2SeqTrainer
    from s2s.trainer import Trainer

    args = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        disable_tqdm=True,
        per_device_train_batch_size=4,
        max_steps=2,
        save_strategy="no",
        use_cpu=True,
    )
    args.update(overrides)
    cls, make_args = (Seq2SeqTrainer, _seq2seq_args) if seq2seq else (Trainer, _training_args)
    training_args = make_args(**args)
    return cls(
        model=model or _tiny_model(),
        args=training_args,
        train_dataset=_EXAMPLES,
        eval_dataset=_EXAMPLES,
        data_collator=_collate,
    )


@case(ValueError, "resume_from_checkpoint=True", "/out", "no complete checkpoint")
def resume_without_a_checkpoint(tmp_path):
    _trainer(tmp_path).train(resume_from_checkpoint=True)


@case(CheckpointError, "embed_tokens.weight", "checkpoint (32, 16) vs model (48, 16)", "vocab_size=32")
def trainer_resumes_another_models_checkpoint(tmp_path):
    path = _checkpoint(tmp_path)
    _trainer(tmp_path, _tiny_model(vocab_size=48)).train(resume_from_checkpoint=str(path))


@case(
    ValueError,
    "already holds checkpoints",
    "checkpoint-5",
    "resume_from_checkpoint=True",
    "overwrite_output_dir",
)
def training_over_existing_checkpoints(tmp_path):
    _checkpoint(tmp_path)
    _trainer(tmp_path).train()


@case(RuntimeError, "3 updates in a row", "NaN/inf", "max_consecutive_nonfinite_steps")
def nan_loss_stops_training(tmp_path):
    model = _tiny_model()
    with torch.no_grad():
        model.get_input_embeddings().weight.fill_(float("nan"))
    _trainer(tmp_path, model, max_steps=10, max_consecutive_nonfinite_steps=3).train()


@case(ValueError, "['num_beams']", "predict_with_generate=True")
def generation_options_without_generation(tmp_path):
    _trainer(tmp_path, seq2seq=True).evaluate(num_beams=4)


@case(ValueError, "'num_beam'", "did you mean 'num_beams'")
def unknown_generation_option_at_predict(tmp_path):
    _trainer(tmp_path, seq2seq=True, predict_with_generate=True).predict(_EXAMPLES, num_beam=4)


# ------------------------------------------------------------------------------------------- recipes


_TOKENIZER = {}


def _tokenizer():
    """A small sentencepiece tokenizer (42 ids), trained once per test session."""
    if "tok" not in _TOKENIZER:
        import random

        from s2s.tokenization import train_tokenizer

        rng = random.Random(0)
        words = [
            "haus",
            "katze",
            "hund",
            "baum",
            "auto",
            "stadt",
            "fluss",
            "berg",
            "the",
            "cat",
            "dog",
            "tree",
            "car",
            "city",
            "river",
            "mountain",
        ]
        texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(300)]
        _TOKENIZER["tok"] = train_tokenizer(texts, vocab_size=60, hard_vocab_limit=False)
    return _TOKENIZER["tok"]


@case(ValueError, "the tokenizer has 42 ids", "vocab_size 32", "use the tokenizer saved with the model")
def tokenizer_does_not_match_the_model(tmp_path):
    from recipes.common import DataArguments, ModelArguments, load_or_build_model

    _tiny_model().save_pretrained(tmp_path / "model")
    model_args = ModelArguments(model_name_or_path=str(tmp_path / "model"))
    load_or_build_model(model_args, DataArguments(max_source_length=8, max_target_length=8), _tokenizer())


@case(ValueError, "train: 1 of 2 sources", "max_source_length=4", "example 1", "--error_on_truncation")
def too_long_text_with_error_on_truncation(tmp_path):
    import datasets

    from recipes.common import SOURCE, TARGET, DataArguments, tokenize_splits

    raw = datasets.Dataset.from_dict(
        {SOURCE: ["cat", "the cat and the dog in the city by the river"], TARGET: ["katze", "katze"]}
    )
    data_args = DataArguments(max_source_length=4, max_target_length=16, error_on_truncation=True)
    data_args.val_max_target_length = 16
    tokenize_splits({"train": raw}, _tokenizer(), data_args)


@case(TypeError, "text[0] is NoneType", "missing text in the data")
def missing_text_reaches_the_tokenizer(tmp_path):
    _tokenizer()([None, "the cat"])


@case(ValueError, "do_train needs --train_file")
def training_without_a_train_file(tmp_path):
    from recipes.common import DataArguments, ModelArguments, check_arguments

    check_arguments(ModelArguments(), DataArguments(), _seq2seq_args(do_train=True))


@case(ValueError, "--source_lang", "--target_lang", "give both")
def source_language_without_target_language(tmp_path):
    from recipes.common import DataArguments, task_defaults

    task_defaults("translation", DataArguments(source_lang="de"))


# ------------------------------------------------------------------------------------------- the table


def test_table_is_large_enough():
    assert len(CASES) >= 30, len(CASES)
    assert len({c.name for c in CASES}) == len(CASES)


def _raised_in_our_code(err: BaseException) -> bool:
    """The frame that raised is in this repository (s2s, samplers, metrics, recipes), not torch or pyarrow."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(REPO)) and "/tests/" not in f.filename]
    return bool(ours) and frames[-1] == ours[-1]


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_a_clear_error(bad: Case, tmp_path, capsys):
    with pytest.raises(bad.error) as info:
        bad.action(tmp_path)
    message = capsys.readouterr().err if bad.stderr else str(info.value)
    missing = [fragment for fragment in bad.fragments if fragment not in message]
    assert not missing, f"message lacks {missing}: {message}"
    if not bad.stderr:
        assert _raised_in_our_code(info.value), "".join(traceback.format_exception(info.value))
    assert "code ran while loading" not in capsys.readouterr().out
