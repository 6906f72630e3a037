"""What the translation and summarization recipes share: their arguments, and each step as a small function.

A recipe reads as the list of steps: parse arguments -> load text -> tokenizer -> tokenize -> model -> trainer ->
train / evaluate / predict -> write results. Every step is here so both recipes run the same code; the recipes
only say which fields hold the source and the target and which metrics to report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np

from s2s.callbacks import TrainerCallback
from s2s.checkpointing import list_checkpoints
from s2s.text_files import detect_format, load_text_pairs

logger = logging.getLogger("recipes")

Task = Literal["translation", "summarization"]
SOURCE, TARGET = "source", "target"  # column names of the raw datasets
RECIPE_ARGS_FILE = "recipe_args.json"  # model and data arguments, saved with the model for recipes.generate
TRUNCATION_FLAGS = ("source_truncated", "target_truncated")


# ----------------------------------------------------------------------------------------------------------------
# arguments


@dataclass
class ModelArguments:
    """Which model and tokenizer to train or load."""

    model_name_or_path: str | None = None
    """A trained model to start from: an s2s output_dir or saved model (config.json + model.safetensors), or a
    Hugging Face seq2seq model directory (needs `transformers`; nothing is downloaded). Unset: a new model of
    size `model_preset`."""

    model_preset: Literal["tiny", "small", "base"] = "small"
    """Size of a new model: "tiny" (d_model 64, 2+2 layers), "small" (256, 3+3), "base" (512, 6+6)."""

    model_overrides: dict[str, Any] | str | None = None
    """`TransformerConfig` fields that override the preset, e.g. {"dropout": 0.2, "d_model": 32} (a JSON
    string on the command line)."""

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

    tokenizer_max_sentences: int | None = None
    """Train a new tokenizer on at most this many sentences (sampled); unset: all of them."""


@dataclass
class DataArguments:
    """Where the data is, which fields hold source and target, and how it is cut and scored."""

    train_file: str | None = None
    """Training data: a .jsonl/.json, .csv or .tsv file (optionally .gz), a folder written by
    `datasets.save_to_disk`, or the prefix of parallel text files (`data/train` for data/train.de + data/train.en)."""

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
    step (`max_steps` stays a cap). Pair it with a schedule that does not need to know the end
    (inverse_sqrt, constant_with_warmup): a linear or cosine decay would be cut off part-way."""

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
    for name in ("max_source_length", "max_target_length", "val_max_target_length", "num_beams"):
        value = getattr(data_args, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if data_args.max_source_length < 2 or data_args.max_target_length < 2:
        raise ValueError("max_source_length and max_target_length must leave room for a token and eos (>= 2)")
    if data_args.max_train_minutes is not None and not data_args.max_train_minutes > 0:
        raise ValueError(f"max_train_minutes must be > 0, got {data_args.max_train_minutes}")
    if data_args.average_last_checkpoints is not None and data_args.average_last_checkpoints < 2:
        raise ValueError(
            f"average_last_checkpoints must be >= 2 (or unset), got {data_args.average_last_checkpoints}"
        )
    return data_args


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args: Any) -> None:
    """Contradictions and missing inputs, found before data is read or a tokenizer trained."""
    needs = {
        "do_train": (training_args.do_train, "train_file"),
        "do_eval": (training_args.do_eval or _evaluates_during_training(training_args), "validation_file"),
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
    averaged = data_args.average_last_checkpoints
    if averaged is not None and training_args.do_train:
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
    if not training_args.do_train and not model_args.model_name_or_path:
        raise ValueError(
            "evaluating or predicting without --do_train needs a trained model: --model_name_or_path <output_dir>"
        )
    output_dir = Path(training_args.output_dir)
    checkpoints = list_checkpoints(output_dir)  # checkpoint-<step> folders by step; not checkpoint-best etc.
    if (
        training_args.do_train
        and checkpoints
        and not training_args.overwrite_output_dir
        and _resume_value(training_args.resume_from_checkpoint) is None
    ):
        raise ValueError(
            f"{output_dir} already holds checkpoints ({checkpoints[-1].name}, ...): pass --resume_from_checkpoint "
            "true to continue that run, --overwrite_output_dir to start over in it, or another --output_dir"
        )
    if isinstance(model_args.model_overrides, str):
        try:
            model_args.model_overrides = json.loads(model_args.model_overrides)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"model_overrides is not a JSON object ({exc}): {model_args.model_overrides!r}"
            ) from None
    if model_args.model_overrides is not None and not isinstance(model_args.model_overrides, dict):
        raise ValueError(
            f"model_overrides must be a mapping of TransformerConfig fields, got {model_args.model_overrides!r}"
        )


