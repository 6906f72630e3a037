"""The raw text of each split the job needs: which fields of which file hold the source and the target, read
and checked line by line (`recipes.text_files`) into (source, target) datasets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import datasets

from recipes.arguments import DataArguments, Task, evaluates_during_training
from recipes.text_files import detect_format, load_text_pairs

logger = logging.getLogger("recipes")

SOURCE, TARGET = "source", "target"  # column names of the raw datasets


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
            training_args.do_eval or evaluates_during_training(training_args),
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
            skip_bad_lines=data_args.skip_bad_lines,
            split=split,
            cache_dir=data_args.dataset_cache_dir,
        )
        logger.info(
            "%s: %d examples from %s (%s -> %s)", split, len(splits[split]), path, source_field, target_field
        )
    return splits
