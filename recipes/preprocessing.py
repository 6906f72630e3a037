"""Text -> ids: every split tokenized through `datasets.map` (batched, cached, in parallel with
`preprocessing_num_workers`), cut to the length limits with the eos kept, and the cuts counted."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from recipes.arguments import DataArguments
from recipes.data import SOURCE, TARGET

logger = logging.getLogger("recipes")

TRUNCATION_FLAGS = ("source_truncated", "target_truncated")


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
