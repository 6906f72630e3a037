"""The job's tokenizer: the one named, the one saved with the model or in output_dir, or a new one trained on
the training pairs (one joint vocabulary for source and target) and saved at once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import datasets

from recipes.arguments import ModelArguments
from recipes.data import SOURCE, TARGET
from recipes.hf_models import import_transformers, is_hf_model_dir

logger = logging.getLogger("recipes")


def load_or_train_tokenizer(
    model_args: ModelArguments, training_args: Any, train: datasets.Dataset | None
) -> Any:
    """The tokenizer named, else the one saved with the model or in output_dir (a resumed run), else a new one
    trained on the training pairs (one joint vocabulary) and saved in output_dir at once.

    Under torchrun the recipes call this inside `main_process_first(local=False)`: rank 0 trains (or reuses)
    and saves the tokenizer, and the other processes then load that one instead of training their own."""
    from s2s import distributed
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
    if (output_dir / CONFIG_FILE).is_file() and not training_args.overwrite_output_dir:
        logger.info(
            "reusing the tokenizer saved in %s (pass --overwrite_output_dir to train a new one)", output_dir
        )
        return load_tokenizer(output_dir)
    if train is None:
        raise ValueError("no tokenizer: pass --tokenizer_name_or_path or --model_name_or_path, or --do_train")
    tokenizer = _train_tokenizer(model_args, train)
    if training_args.process_index == 0:
        tokenizer.save_pretrained(output_dir)
    return tokenizer


def _train_tokenizer(model_args: ModelArguments, train: datasets.Dataset) -> Any:
    """One joint vocabulary for source and target, so the model can share its embeddings."""
    from s2s.tokenization import train_joint_tokenizer

    logger.info(
        "training a %s tokenizer (%s, vocab %d) on %d pairs",
        model_args.tokenizer_backend,
        model_args.tokenizer_model_type,
        model_args.vocab_size,
        len(train),
    )
    sentencepiece = model_args.tokenizer_backend == "sentencepiece"
    tokenizer = train_joint_tokenizer(
        zip(train[SOURCE], train[TARGET]),
        vocab_size=model_args.vocab_size,
        backend=model_args.tokenizer_backend,
        model_type=model_args.tokenizer_model_type if sentencepiece else None,
        input_sentence_size=model_args.tokenizer_max_sentences,
        hard_vocab_limit=False,
    )
    logger.info("tokenizer vocabulary: %d", len(tokenizer))
    return tokenizer


def load_any_tokenizer(path: str | Path) -> Any:
    from s2s.tokenization import CONFIG_FILE, load_tokenizer

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such tokenizer or model folder")
    if path.is_dir() and not (path / CONFIG_FILE).is_file() and is_hf_model_dir(path):
        transformers = import_transformers(path)
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return load_tokenizer(path)
