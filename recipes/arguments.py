"""The recipes' own arguments (model, data) beside `Seq2SeqTrainingArguments`, the task's defaults, and the
checks that refuse a contradictory or incomplete job before any data is read or a tokenizer trained."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from recipes.cli import ERRORS_EPILOG
from s2s.checkpointing import list_checkpoints
from s2s.elastic import ElasticLaunch, trained_here

Task = Literal["translation", "summarization"]


@dataclass
class ModelArguments:
    """Which model and tokenizer to train or load."""

    model_name_or_path: str | None = None
    """A trained model to start from: an s2s output_dir or saved model (config.json + model.safetensors), or a
    Hugging Face seq2seq model directory (nothing is downloaded; see `model_engine`). Unset: a new model of
    size `model_preset`."""

    model_engine: Literal["s2s", "transformers"] = "s2s"
    """How a Hugging Face folder given as `model_name_or_path` runs. "s2s": imported into the toolkit's own
    Transformer (BART, mBART, Marian, M2M100/NLLB, T5 families), which trains and decodes on our engine; its
    generation settings (decoder start, forced BOS, lengths, beams) come along, decide evaluation and
    prediction, and are saved with the trained model, which is then an s2s folder. "transformers": the Hugging
    Face model as it is (needs `transformers`), e.g. for a family the import does not support. An s2s folder
    always loads as ours, and is refused with "transformers"."""

    model_preset: Literal["tiny", "small", "base"] = "small"
    """Size of a new model: "tiny" (d_model 64, 2+2 layers), "small" (256, 3+3), "base" (512, 6+6)."""

    model_overrides: dict[str, Any] | str | None = None
    """`TransformerConfig` fields that override the preset, e.g. {"dropout": 0.2, "d_model": 32} (a JSON
    string on the command line)."""

    num_threads: int | None = None
    """Threads torch computes with (intra-op), set before the model is built, and threads of a new
    sentencepiece tokenizer's training. Unset: one per core. The split of a sum over threads decides the
    order its terms are added in, so under bf16 the same run on another thread count drifts apart (its
    first logged loss, at update 50, already differs) and ends about a BLEU point away; a fixed count makes
    every machine with at least that many cores train the same model."""

    tokenizer_name_or_path: str | None = None
    """A saved tokenizer (a folder written by `save_pretrained`, or a sentencepiece .model file). Unset: the
    one saved with `model_name_or_path` or in `output_dir`, else a new one trained on the training data."""

    tokenizer_backend: Literal["sentencepiece", "bpe"] = "sentencepiece"
    """Backend of a newly trained tokenizer: sentencepiece, or the Hugging Face `tokenizers` BPE."""

    tokenizer_model_type: Literal["unigram", "bpe"] = "unigram"
    """Sentencepiece model type of a newly trained tokenizer."""

    vocab_size: int = 8000
    """Vocabulary of a newly trained tokenizer, special tokens included. Source and target share one joint
    vocabulary (and so the model's embeddings); on a small corpus the vocabulary may come out smaller."""

    tokenizer_max_sentences: int | None = 1_000_000
    """Train a new tokenizer on at most this many sentences (source and target sentences of pairs drawn at
    random, with the seed); None: all of them. A million sentences settle the subword vocabulary of a
    corpus; on a corpus of millions, reading the rest only costs minutes and memory."""


@dataclass
class DataArguments:
    """Where the data is, which fields hold source and target, and how it is cut and scored."""

    train_file: str | None = None
    """Training data: a .jsonl/.json, .csv or .tsv file (optionally .gz), a folder written by
    `datasets.save_to_disk`, the prefix of parallel text files (`data/train` for data/train.de + data/train.en),
    or a glob pattern of shards read in name order (`data/train-*.jsonl.gz`, `data/train-*.de`; quote it in a
    shell). The checked text is kept as Arrow in the cache: a second run over unchanged files does not read
    them again."""

    validation_file: str | None = None
    """Evaluation data during training and for `do_eval`; same formats as `train_file`."""

    test_file: str | None = None
    """Data for `do_predict`; same formats as `train_file`."""

    source_lang: str | None = None
    """Translation: source language code, e.g. "de": field `translation.de` of JSON lines, column `de` of
    CSV/TSV, suffix `.de` of parallel text files."""

    target_lang: str | None = None
    """Translation: target language code, e.g. "en"."""

    text_column: str | None = None
    """Field (dotted for nested JSON) or column holding the source text; summarization default "document"."""

    summary_column: str | None = None
    """Field or column holding the target text; summarization default "summary"."""

    source_prefix: str | None = None
    """Text put in front of every source, e.g. "summarize: " for T5-style models."""

    max_source_length: int = 256
    """Sources longer than this many tokens (eos included) are truncated, with a counted warning."""

    max_target_length: int = 128
    """Training targets longer than this many tokens (eos included) are truncated, with a counted warning."""

    val_max_target_length: int | None = None
    """Truncation of evaluation and test references (default `max_target_length`), and the longest generated
    output (`max_new_tokens`) saved in the model's generation config. Unset: a new model gets
    `max_target_length`, a loaded model keeps the length it was saved with."""

    error_on_truncation: bool = False
    """Refuse texts longer than max_source_length / max_target_length instead of truncating them."""

    max_train_samples: int | None = None
    """Use only the first this many training examples (for quick runs and debugging)."""

    max_eval_samples: int | None = None
    """Use only the first this many validation examples."""

    max_predict_samples: int | None = None
    """Use only the first this many test examples."""

    drop_empty_examples: bool = False
    """Drop examples whose source or target is empty (counted in a warning) instead of stopping with an error."""

    skip_bad_lines: bool = False
    """Skip lines that cannot be read (malformed JSON or CSV, a missing field, a number where text belongs,
    bytes that are not UTF-8) instead of stopping at the first; a warning at the end of reading gives how many
    per file and the first few file:line locations. Off, the first such line stops the job with its file,
    line and the fix."""

    pad_to_multiple_of: int | None = 8
    """Pad the sources and the targets of each batch to a length that is a multiple of this (1: to the longest
    in the batch). On CPU every distinct matrix shape makes oneDNN compile and keep its own kernel, and batches
    of every length keep the heap fragmented: rounding lengths up to a multiple of 8 leaves an eighth of the
    shapes, which lowered the demo's peak memory and made its updates faster, not slower, despite the extra
    padding. The padding is masked: the loss and the outputs are those of the unpadded batch, up to rounding."""

    preprocessing_num_workers: int | None = None
    """Processes for tokenizing (`datasets.map(num_proc=...)`); unset: one."""

    overwrite_cache: bool = False
    """Tokenize again instead of reusing the `datasets` cache."""

    dataset_cache_dir: str | None = None
    """Where `datasets` keeps its Arrow files and tokenization cache; default: its own cache folder."""

    num_beams: int | None = None
    """Beam width of the final evaluation (`do_eval`) and of prediction (`do_predict`), also saved in the model's
    generation config for recipes.generate. Evaluation during training uses `generation_num_beams` (e.g. 1, for
    speed) when that is set, else this. Unset: the model's (greedy for a new model)."""

    metrics: list[str] | None = None
    """Metrics to report: any of bleu, chrf, chrf++, ter, rouge. Default: bleu and chrf for translation, rouge
    for summarization."""

    num_examples_to_print: int = 3
    """How many test examples (source, reference, hypothesis) the job prints at the end."""

    max_train_minutes: float | None = None
    """Stop training after this many minutes of wall-clock time, with a checkpoint and an evaluation at that
    step (`max_steps` stays a cap). A linear, cosine or polynomial schedule then decays over these minutes
    instead of over `max_steps`, reaching its end when the time runs out. A resumed run continues the budget
    its checkpoint had spent."""

    average_last_checkpoints: int | None = None
    """After training, replace the weights by the mean of the last this many checkpoints (`save_steps` apart;
    `save_total_limit` must keep them). Averaging the end of a run usually scores higher than its last
    checkpoint alone. Cannot be combined with `load_best_model_at_end`, which also chooses the final weights."""


def task_defaults(task: Task, data_args: DataArguments) -> DataArguments:
    """Fill the task's defaults (columns, metrics) and refuse settings that cannot work, before any work."""
    if (data_args.text_column is None) != (data_args.summary_column is None) and task == "translation":
        raise ValueError("give both --text_column and --summary_column, or neither")
    if task == "translation":
        if data_args.text_column is None and data_args.source_lang is None:
            raise ValueError(
                "translation needs --source_lang and --target_lang (or --text_column/--summary_column)"
            )
        if (data_args.source_lang is None) != (data_args.target_lang is None):
            raise ValueError("give both --source_lang and --target_lang, or neither")
        data_args.metrics = data_args.metrics or ["bleu", "chrf"]
    else:
        data_args.text_column = data_args.text_column or "document"
        data_args.summary_column = data_args.summary_column or "summary"
        data_args.metrics = data_args.metrics or ["rouge"]
    for name in (
        "max_source_length",
        "max_target_length",
        "val_max_target_length",
        "num_beams",
        "pad_to_multiple_of",
    ):
        value = getattr(data_args, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if data_args.max_source_length < 2 or data_args.max_target_length < 2:
        raise ValueError("max_source_length and max_target_length must leave room for a token and eos (>= 2)")
    if data_args.max_train_minutes is not None and not data_args.max_train_minutes > 0:
        raise ValueError(f"max_train_minutes must be > 0, got {data_args.max_train_minutes}")
    if data_args.average_last_checkpoints is not None and data_args.average_last_checkpoints < 2:
        raise ValueError(
            "average_last_checkpoints must be >= 2 (or none: no averaging), "
            f"got {data_args.average_last_checkpoints}"
        )
    return data_args


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args: Any) -> None:
    """Contradictions and missing inputs, found before data is read or a tokenizer trained."""
    _check_inputs(model_args, data_args, training_args)
    if data_args.average_last_checkpoints is not None and training_args.do_train:
        _check_averaging(data_args.average_last_checkpoints, training_args)
    _check_output_dir(training_args)
    if model_args.num_threads is not None and model_args.num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 (or none: one per core), got {model_args.num_threads}")
    model_args.model_overrides = _overrides_mapping(model_args.model_overrides)


def _check_inputs(model_args: ModelArguments, data_args: DataArguments, training_args: Any) -> None:
    """Each stage asked for has its data file, something is asked for, and a job without training has a model."""
    needs = {
        "do_train": (training_args.do_train, "train_file"),
        "do_eval": (training_args.do_eval or evaluates_during_training(training_args), "validation_file"),
        "do_predict": (training_args.do_predict, "test_file"),
    }
    for flag, (wanted, file_arg) in needs.items():
        if wanted and not getattr(data_args, file_arg):
            why = (
                flag
                if flag != "do_eval" or training_args.do_eval
                else f"eval_strategy={training_args.eval_strategy}"
            )
            raise ValueError(f"{why} needs --{file_arg}")
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise ValueError("nothing to do: pass --do_train, --do_eval and/or --do_predict")
    if not training_args.do_train and not model_args.model_name_or_path:
        raise ValueError(
            "evaluating or predicting without --do_train needs a trained model: --model_name_or_path <output_dir>"
        )


def _check_averaging(averaged: int, training_args: Any) -> None:
    """Averaging needs the checkpoints it averages, and must be the only thing that picks the final weights."""
    if training_args.load_best_model_at_end:
        raise ValueError(
            "average_last_checkpoints and load_best_model_at_end both choose the final weights: drop one"
        )
    if str(training_args.save_strategy).lower().endswith("no"):
        raise ValueError("average_last_checkpoints needs checkpoints: set --save_strategy steps or epoch")
    limit = training_args.save_total_limit
    if limit is not None and limit < averaged:
        raise ValueError(
            f"average_last_checkpoints={averaged} but save_total_limit={limit} keeps only {limit} "
            f"checkpoints: raise save_total_limit to at least {averaged}"
        )


def _check_output_dir(training_args: Any) -> None:
    """Training into a folder that holds another run's checkpoints would mix the two: say how to choose.
    A job that torchrun restarted after it had started training here is exempt: the checkpoints are its own, and
    the Trainer resumes from them."""
    output_dir = Path(training_args.output_dir)
    checkpoints = list_checkpoints(output_dir)  # checkpoint-<step> folders by step; not checkpoint-best etc.
    launch = ElasticLaunch.from_environ()
    if (
        training_args.do_train
        and not (launch is not None and launch.is_restart and trained_here(output_dir, launch))
        and checkpoints
        and not training_args.overwrite_output_dir
        and resume_value(training_args.resume_from_checkpoint) is None
    ):
        raise ValueError(
            f"{output_dir} already holds checkpoints ({checkpoints[-1].name}, ...): pass --resume_from_checkpoint "
            "true to continue that run, --overwrite_output_dir to start over in it, or another --output_dir"
        )


def _overrides_mapping(overrides: dict[str, Any] | str | None) -> dict[str, Any] | None:
    """`model_overrides` as a dict: the command line gives a JSON string, a config file a mapping."""
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides)
        except json.JSONDecodeError as exc:
            raise ValueError(f"model_overrides is not a JSON object ({exc}): {overrides!r}") from None
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f"model_overrides must be a mapping of TransformerConfig fields, got {overrides!r}")
    return overrides


def evaluates_during_training(training_args: Any) -> bool:
    return bool(training_args.do_train) and str(training_args.eval_strategy) != "no"


def resume_value(value: Any) -> Any:
    """`--resume_from_checkpoint true` (or "last") means the newest complete checkpoint; "false" means none."""
    if isinstance(value, str) and value.lower() in ("true", "last", "false"):
        return value.lower() != "false" or None
    return value


def parse_arguments(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, Any]:
    """(ModelArguments, DataArguments, Seq2SeqTrainingArguments) from the command line, or from one YAML/JSON
    config file followed by `--name value` overrides (`python -m recipes.translation cfg.yaml --max_steps 10`).

    A bare `--debug` (tracebacks of user errors) is read and removed by `recipes.cli` before this parses; the
    help's closing lines say so."""
    from s2s import ArgumentParser, Seq2SeqTrainingArguments

    parser = ArgumentParser((ModelArguments, DataArguments, Seq2SeqTrainingArguments), epilog=ERRORS_EPILOG)
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return model_args, data_args, training_args