def _evaluates_during_training(training_args: Any) -> bool:
    return bool(training_args.do_train) and str(training_args.eval_strategy) != "no"


def parse_arguments(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, Any]:
    """(ModelArguments, DataArguments, Seq2SeqTrainingArguments) from the command line, or from one YAML/JSON
    config file followed by `--name value` overrides (`python -m recipes.translation cfg.yaml --max_steps 10`)."""
    from s2s import ArgumentParser, Seq2SeqTrainingArguments

    parser = ArgumentParser((ModelArguments, DataArguments, Seq2SeqTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return model_args, data_args, training_args


def setup_logging(training_args: Any) -> None:
    """The recipe's own progress at INFO on the main process unless a log_level is chosen; the other processes
    of a torchrun job at `log_level_replica` (as `get_process_log_level` says), their lines tagged with their
    rank. Libraries at the level the args give."""
    level = training_args.get_process_log_level()
    rank = f"[rank {training_args.process_index}] " if training_args.world_size > 1 else ""
    logging.basicConfig(
        format=f"%(asctime)s %(levelname)s %(name)s: {rank}%(message)s", datefmt="%H:%M:%S", level=level
    )
    main = training_args.should_log  # the main process (of each node, with log_on_each_node)
    logger.setLevel(logging.INFO if main and str(training_args.log_level) == "passive" else level)
    datasets.utils.logging.set_verbosity_warning()


# ----------------------------------------------------------------------------------------------------------------
# data


def fields_for(task: Task, data_args: DataArguments, path: str | Path) -> tuple[str, str]:
    """The source and target field names to read from `path`: explicit columns win; for translation, the
    language codes (nested under `translation.` in JSON lines and saved datasets)."""
    if data_args.text_column is not None and data_args.summary_column is not None:
        return data_args.text_column, data_args.summary_column
    source, target = data_args.source_lang, data_args.target_lang
    if task == "translation" and detect_format(path) in ("json", "saved"):
        return f"translation.{source}", f"translation.{target}"
    return str(source), str(target)


def load_splits(task: Task, data_args: DataArguments, training_args: Any) -> dict[str, datasets.Dataset]:
    """The raw (source, target) text of each split the run needs, with `max_*_samples` applied."""
    wanted = {
        "train": (training_args.do_train, data_args.train_file, data_args.max_train_samples),
        "validation": (
            training_args.do_eval or _evaluates_during_training(training_args),
            data_args.validation_file,
            data_args.max_eval_samples,
        ),
        "test": (training_args.do_predict, data_args.test_file, data_args.max_predict_samples),
    }
    splits = {}
    for split, (needed, path, max_samples) in wanted.items():
        if not needed:
            continue
        source_field, target_field = fields_for(task, data_args, path)
        splits[split] = load_text_pairs(
            path,
            source_field=source_field,
            target_field=target_field,
            source_column=SOURCE,
            target_column=TARGET,
            max_samples=max_samples,
            drop_empty=data_args.drop_empty_examples,
            split=split,
            cache_dir=data_args.dataset_cache_dir,
        )
        logger.info(
            "%s: %d examples from %s (%s -> %s)", split, len(splits[split]), path, source_field, target_field
        )
    return splits


# ----------------------------------------------------------------------------------------------------------------
# tokenizer


def load_or_train_tokenizer(
    model_args: ModelArguments, training_args: Any, train: datasets.Dataset | None
) -> Any:
    """The tokenizer named, else the one saved with the model or in output_dir (a resumed run), else a new one
    trained on the training pairs (one joint vocabulary) and saved in output_dir at once.

    Under torchrun the recipes call this inside `main_process_first(local=False)`: rank 0 trains (or reuses)
    and saves the tokenizer, and the other processes then load that one instead of training their own."""
    from s2s import distributed
    from s2s.tokenization import CONFIG_FILE, load_tokenizer, train_joint_tokenizer

    if model_args.tokenizer_name_or_path:
        return load_any_tokenizer(model_args.tokenizer_name_or_path)
    if model_args.model_name_or_path:
        return load_any_tokenizer(model_args.model_name_or_path)
    output_dir = Path(training_args.output_dir)
    if distributed.is_distributed() and training_args.process_index != 0:
        if not (output_dir / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"rank {training_args.process_index}: rank 0 saved no tokenizer in {output_dir} (see its error); "
                "on several nodes output_dir must be on a filesystem they share, or pass --tokenizer_name_or_path"
            )
        logger.info("loading the tokenizer rank 0 saved in %s", output_dir)
        return load_tokenizer(output_dir)
    if (output_dir / CONFIG_FILE).is_file() and not training_args.overwrite_output_dir:
        logger.info(
            "reusing the tokenizer saved in %s (pass --overwrite_output_dir to train a new one)", output_dir
        )
        return load_tokenizer(output_dir)
    if train is None:
        raise ValueError("no tokenizer: pass --tokenizer_name_or_path or --model_name_or_path, or --do_train")
    pairs = zip(train[SOURCE], train[TARGET])
    logger.info(
        "training a %s tokenizer (%s, vocab %d) on %d pairs",
        model_args.tokenizer_backend,
        model_args.tokenizer_model_type,
        model_args.vocab_size,
        len(train),
    )
    tokenizer = train_joint_tokenizer(
        pairs,
        vocab_size=model_args.vocab_size,
        backend=model_args.tokenizer_backend,
        model_type=model_args.tokenizer_model_type
        if model_args.tokenizer_backend == "sentencepiece"
        else None,
        input_sentence_size=model_args.tokenizer_max_sentences,
        hard_vocab_limit=False,
    )
    logger.info("tokenizer vocabulary: %d", len(tokenizer))
    if training_args.process_index == 0:
        tokenizer.save_pretrained(output_dir)
    return tokenizer


def load_any_tokenizer(path: str | Path) -> Any:
    from s2s.tokenization import CONFIG_FILE, load_tokenizer

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such tokenizer or model folder")
    if path.is_dir() and not (path / CONFIG_FILE).is_file() and is_hf_model_dir(path):
        transformers = _import_transformers(path)
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return load_tokenizer(path)


def is_hf_model_dir(path: Path) -> bool:
    """A Hugging Face model folder: config.json whose model_type is not ours."""
    from s2s.models import TransformerConfig

    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError):
        return False
    return model_type is not None and model_type != TransformerConfig.model_type


def _import_transformers(path: Path) -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError(
            f"{path} is a Hugging Face model folder; loading it needs transformers (pip install transformers)"
        ) from None
    return transformers


# ----------------------------------------------------------------------------------------------------------------
# tokenization


def tokenize_splits(
    splits: Mapping[str, datasets.Dataset],
    tokenizer: Any,
    data_args: DataArguments,
    *,
    report_truncation: bool = True,
) -> dict[str, datasets.Dataset]:
    """input_ids / attention_mask / labels for each split, through `datasets.map` (batched, cached, `num_proc`).

    Truncation keeps the final eos and is counted: a warning says how many sources and targets were cut (an
    error with `error_on_truncation`). Every process of a torchrun job sees the same data, so the recipes let
    only the main process warn (`report_truncation`); the error is raised everywhere.
    """
    tokenizer_key = _tokenizer_fingerprint(tokenizer)
    tokenized = {}
    for split, raw in splits.items():
        max_target = data_args.max_target_length
        if split != "train" and data_args.val_max_target_length is not None:
            max_target = data_args.val_max_target_length
        options = {
            "tokenizer": tokenizer,
            "prefix": data_args.source_prefix or "",
            "max_source_length": data_args.max_source_length,
            "max_target_length": max_target,
        }
        key = json.dumps(
            [raw._fingerprint, tokenizer_key, {k: v for k, v in options.items() if k != "tokenizer"}]
        )
        dataset = raw.map(
            tokenize_batch,
            batched=True,
            fn_kwargs=options,
            remove_columns=raw.column_names,
            num_proc=data_args.preprocessing_num_workers,
            load_from_cache_file=not data_args.overwrite_cache,
            # Our own fingerprint: the tokenizer's files, not a pickle of it, decide whether the cache is valid.
            new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
            desc=f"Tokenizing {split}",
        )
        _report_truncation(dataset, split, data_args, max_target, warn=report_truncation)
        tokenized[split] = dataset.remove_columns(list(TRUNCATION_FLAGS))
    return tokenized


def tokenize_batch(
    batch: dict[str, list[str]],
    *,
    tokenizer: Any,
    prefix: str,
    max_source_length: int,
    max_target_length: int,
) -> dict[str, list[Any]]:
    """Tokenize without truncation, then cut to the limits keeping the last token (eos) and flag what was cut."""
    sources = [prefix + text for text in batch[SOURCE]] if prefix else batch[SOURCE]
    encoded = tokenizer(sources, text_target=batch[TARGET])
    input_ids, attention_mask, labels, source_cut, target_cut = [], [], [], [], []
    for ids, mask, target in zip(encoded["input_ids"], encoded["attention_mask"], encoded["labels"]):
        ids, mask, target = list(ids), list(mask), list(target)
        source_cut.append(len(ids) > max_source_length)
        target_cut.append(len(target) > max_target_length)
        if source_cut[-1]:
            ids = ids[: max_source_length - 1] + ids[-1:]
            mask = mask[:max_source_length]
        if target_cut[-1]:
            target = target[: max_target_length - 1] + target[-1:]
        input_ids.append(ids)
        attention_mask.append(mask)
        labels.append(target)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "source_truncated": source_cut,
        "target_truncated": target_cut,
    }


