"""Text -> ids: every split tokenized through `datasets.map` (batched, cached, in parallel with
`preprocessing_num_workers`), cut to the length limits with the eos kept, the cuts counted, and each
example's (source, target) lengths stored once for the samplers."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets

from recipes.arguments import DataArguments
from recipes.data import SOURCE, TARGET

logger = logging.getLogger("recipes")

TRUNCATION_FLAGS = ("source_truncated", "target_truncated")

TOKENIZED_FEATURES = datasets.Features(
    {
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "attention_mask": datasets.Sequence(datasets.Value("int8")),
        "labels": datasets.Sequence(datasets.Value("int32")),
        "length": datasets.Sequence(datasets.Value("int32"), length=2),
        "source_truncated": datasets.Value("bool"),
        "target_truncated": datasets.Value("bool"),
    }
)
"""What the map writes. Left to inference, `datasets` stores ids as int64 and the all-ones mask as int64:
declared as int32 ids (any vocabulary below 2 billion) and an int8 mask, the cache of a 5M-pair corpus is
about half the size on disk and in the page cache, and is written faster. `length` holds each example's
(source, target) lengths after truncation, written once here: the trainer's length-aware samplers read it
(`length_column_name`) instead of measuring the ids on every run, and it never reaches the model."""


def tokenize_splits(
    splits: Mapping[str, datasets.Dataset],
    tokenizer: Any,
    data_args: DataArguments,
    *,
    report_truncation: bool = True,
) -> dict[str, datasets.Dataset]:
    """input_ids / attention_mask / labels / length for each split, through `datasets.map` (batched, cached,
    `num_proc`).

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
            [
                raw._fingerprint,
                tokenizer_key,
                {k: v for k, v in options.items() if k != "tokenizer"},
                TOKENIZED_FEATURES.to_dict(),  # a change of the stored types is a new cache
            ]
        )
        dataset = raw.map(
            tokenize_batch,
            batched=True,
            fn_kwargs=options,
            remove_columns=raw.column_names,
            features=TOKENIZED_FEATURES,
            # Record batches of 10,000 rows instead of 1,000 (each call's output is written as one batch):
            # opening the memory-mapped cache and reading the lengths touch every batch's header and offsets,
            # each fault pulling in ~64 KB of the file, so fewer batches keep far fewer of its pages resident
            # (about 600 MB at 5M pairs with 1,000).
            batch_size=10_000,
            writer_batch_size=10_000,
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
    # Only the rows over a limit are copied and cut; the others pass through as the tokenizer made them
    # (this loop runs once per example of the corpus: millions of times).
    input_ids, labels = encoded["input_ids"], encoded["labels"]
    attention_mask = encoded["attention_mask"]
    source_cut = [len(ids) > max_source_length for ids in input_ids]
    target_cut = [len(target) > max_target_length for target in labels]
    for row, cut in enumerate(source_cut):
        if cut:
            ids = input_ids[row]
            input_ids[row] = list(ids[: max_source_length - 1]) + list(ids[-1:])
            attention_mask[row] = list(attention_mask[row][:max_source_length])
    for row, cut in enumerate(target_cut):
        if cut:
            target = labels[row]
            labels[row] = list(target[: max_target_length - 1]) + list(target[-1:])
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "length": [[len(ids), len(target)] for ids, target in zip(input_ids, labels, strict=True)],
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
        # The flag column straight from Arrow: one vectorised read, where the numpy format would build a
        # Python object per row (minutes at millions of rows).
        cut = dataset.with_format("arrow")[flag].to_numpy(zero_copy_only=False).astype(bool, copy=False)
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
