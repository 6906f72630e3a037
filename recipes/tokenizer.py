"""The job's tokenizer: the one named, the one saved with the model or in output_dir (a resumed run, or an
attempt torchrun restarted), or a new one trained on the training pairs (one joint vocabulary for source and
target) and saved at once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from recipes.arguments import ModelArguments
from recipes.data import SOURCE, TARGET
from recipes.hf_models import holds_hf_tokenizer, import_transformers, is_hf_model_dir

logger = logging.getLogger("recipes")


def load_or_train_tokenizer(
    model_args: ModelArguments, training_args: Any, train: datasets.Dataset | None
) -> Any:
    """The tokenizer named, else the one saved with the model or in output_dir (a resumed run), else a new one
    trained on the training pairs (one joint vocabulary) and saved in output_dir at once.

    An attempt that torchrun restarted after this job started training in output_dir always reuses the saved
    tokenizer, even with `overwrite_output_dir`: the checkpoint it resumes from was trained on those ids.

    Under torchrun the recipes call this inside `main_process_first(local=False)`: rank 0 trains (or reuses)
    and saves the tokenizer, and the other processes then load that one instead of training their own."""
    from s2s import distributed
    from s2s.elastic import ElasticLaunch, trained_here
    from s2s.tokenization import CONFIG_FILE, load_tokenizer

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
    if (output_dir / CONFIG_FILE).is_file():
        launch = ElasticLaunch.from_environ()
        if launch is not None and launch.is_restart and trained_here(output_dir, launch):
            # Its checkpoints were trained on this tokenizer's ids: a new one, even from the same sample,
            # need not give the same ids, so --overwrite_output_dir (which the first attempt honoured by
            # training the tokenizer there) does not apply again.
            logger.warning(
                "%s: reusing the tokenizer the first attempt saved in %s, so the resumed model reads the ids it "
                "was trained on",
                launch.describe(),
                output_dir,
            )
            return load_tokenizer(output_dir)
        if not training_args.overwrite_output_dir:
            logger.info(
                "reusing the tokenizer saved in %s (pass --overwrite_output_dir to train a new one)",
                output_dir,
            )
            return load_tokenizer(output_dir)
    if train is None:
        raise ValueError("no tokenizer: pass --tokenizer_name_or_path or --model_name_or_path, or --do_train")
    tokenizer = _train_tokenizer(model_args, train, seed=training_args.seed)
    if training_args.process_index == 0:
        tokenizer.save_pretrained(output_dir)
    return tokenizer


def sampled_pairs(
    train: datasets.Dataset, max_sentences: int | None, *, seed: int, batch_size: int = 10_000
) -> Iterator[tuple[str, str]]:
    """(source, target) pairs to train the tokenizer on: all of them, or `max_sentences // 2` pairs drawn
    at random (in dataset order, so the memory-mapped file is read forward). Read a batch at a time: the
    columns are never held whole as Python strings, which for millions of pairs would take gigabytes."""
    if max_sentences is not None and max_sentences // 2 < len(train):
        rows = np.random.default_rng(seed).choice(len(train), size=max(1, max_sentences // 2), replace=False)
        train = train.select(np.sort(rows))
    for batch in train.select_columns([SOURCE, TARGET]).iter(batch_size=batch_size):
        yield from zip(batch[SOURCE], batch[TARGET])


def _train_tokenizer(model_args: ModelArguments, train: datasets.Dataset, *, seed: int) -> Any:
    """One joint vocabulary for source and target, so the model can share its embeddings."""
    from s2s.tokenization import train_joint_tokenizer

    logger.info(
        "training a %s tokenizer (%s, vocab %d) on %s",
        model_args.tokenizer_backend,
        model_args.tokenizer_model_type if model_args.tokenizer_backend == "sentencepiece" else "bpe",
        model_args.vocab_size,
        f"{len(train)} pairs"
        if model_args.tokenizer_max_sentences is None or model_args.tokenizer_max_sentences // 2 >= len(train)
        else f"{model_args.tokenizer_max_sentences // 2} pairs drawn from {len(train)} (tokenizer_max_sentences)",
    )
    sentencepiece = model_args.tokenizer_backend == "sentencepiece"
    tokenizer = train_joint_tokenizer(
        sampled_pairs(train, model_args.tokenizer_max_sentences, seed=seed),
        vocab_size=model_args.vocab_size,
        backend=model_args.tokenizer_backend,
        model_type=model_args.tokenizer_model_type if sentencepiece else None,
        input_sentence_size=model_args.tokenizer_max_sentences,
        num_threads=model_args.num_threads,
        hard_vocab_limit=False,
    )
    logger.info("tokenizer vocabulary: %d", len(tokenizer))
    return tokenizer


def load_any_tokenizer(path: str | Path) -> Any:
    from s2s.tokenization import CONFIG_FILE, load_tokenizer

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such tokenizer or model folder")
    if path.is_dir() and (
        holds_hf_tokenizer(path) or (not (path / CONFIG_FILE).is_file() and is_hf_model_dir(path))
    ):
        transformers = import_transformers(path)
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return load_tokenizer(path)