def _report_truncation(
    dataset: datasets.Dataset, split: str, data_args: DataArguments, max_target: int, *, warn: bool = True
) -> None:
    for flag, limit, name in (
        ("source_truncated", data_args.max_source_length, "max_source_length"),
        (
            "target_truncated",
            max_target,
            "max_target_length" if split == "train" else "val_max_target_length",
        ),
    ):
        cut = np.asarray(dataset.with_format("numpy")[flag], dtype=bool)
        count = int(cut.sum())
        if not count:
            continue
        side = flag.split("_")[0] + "s"
        first = int(cut.argmax())
        message = (
            f"{split}: {count} of {len(dataset)} {side} are longer than {name}={limit} tokens "
            f"(the first is example {first})"
        )
        if data_args.error_on_truncation:
            raise ValueError(f"{message}; raise --{name}, or drop --error_on_truncation to truncate them")
        if warn:
            logger.warning("%s; they were truncated (raise --%s to keep them whole)", message, name)


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of the tokenizer's saved files: the same vocabulary gives the same key, run after run."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                digest.update(path.name.encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# model


def load_or_build_model(model_args: ModelArguments, data_args: DataArguments, tokenizer: Any) -> Any:
    """A saved model (s2s or Hugging Face), or a new `TransformerForConditionalGeneration` sized for the
    tokenizer; checks that the tokenizer fits the model and the length limits fit its positions."""
    from s2s.models import TransformerConfig, TransformerForConditionalGeneration

    path = Path(model_args.model_name_or_path) if model_args.model_name_or_path else None
    if path is not None:
        if not path.exists():
            raise FileNotFoundError(f"model_name_or_path={str(path)!r}: no such folder")
        if is_hf_model_dir(path):
            model = _import_transformers(path).AutoModelForSeq2SeqLM.from_pretrained(
                str(path), local_files_only=True
            )
        else:
            model = TransformerForConditionalGeneration.from_pretrained(path)
        _check_tokenizer_fits(model, tokenizer, path)
    else:
        overrides = dict(model_args.model_overrides or {})
        config = TransformerConfig.preset(
            model_args.model_preset,
            **{
                "vocab_size": len(tokenizer),
                "pad_token_id": tokenizer.pad_token_id,
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "decoder_start_token_id": tokenizer.bos_token_id,
                **overrides,
            },
        )
        model = TransformerForConditionalGeneration(config)
        _check_tokenizer_fits(model, tokenizer, None)
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(
        data_args.max_source_length, data_args.max_target_length, data_args.val_max_target_length or 0
    )
    if (
        limit is not None
        and getattr(model.config, "position_embedding", "learned") != "sinusoidal"
        and longest > limit
    ):
        raise ValueError(
            f"the model has {limit} positions but max_source_length/max_target_length ask for {longest}; "
            "lower them, or use a model with more positions (for a new model: "
            'model_overrides {"max_position_embeddings": N})'
        )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %s, %s parameters", type(model).__name__, f"{n_params:,}")
    return model


