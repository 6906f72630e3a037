"""Multi30k (de -> en) tokenized with the project's joint sentencepiece tokenizer, shared by the comparisons.

Read from the bundled `recipes/data/multi30k/*.jsonl.gz`, so the benchmark needs no download. The tokenizer is
trained once on the training pairs and cached under bench/results/ (git-ignored), in the same folder that
`bench.padding_efficiency` uses.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.common import CACHE, REPO
from s2s.tokenization import Tokenizer, load_tokenizer, train_joint_tokenizer

DATA = REPO / "recipes" / "data" / "multi30k"
SPLITS = ("train", "validation", "test")  # test is test2016 (Flickr)
Feature = dict[str, list[int]]


@dataclass
class Split:
    pairs: list[tuple[str, str]]
    features: list[Feature]
    """input_ids (source + eos) and labels (target + eos), unpadded."""

    def __len__(self) -> int:
        return len(self.features)

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.pairs[:n], self.features[:n])


@dataclass
class BenchData:
    tokenizer: Tokenizer
    train: Split
    validation: Split
    test: Split
    tokenizer_dir: Path


def read_pairs(path: Path, *, source: str = "de", target: str = "en") -> list[tuple[str, str]]:
    """(source, target) pairs of a Multi30k JSONL file, gzip-compressed or not."""
    if not path.is_file():
        raise FileNotFoundError(f"no Multi30k file at {path}; the repository bundles it in {DATA}")
    opener = gzip.open if path.suffix == ".gz" else open
    pairs = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                translation = json.loads(line)["translation"]
                pairs.append((translation[source], translation[target]))
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(
                    f"{path}:{line_no}: expected {{'translation': {{'{source}', '{target}'}}}}"
                ) from err
    return pairs


def tokenizer_for(
    train_pairs: Sequence[tuple[str, str]], *, vocab_size: int, cache: Path = CACHE
) -> tuple[Tokenizer, Path]:
    """The joint sentencepiece unigram tokenizer of the training pairs, trained once and cached."""
    folder = cache / f"multi30k_de_en_spm{vocab_size}"
    if (folder / "tokenizer_config.json").is_file():
        return load_tokenizer(folder), folder
    tokenizer = train_joint_tokenizer(
        list(train_pairs), vocab_size=vocab_size, backend="sentencepiece", model_type="unigram"
    )
    tokenizer.save_pretrained(folder)
    return tokenizer, folder


def encode(tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]], *, max_length: int = 128) -> list[Feature]:
    encoded = tokenizer(
        [s for s, _ in pairs],
        text_target=[t for _, t in pairs],
        max_length=max_length,
        max_target_length=max_length,
        truncation=True,
    )
    return [
        {"input_ids": list(s), "labels": list(t)} for s, t in zip(encoded["input_ids"], encoded["labels"])
    ]


def load_bench_data(
    *, vocab_size: int, train_examples: int | None = None, cache: Path = CACHE, data_dir: Path = DATA
) -> BenchData:
    """Read and tokenize the three splits. With `train_examples`, the tokenizer is trained on that prefix
    only (and cached separately), which keeps the smoke test fast."""
    raw = {split: read_pairs(data_dir / f"{split}.jsonl.gz") for split in SPLITS}
    train_pairs = raw["train"][:train_examples] if train_examples else raw["train"]
    if train_examples:
        cache = cache / f"train{train_examples}"
    tokenizer, folder = tokenizer_for(train_pairs, vocab_size=vocab_size, cache=cache)
    splits = {
        split: Split(pairs, encode(tokenizer, pairs))
        for split, pairs in (("train", train_pairs), ("validation", raw["validation"]), ("test", raw["test"]))
    }
    return BenchData(tokenizer=tokenizer, tokenizer_dir=folder, **splits)


def pad_batch(features: Sequence[Feature], *, pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """input_ids/attention_mask padded with pad, labels with -100: what both toolkits' collators produce."""
    src_width = max(len(f["input_ids"]) for f in features)
    tgt_width = max(len(f["labels"]) for f in features)
    input_ids = torch.full((len(features), src_width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(features), tgt_width), -100, dtype=torch.long)
    for row, feature in enumerate(features):
        input_ids[row, : len(feature["input_ids"])] = torch.tensor(feature["input_ids"])
        labels[row, : len(feature["labels"])] = torch.tensor(feature["labels"])
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_token_id).long(), "labels": labels}


def fixed_batches(
    features: Sequence[Feature], *, batch_size: int, count: int, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """`count` padded batches of random examples (a seeded shuffle, cycled if needed): the identical batches
    both trainers are fed in the trainer and model efficiency comparison."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < count * batch_size:
        order += torch.randperm(len(features), generator=generator).tolist()
    return [
        pad_batch([features[i] for i in order[b * batch_size : (b + 1) * batch_size]]) for b in range(count)
    ]


def unwrap_batch(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Collator for a dataset whose items are whole batches (loaded with batch size 1)."""
    if len(items) != 1:
        raise ValueError(f"pre-collated batches must be loaded with batch size 1, got {len(items)} items")
    return dict(items[0])


class TokenCounter:
    """Wraps a collator and records the real source and target tokens of every batch it builds, in order.

    With `dataloader_num_workers=0` the k-th batch built is the k-th batch trained on (a prefetch only builds
    it earlier), so the tokens of steps i..j are `sum(self.target[i:j])`.
    """

    def __init__(self, collate: Callable[[list[Any]], dict[str, Any]], *, pad_token_id: int = 0) -> None:
        self.collate = collate
        self.pad_token_id = pad_token_id
        self.source: list[int] = []
        self.target: list[int] = []

    def __call__(self, items: list[Any]) -> dict[str, Any]:
        batch = self.collate(items)
        self.source.append(int((torch.as_tensor(batch["input_ids"]) != self.pad_token_id).sum()))
        self.target.append(int((torch.as_tensor(batch["labels"]) != -100).sum()))
        return batch
