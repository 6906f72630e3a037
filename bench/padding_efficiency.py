"""Padding efficiency of the samplers on Multi30k train (de -> en), at batch size 64.

    python -m bench.padding_efficiency [--epochs 3] [--data PATH] [--output bench/results/padding_efficiency.json]

Efficiency is real tokens / padded tokens over source + target (each side padded to its own batch maximum),
averaged over epochs. The token budget is chosen so that its mean batch holds about 64 sentences, the same
mean size as the fixed-size samplers. Text is tokenized with the project's tokenizer: a joint sentencepiece
unigram vocabulary of 8000 trained on the training pairs (cached under bench/results/, which git ignores).
Prints a markdown table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from s2s.tokenization import load_tokenizer, train_joint_tokenizer
from samplers import (
    LengthGroupedSampler,
    SortishSampler,
    TokenBudgetBatchSampler,
    padding_efficiency,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "multi30k" / "train.jsonl"
RESULTS = REPO / "bench" / "results"
GOALS = {"token_budget": 0.97, "sortish": 0.90, "length_grouped": 0.90}


def read_pairs(path: Path, *, source: str = "de", target: str = "en") -> list[tuple[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"no Multi30k training file at {path}; pass --data PATH")
    pairs = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if line.strip():
                try:
                    translation = json.loads(line)["translation"]
                    pairs.append((translation[source], translation[target]))
                except (json.JSONDecodeError, KeyError) as err:
                    raise ValueError(
                        f"{path}:{line_no}: expected {{'translation': {{'{source}', '{target}'}}}}"
                    ) from err
    return pairs


def token_lengths(pairs: list[tuple[str, str]], *, vocab_size: int, cache: Path) -> np.ndarray:
    """(n, 2) source and target lengths in tokens (eos included), with the project's tokenizer."""
    if (cache / "tokenizer_config.json").is_file():
        tokenizer = load_tokenizer(cache)
    else:
        tokenizer = train_joint_tokenizer(
            pairs, vocab_size=vocab_size, backend="sentencepiece", model_type="unigram"
        )
        tokenizer.save_pretrained(cache)
    encoded = tokenizer([s for s, _ in pairs], text_target=[t for _, t in pairs])
    return np.array(
        [[len(s), len(t)] for s, t in zip(encoded["input_ids"], encoded["labels"])], dtype=np.int64
    )


def fixed_batches(order: list[int], batch_size: int) -> list[list[int]]:
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def budget_for_mean_batch(lengths: np.ndarray, batch_size: int) -> int:
    """The max_tokens whose mean batch size is closest to batch_size (mean size grows with the budget)."""
    costs = lengths.max(axis=1)
    low, high = int(costs.max()), int(costs.max()) * batch_size * 4

    def mean_size(max_tokens: int) -> float:
        return len(lengths) / len(TokenBudgetBatchSampler(lengths, max_tokens))

    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if mean_size(middle) < batch_size else (low, middle)
    return min((low, high), key=lambda m: abs(mean_size(m) - batch_size))


def measure(
    make_batches: Callable[[int], list[list[int]]], lengths: np.ndarray, epochs: int
) -> dict[str, float]:
    scores, sizes = [], []
    for epoch in range(epochs):
        batches = make_batches(epoch)
        scores.append(padding_efficiency(batches, lengths))
        sizes.append(len(lengths) / len(batches))
    return {
        "padding_efficiency": float(np.mean(scores)),
        "min_over_epochs": float(min(scores)),
        "mean_batch_size": float(np.mean(sizes)),
        "batches": len(batches),
    }


def run(
    data: Path, *, batch_size: int, epochs: int, vocab_size: int, seed: int, cache_dir: Path = RESULTS
) -> dict:
    pairs = read_pairs(data)
    started = time.perf_counter()
    lengths = token_lengths(pairs, vocab_size=vocab_size, cache=cache_dir / f"multi30k_de_en_spm{vocab_size}")
    tokenize_seconds = time.perf_counter() - started
    max_tokens = budget_for_mean_batch(lengths, batch_size)

    def epoch_of(sampler):
        def batches(epoch: int) -> list[list[int]]:
            sampler.set_epoch(epoch)
            order = list(sampler)
            return order if isinstance(sampler, TokenBudgetBatchSampler) else fixed_batches(order, batch_size)

        return batches

    def random_batches(epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(seed + epoch)
        return fixed_batches(torch.randperm(len(lengths), generator=generator).tolist(), batch_size)

    rows = {
        "random": random_batches,
        "length_grouped": epoch_of(LengthGroupedSampler(lengths, batch_size, seed=seed)),
        # What Hugging Face's group_by_length does: group by the source length only.
        "length_grouped_source_only": epoch_of(LengthGroupedSampler(lengths[:, 0], batch_size, seed=seed)),
        "sortish": epoch_of(SortishSampler(lengths, batch_size, seed=seed)),
        "token_budget": epoch_of(TokenBudgetBatchSampler(lengths, max_tokens, seed=seed)),
    }
    results = {name: measure(make, lengths, epochs) for name, make in rows.items()}
    return {
        "data": str(data),
        "examples": len(lengths),
        "tokenizer": f"s2s.tokenization.train_joint_tokenizer(sentencepiece unigram, vocab_size={vocab_size})",
        "tokenize_seconds": round(tokenize_seconds, 1),
        "mean_src_tokens": float(lengths[:, 0].mean()),
        "mean_tgt_tokens": float(lengths[:, 1].mean()),
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "epochs": epochs,
        "seed": seed,
        "goals": GOALS,
        "results": results,
    }


def markdown(report: dict) -> str:
    lines = [
        f"Multi30k train de->en, {report['examples']} pairs, batch size {report['batch_size']} "
        f"(token budget max_tokens={report['max_tokens']}), mean of {report['epochs']} epochs",
        "",
        "| batching | padding efficiency | worst epoch | mean batch size | batches | goal |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["results"].items():
        goal = GOALS.get(name)
        verdict = (
            "" if goal is None else f">= {goal} {'met' if row['padding_efficiency'] >= goal else 'MISSED'}"
        )
        lines.append(
            f"| {name} | {row['padding_efficiency']:.4f} | {row['min_over_epochs']:.4f} | "
            f"{row['mean_batch_size']:.1f} | {row['batches']} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Multi30k train.jsonl")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="epochs (orders) to average over")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS / "padding_efficiency.json")
    args = parser.parse_args(argv)

    report = run(
        args.data, batch_size=args.batch_size, epochs=args.epochs, vocab_size=args.vocab_size, seed=args.seed
    )
    print(markdown(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