def _check_tokenizer_fits(model: Any, tokenizer: Any, path: Path | None) -> None:
    vocab = getattr(model.config, "vocab_size", None)
    where = f"the model at {path}" if path else "the model"
    if vocab is not None and len(tokenizer) > vocab:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} ids but {where} has vocab_size {vocab}: ids past the vocabulary "
            "would crash the embedding lookup; use the tokenizer saved with the model (leave "
            "--tokenizer_name_or_path unset)"
        )
    model_pad = getattr(model.config, "pad_token_id", None)
    if model_pad is not None and tokenizer.pad_token_id is not None and model_pad != tokenizer.pad_token_id:
        raise ValueError(
            f"the tokenizer pads with id {tokenizer.pad_token_id} but {where} with {model_pad}: they were not "
            "trained together; use the tokenizer saved with the model"
        )


def configure_generation(
    model: Any, data_args: DataArguments, *, new_model: bool, training_args: Any = None
) -> None:
    """Save the evaluation/prediction defaults in the model's generation config (and so in output_dir):
    the settings of `--generation_config` (e.g. `no_repeat_ngram_size` for summaries), then the output length
    and `num_beams`, so that `recipes.generate` decodes as the final evaluation did.

    A loaded model keeps the output length it was saved with unless `val_max_target_length` is given."""
    config = model.generation_config
    if training_args is not None and hasattr(training_args, "explicit_generation_settings"):
        for name, value in training_args.explicit_generation_settings().items():
            setattr(config, name, value)
    length = data_args.val_max_target_length or (data_args.max_target_length if new_model else None)
    if length is not None:
        config.max_new_tokens = length
        if getattr(config, "max_length", None) is not None:
            config.max_length = None  # max_new_tokens decides; a stale max_length would cut outputs short
    if data_args.num_beams is not None:
        config.num_beams = data_args.num_beams
    if hasattr(config, "validate"):
        config.validate()


