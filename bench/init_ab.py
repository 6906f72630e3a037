"""Initialisation and norm placement A/B on a toy task that needs attention to learn where to copy from.

    python -m bench.init_ab                                    # every variant, tiny size, seeds 0 1 2
    python -m bench.init_ab --variants normal xavier --size small --seeds 0 --out /tmp/ab.json

The task maps each digit d of a 3-10 digit sequence to (d + 3) mod 10: 3,000 training rows, 200 unseen rows
to score. It is trivial once each target position attends to its source position, and impossible before
(the loss stays at ln(10) = 2.30), so how many updates a model spends at 2.30 measures how quickly its
attention breaks away from uniform at the start. Training: Adam lr 1e-3, 50 warm-up updates then linear decay
to zero, batches of 32 rows, no dropout; the loss on the 200 unseen rows is recorded at a few updates and
4-beam BLEU on them at the end. Each run uses one thread (a shared 2-core machine runs small matmuls faster
on one thread than on two) and is deterministic for its seed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sacrebleu
import torch
from torch import nn

from s2s.models import TransformerConfig, TransformerForConditionalGeneration
from s2s.models.layers import DecoderLayer, EncoderLayer

PAD, EOS, FIRST_DIGIT = 0, 3, 4
VOCAB_SIZE = FIRST_DIGIT + 10
SHIFT = 3
CHECKPOINTS = (100, 200, 400, 600)

TOY_MODEL = {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "num_heads": 4, "ffn_dim": 128}
"""The model of the issue that reported the slow start: the `tiny` preset with half its feed-forward width."""
SIZES = ("toy", "tiny", "small", "base")
"""`toy` or a `TransformerConfig` preset."""


def shifted_digits_task(n_train: int = 3000, n_test: int = 200, *, seed: int = 0) -> tuple[list, list]:
    """(source ids, target ids) pairs, targets ending in eos; the test rows never occur in training."""
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    rows: list[tuple[list[int], list[int]]] = []
    while len(rows) < n_train + n_test:
        digits = tuple(rng.randrange(10) for _ in range(rng.randint(3, 10)))
        if digits in seen:
            continue
        seen.add(digits)
        source = [FIRST_DIGIT + d for d in digits]
        target = [FIRST_DIGIT + (d + SHIFT) % 10 for d in digits] + [EOS]
        rows.append((source, target))
    return rows[:n_train], rows[n_train:]


def collate(rows: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask, labels padded with -100."""
    width_in, width_out = max(len(s) for s, _ in rows), max(len(t) for _, t in rows)
    input_ids = torch.tensor([s + [PAD] * (width_in - len(s)) for s, _ in rows])
    labels = torch.tensor([t + [-100] * (width_out - len(t)) for _, t in rows])
    return {"input_ids": input_ids, "attention_mask": (input_ids != PAD).long(), "labels": labels}


def toy_config(size: str = "toy", **overrides) -> TransformerConfig:
    """The model of `size` for the task's vocabulary, without dropout unless overridden."""
    options = {"vocab_size": VOCAB_SIZE, "max_position_embeddings": 32, "dropout": 0.0, **overrides}
    if size == "toy":
        return TransformerConfig(**{**TOY_MODEL, **options})
    return TransformerConfig.preset(size, **options)


@dataclass
class RunResult:
    losses: dict[int, float] = field(default_factory=dict)
    """Held-out teacher-forced loss (mean over target tokens) after each checkpoint update."""
    bleu: float = 0.0
    """4-beam corpus BLEU on the held-out rows after the last update."""
    seconds: float = 0.0


def train_and_score(
    model: nn.Module,
    train: list,
    test: list,
    *,
    steps: int = 600,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    warmup_steps: int = 50,
    checkpoints: Sequence[int] = CHECKPOINTS,
    seed: int = 0,
) -> RunResult:
    """Train `model` on `train` for `steps` updates, then score it on `test` (see the module docstring)."""
    started = time.perf_counter()
    result = RunResult()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup_steps, max(0.0, (steps - s) / (steps - warmup_steps)))
    )
    rng = random.Random(seed)
    order: list[int] = []
    held_out = collate(test)
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            order += rng.sample(range(len(train)), len(train))  # epochs of a fresh permutation each
        batch = collate([train[i] for i in order[:batch_size]])
        del order[:batch_size]
        model.train()
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step in checkpoints:
            model.eval()
            with torch.no_grad():
                result.losses[step] = model(**held_out).loss.item()
    result.bleu = beam_bleu(model, test)
    result.seconds = time.perf_counter() - started
    return result


def beam_bleu(model: nn.Module, rows: list, *, num_beams: int = 4) -> float:
    """Corpus BLEU of 4-beam outputs against the targets, digits written as space-separated words."""
    model.eval()
    batch = collate(rows)
    with torch.no_grad():
        out = model.generate(
            batch["input_ids"], batch["attention_mask"], num_beams=num_beams, max_new_tokens=14
        )

    def words(ids: Sequence[int]) -> str:
        return " ".join(str(i - FIRST_DIGIT) for i in ids if i >= FIRST_DIGIT)

    hypotheses = [words(row.tolist()) for row in out]
    references = [words(target) for _, target in rows]
    return sacrebleu.corpus_bleu(hypotheses, [references]).score