# ----------------------------------------------------------------------------------------------------------------
# trainer


class TimeBudgetCallback(TrainerCallback):
    """Stops training once `minutes` of wall-clock time have passed since training began, saving a checkpoint
    and evaluating at that step. Under DDP the ranks agree (any rank over budget stops all), so none waits for
    the others in a collective that never comes."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60.0
        self.start: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        from s2s import distributed

        over = self.start is not None and time.monotonic() - self.start >= self.seconds
        if distributed.is_distributed():
            over = distributed.all_reduce_sum(int(over)) > 0
        if over and not control.should_training_stop:
            logger.info(
                "time budget of %.3g minutes reached at step %d: stopping",
                self.seconds / 60,
                state.global_step,
            )
            control.should_training_stop = True
            control.should_log = True
            control.should_save = str(args.save_strategy) != "no"
            control.should_evaluate = str(args.eval_strategy) != "no"
        return control


def build_trainer(
    model: Any,
    tokenizer: Any,
    training_args: Any,
    tokenized: Mapping[str, datasets.Dataset],
    *,
    data_args: DataArguments,
    task: Task,
) -> Any:
    from metrics import Seq2SeqMetrics
    from s2s import DataCollatorForSeq2Seq, Seq2SeqTrainer

    compute_metrics = None
    if training_args.predict_with_generate:
        compute_metrics = Seq2SeqMetrics(
            tokenizer,
            metrics=tuple(data_args.metrics or ()),
            # rougeLsum scores sentence by sentence: split summaries into one sentence per line first
            sentence_per_line=task == "summarization",
        )
    else:
        logger.warning(
            "predict_with_generate is off: evaluation reports the loss only (BLEU/ROUGE need generated outputs)"
        )
    callbacks = []
    if data_args.max_train_minutes is not None:
        callbacks.append(TimeBudgetCallback(data_args.max_train_minutes))
        if str(training_args.lr_scheduler_type) in ("linear", "cosine", "cosine_with_restarts", "polynomial"):
            logger.warning(
                "max_train_minutes with lr_scheduler_type=%s: the decay is planned over max_steps=%d and will be "
                "cut off where the time runs out; inverse_sqrt or constant_with_warmup do not depend on the end",
                training_args.lr_scheduler_type,
                training_args.max_steps,
            )
    return Seq2SeqTrainer(
        model=model,
        args=training_args,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        train_dataset=tokenized.get("train"),
        eval_dataset=tokenized.get("validation"),
        tokenizer=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )


def train(
    trainer: Any, training_args: Any, *, train_size: int, average_last_checkpoints: int | None = None
) -> dict[str, float]:
    result = trainer.train(resume_from_checkpoint=_resume_value(training_args.resume_from_checkpoint))
    metrics = dict(getattr(result, "metrics", None) or {})
    if average_last_checkpoints:
        metrics["averaged_checkpoints"] = len(load_averaged_checkpoints(trainer, average_last_checkpoints))
    trainer.save_model(training_args.output_dir)  # model, config, generation config, tokenizer
    metrics["train_samples"] = train_size
    return metrics


def load_averaged_checkpoints(trainer: Any, count: int) -> list[Path]:
    """Load the mean of the weights of the last `count` complete checkpoints in output_dir into the trainer's
    model; return the checkpoints used. Incomplete ones (a crash mid-save) are skipped, with a warning."""
    from safetensors.torch import save_file

    from s2s import checkpointing

    output_dir = Path(trainer.args.output_dir)
    complete = []
    for path in list_checkpoints(output_dir):
        try:
            checkpointing.verify_checkpoint(path)
            complete.append(path)
        except checkpointing.CheckpointError as err:
            logger.warning("checkpoint averaging skips %s: %s", path, err)
    chosen = complete[-count:]
    if not chosen:
        raise checkpointing.CheckpointError(
            f"average_last_checkpoints: no complete checkpoint in {output_dir}"
        )
    if len(chosen) < count:
        logger.warning(
            "average_last_checkpoints=%d: only %d complete checkpoints to average", count, len(chosen)
        )
    averaged = checkpointing.average_model_weights(chosen)
    # through a folder, so the trainer loads it as any checkpoint: key and shape checks, FSDP shards
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".averaged-") as folder:
        save_file(averaged, str(Path(folder) / checkpointing.WEIGHTS_NAME), metadata={"format": "pt"})
        trainer.load_weights(folder)
    logger.info("final weights: the mean of %s", ", ".join(path.name for path in chosen))
    return chosen


def _resume_value(value: Any) -> Any:
    """`--resume_from_checkpoint true` (or "last") means the newest complete checkpoint; "false" means none."""
    if isinstance(value, str) and value.lower() in ("true", "last", "false"):
        return value.lower() != "false" or None
    return value


def _final_gen_kwargs(trainer: Any, data_args: DataArguments) -> dict[str, Any]:
    """Generation options of the final evaluation and prediction: `num_beams` beats `generation_num_beams`,
    which may be set low to keep evaluation during training cheap."""
    if not trainer.args.predict_with_generate or data_args.num_beams is None:
        return {}
    return {"num_beams": data_args.num_beams}


def evaluate(trainer: Any, data_args: DataArguments, *, eval_size: int) -> dict[str, float]:
    metrics = dict(trainer.evaluate(metric_key_prefix="eval", **_final_gen_kwargs(trainer, data_args)))
    metrics["eval_samples"] = eval_size
    return metrics


def predict(
    trainer: Any,
    dataset: datasets.Dataset,
    tokenizer: Any,
    data_args: DataArguments,
    *,
    references: Sequence[str] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Test metrics and the decoded hypotheses, in dataset order. With `references` (the raw test targets),
    the scores are computed against them rather than against the decoded labels, which lose what
    `val_max_target_length` truncated and what the tokenizer normalizes: a published score is against the
    references as written."""
    output = trainer.predict(dataset, metric_key_prefix="predict", **_final_gen_kwargs(trainer, data_args))
    metrics = dict(output.metrics or {})
    metrics["predict_samples"] = len(dataset)
    if not trainer.args.predict_with_generate:
        return metrics, []
    hypotheses = [
        text.strip() for text in tokenizer.batch_decode(output.predictions, skip_special_tokens=True)
    ]
    if len(hypotheses) != len(dataset):
        raise RuntimeError(
            f"the trainer returned {len(hypotheses)} predictions for {len(dataset)} test examples"
        )
    score_texts = getattr(trainer.compute_metrics, "score_texts", None)
    if references is not None and score_texts is not None:
        for name, value in score_texts(hypotheses, list(references)).items():
            key = f"predict_{name}"
            if key in metrics and abs(metrics[key] - value) > 1e-9:
                logger.info(
                    "test %s against the raw references: %.4f (against the tokenized labels: %.4f)",
                    name,
                    value,
                    metrics[key],
                )
            metrics[key] = value
    return metrics, hypotheses