# ---------------------------------------------------------------------------------------------- variants
def _residual_outputs(model: nn.Module) -> list[tuple[nn.Linear, int]]:
    """Each linear layer that writes into the residual stream, with its stack's depth."""
    config = model.config
    outputs = []
    for module in model.modules():
        if isinstance(module, EncoderLayer):
            outputs += [
                (module.self_attn.out, config.encoder_layers),
                (module.ffn.fc2, config.encoder_layers),
            ]
        elif isinstance(module, DecoderLayer):
            depth = config.decoder_layers
            outputs += [
                (module.self_attn.out, depth),
                (module.cross_attn.out, depth),
                (module.ffn.fc2, depth),
            ]
    return outputs


def depth_scaled(model: nn.Module) -> None:
    """Residual-writing projections divided by sqrt(2 * layers) (GPT-2's scaling), so the residual stream's
    variance at the top does not grow with depth."""
    with torch.no_grad():
        for linear, depth in _residual_outputs(model):
            linear.weight.div_(math.sqrt(2 * depth))


def qkv_gain(model: nn.Module) -> None:
    """Query, key and value blocks scaled by 1/sqrt(2), fairseq's gain (and `nn.Transformer`'s bound, which
    draws the fused 3d x d matrix as one)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, EncoderLayer | DecoderLayer):
                module.self_attn.qkv.weight.div_(math.sqrt(2))
            if isinstance(module, DecoderLayer):
                module.cross_attn.q.weight.div_(math.sqrt(2))
                module.cross_attn.kv.weight.div_(math.sqrt(2))


@dataclass(frozen=True)
class Variant:
    config: dict
    """TransformerConfig fields."""
    adjust: Callable[[nn.Module], None] | None = None
    """Applied to the fresh model (an initialisation the config does not offer)."""


VARIANTS: dict[str, Variant] = {
    "normal": Variant({"init_style": "normal"}),
    "normal-postnorm": Variant({"init_style": "normal", "pre_norm": False}),
    "xavier": Variant({"init_style": "xavier"}),
    "xavier-postnorm": Variant({"init_style": "xavier", "pre_norm": False}),
    "xavier-qkvgain": Variant({"init_style": "xavier"}, qkv_gain),
    "xavier-depthscaled": Variant({"init_style": "xavier"}, depth_scaled),
}


def run_variant(name: str, *, size: str, seed: int, steps: int) -> RunResult:
    variant = VARIANTS[name]
    train, test = shifted_digits_task(seed=0)  # the same data for every variant and seed
    torch.manual_seed(seed)
    model = TransformerForConditionalGeneration(toy_config(size, **variant.config))
    if variant.adjust is not None:
        variant.adjust(model)
    checkpoints = tuple(c for c in CHECKPOINTS if c <= steps) + ((steps,) if steps not in CHECKPOINTS else ())
    return train_and_score(model, train, test, steps=steps, seed=seed, checkpoints=checkpoints)


def summarise(runs: list[dict]) -> str:
    """A markdown table: per variant and size, the mean (min-max) over seeds of each loss and the BLEU."""
    lines = []
    keys = sorted(
        {(r["size"], r["variant"]) for r in runs},
        key=lambda k: (SIZES.index(k[0]), list(VARIANTS).index(k[1])),
    )
    steps = sorted({int(s) for r in runs for s in r["losses"]})
    lines.append(
        "| size | variant | seeds | " + " | ".join(f"loss @{s}" for s in steps) + " | BLEU (4 beams) |"
    )
    lines.append("|---" * (4 + len(steps)) + "|")
    for size, variant in keys:
        group = [r for r in runs if (r["size"], r["variant"]) == (size, variant)]
        cells = []
        for s in steps:
            values = [r["losses"][str(s)] for r in group if str(s) in r["losses"]]
            cells.append(_spread(values, "{:.3f}"))
        bleus = [r["bleu"] for r in group]
        cells.append(_spread(bleus, "{:.1f}"))
        lines.append(f"| {size} | {variant} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.init_ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--size", nargs="+", default=["toy"], choices=SIZES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", type=Path, help="JSON file: every run (appended to when it exists)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = json.loads(args.out.read_text()) if args.out and args.out.is_file() else []
    for size in args.size:
        for seed in args.seeds:
            for name in args.variants:  # variants alternate within a seed: machine drift hits them alike
                result = run_variant(name, size=size, seed=seed, steps=args.steps)
                run = {"size": size, "variant": name, "seed": seed, "steps": args.steps,
                       "losses": {str(k): v for k, v in result.losses.items()}, "bleu": result.bleu,
                       "seconds": round(result.seconds, 1)}  # fmt: skip
                runs.append(run)
                print(json.dumps(run), flush=True)
                if args.out:
                    args.out.write_text(json.dumps(runs, indent=1) + "\n")
    print(summarise(runs))


if __name__ == "__main__":
    main()