# ----------------------------------------------------------------------------------------------------------------
# outputs


def write_results(output_dir: str | Path, split: str, metrics: Mapping[str, Any]) -> None:
    """`<split>_results.json`, and the same numbers merged into `all_results.json`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    clean = {k: _json_number(v) for k, v in sorted(metrics.items())}
    (output_dir / f"{split}_results.json").write_text(json.dumps(clean, indent=2) + "\n")
    all_path = output_dir / "all_results.json"
    merged = json.loads(all_path.read_text()) if all_path.is_file() else {}
    merged.update(clean)
    all_path.write_text(json.dumps(dict(sorted(merged.items())), indent=2) + "\n")
    for key, value in clean.items():
        logger.info("  %s = %s", key, value)


def _json_number(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN; the string keeps the file valid and the problem visible
    return value


def sentence_scores(
    hypotheses: Sequence[str], references: Sequence[str], metric_names: Sequence[str]
) -> list[dict]:
    """Per-example scores to put next to each prediction (sentence BLEU/chrF as sacrebleu computes them)."""
    import metrics as m

    rows: list[dict[str, float]] = [{} for _ in hypotheses]
    for name in metric_names:
        if name == "bleu":
            scores = [{"bleu": s["bleu"]} for s in m.bleu(hypotheses, references, sentence=True)]
        elif name in ("chrf", "chrf++"):
            word_order = 2 if name == "chrf++" else 0
            scores = [
                {name: s["chrf"]}
                for s in m.chrf(hypotheses, references, sentence=True, word_order=word_order)
            ]
        elif name == "ter":
            scores = [{"ter": s["ter"]} for s in m.ter(hypotheses, references, sentence=True)]
        else:
            scores = [
                {k: v for k, v in s.items() if k in ("rouge1", "rouge2", "rougeL", "rougeLsum")}
                for s in m.rouge(hypotheses, references, sentence=True, split_sentences=True)
            ]
        for row, score in zip(rows, scores):
            row.update({k: round(float(v), 4) for k, v in score.items()})
    return rows


def write_predictions(
    output_dir: str | Path,
    raw: datasets.Dataset,
    hypotheses: Sequence[str],
    *,
    metric_names: Sequence[str],
) -> list[dict[str, Any]]:
    """`generated_predictions.txt` (one hypothesis per line) and `generated_predictions.jsonl` (source,
    reference, hypothesis and sentence scores per line)."""
    output_dir = Path(output_dir)
    sources, references = raw[SOURCE], raw[TARGET]
    # A newline inside a hypothesis would shift every later line of the .txt file against the test set.
    lines = [" ".join(h.splitlines()) for h in hypotheses]
    (output_dir / "generated_predictions.txt").write_text(
        "".join(line + "\n" for line in lines), encoding="utf-8"
    )
    scores = sentence_scores(list(hypotheses), list(references), metric_names)
    rows = [
        {"id": i, "source": s, "reference": r, "hypothesis": h, "scores": sc}
        for i, (s, r, h, sc) in enumerate(zip(sources, references, hypotheses, scores))
    ]
    with open(output_dir / "generated_predictions.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    logger.info("wrote %d predictions to %s", len(rows), output_dir / "generated_predictions.{txt,jsonl}")
    return rows


def save_run_files(
    trainer: Any,
    tokenizer: Any,
    model: Any,
    model_args: ModelArguments,
    data_args: DataArguments,
    *,
    curve_history: list[dict] | None = None,
) -> None:
    """Everything a later `recipes.generate` or `--model_name_or_path` run needs, plus the training record:
    tokenizer, generation config, recipe arguments, trainer_state.json and the learning curves.

    The curves are drawn from `curve_history` when given: the log history as training left it. The final
    evaluation that follows (the kept checkpoint, other decoding settings such as 4 beams) is logged at the
    last step too, and drawn there it would read as one more point of the greedy validation curve; it is in
    eval_results.json and trainer_state.json."""
    from s2s.plotting import plot_learning_curves

    output_dir = Path(trainer.args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(output_dir)
    model.generation_config.save_pretrained(output_dir)
    recipe_args = {"model": asdict(model_args), "data": asdict(data_args)}
    (output_dir / RECIPE_ARGS_FILE).write_text(json.dumps(recipe_args, indent=2, default=str) + "\n")
    state = trainer.state
    if hasattr(state, "save_to_json"):
        state.save_to_json(output_dir / "trainer_state.json")
    history = state.log_history if curve_history is None else curve_history
    if history:
        for path in plot_learning_curves(history, output_dir):
            logger.info("learning curve: %s", path)


def print_summary(
    task: Task, predict_metrics: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, examples: int
) -> None:
    """The job's last words: the test scores and a few examples, on stdout."""
    wanted = ("bleu", "chrf", "chrf++", "ter", "rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len")
    shown = [
        f"{name} {predict_metrics[f'predict_{name}']:.2f}"
        for name in wanted
        if f"predict_{name}" in predict_metrics
    ]
    n = predict_metrics.get("predict_samples", len(rows))
    print(f"\nTest ({n} examples): " + (", ".join(shown) if shown else "no generation metrics"))
    if task == "translation" and "predict_bleu" in predict_metrics:
        print("(sacreBLEU: cased, 13a tokenization, detokenized output)")
    for row in list(rows)[:examples]:
        print(
            f"\n  source:     {row['source']}\n  reference:  {row['reference']}\n  hypothesis: {row['hypothesis']}"
        )
    print()


__all__ = [
    "DataArguments",
    "ModelArguments",
    "build_trainer",
    "check_arguments",
    "configure_generation",
    "evaluate",
    "fields_for",
    "load_or_build_model",
    "load_or_train_tokenizer",
    "load_splits",
    "parse_arguments",
    "predict",
    "print_summary",
    "save_run_files",
    "setup_logging",
    "task_defaults",
    "tokenize_batch",
    "tokenize_splits",
    "train",
    "write_predictions",
    "write_results",
]
