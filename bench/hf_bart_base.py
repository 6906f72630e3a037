"""A BART-base-sized Hugging Face checkpoint on our engine: the imported model against transformers' own.

The checkpoint is what a user would hand us: a `BartForConditionalGeneration` of BART-base's shape (d_model 768,
6+6 layers, 12 heads, ffn 3072, gelu, post-norm with a LayerNorm on the embeddings, learned positions, dropout
0.1 everywhere as in facebook/bart-base) with a 32k vocabulary and random weights, saved by `save_pretrained`
(config.json, model.safetensors, generation_config.json) into a temporary folder. Ours is
`s2s.models.from_transformers(folder)`; theirs is `BartForConditionalGeneration.from_pretrained(folder)`, so
both start from the very same weights.

- Training: the same padded batches (8 pairs, source and target lengths drawn between 3/4 of the maximum and
  the maximum of 32, padding on the right, -100 under padded labels) through forward under bf16 autocast, or
  in fp32 on a CPU without bf16 instructions (each model's own loss: the mean over the target tokens),
  backward and a fused AdamW step (lr 5e-5, no clipping). Warm-up steps untimed, then `train_steps` timed
  steps per repetition. Before any step, both models' losses on the first batch are compared with dropout off
  (eval mode), in each precision measured.
- Generation: the same padded random sources in batches, greedy and 4 beams, fp32 and bf16 autocast (fp32
  only on a CPU without bf16 instructions, where torch emulates bf16 many times slower), each
  side's `generate` with identical arguments, over all the batches the way a test set is decoded: ours inside
  `fixed_weights()` as `recipes.generate` and the trainer's prediction do, so it packs its decoder weights for
  the matmul library once per pass rather than once per batch (the timed pass includes that packing). Random
  weights would stop at random, so every output is forced to exactly `generation_new_tokens` new tokens
  (min_new_tokens = max_new_tokens); both engines decode the same number of steps. The checkpoint's generation
  config is neutral (no forced BOS/EOS, no n-gram blocking: a forced EOS at the last step would contradict the
  forced length). The greedy fp32 outputs of both sides are
  compared token for token.

The sides run alternately (A B A B ...) so a drift of a shared machine hits both; figures are sequences/s or
target tokens/s, ratios the median of the per-repetition ratios ours / Hugging Face.

    python -m bench.hf_bart_base [--setup full|quick|smoke] [--repetitions N] [--steps N] [--threads N]
                                 [--output bench/results/hf_bart_base.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.common import CACHE, Profile, Stopwatch, alternate, compare, log, native_precisions
from bench.generation import mode_name, timed
from bench.model_training import train_steps
from bench.models import build_bart, decoding_flops, training_flops
from s2s.models.packed import fixed_weights

RESULTS = CACHE / "hf_bart_base.json"
GOALS = {"training": 1.5, "generation": 2.0}  # ours / Hugging Face
LEARNING_RATE = 5e-5
# BART's special ids: <s> 0, <pad> 1, </s> 2, <unk> 3; the decoder starts from </s>.
BOS, PAD, EOS, FIRST_WORD = 0, 1, 2, 4


@dataclass(frozen=True)
class Setup:
    """The sizes of one run. `full` is the published BART-base run, `smoke` the test's tiny end-to-end run."""

    name: str
    model: dict[str, int] = field(
        default_factory=lambda: {
            "d_model": 768,
            "encoder_layers": 6,
            "decoder_layers": 6,
            "num_heads": 12,
            "ffn_dim": 3072,
        }
    )
    vocab_size: int = 32000
    batch_size: int = 8
    source_length: int = 32
    """Longest source of a training batch and of the generation sources (the shortest is 3/4 of it)."""
    target_length: int = 32
    warmup_steps: int = 2
    train_steps: int = 3
    """Optimizer steps timed per repetition and side, after `warmup_steps` untimed ones."""
    repetitions: int = 3
    generation_sources: int = 32
    generation_batch_size: int = 8
    generation_new_tokens: int = 32
    beams: tuple[int, ...] = (1, 4)
    precisions: tuple[str, ...] = ("fp32", "bf16")
    """Generation precisions; training is measured in the last of them (bf16 autocast). bf16 is dropped on a
    CPU without bf16 instructions (`native_precisions`)."""
    peak_size: int = 2048
    peak_runs: int = 3


SETUPS = {
    "full": Setup(name="full"),
    "quick": Setup(
        name="quick",
        repetitions=2,
        warmup_steps=1,
        train_steps=1,
        generation_sources=8,
        generation_batch_size=4,
        generation_new_tokens=16,
    ),
    "smoke": Setup(
        name="smoke",
        model={"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "num_heads": 2, "ffn_dim": 64},
        vocab_size=500,
        batch_size=2,
        source_length=8,
        target_length=8,
        warmup_steps=1,
        train_steps=2,
        repetitions=1,
        generation_sources=4,
        generation_batch_size=2,
        generation_new_tokens=4,
        peak_size=128,
        peak_runs=2,
    ),
}


def save_bart_folder(folder: Path, setup: Setup, *, seed: int = 0) -> Path:
    """A random-weight BART of `setup`'s size with facebook/bart-base's other settings, saved as a Hugging Face
    folder (safetensors). Returns `folder`."""
    model = build_bart(
        setup.model,
        vocab_size=setup.vocab_size,
        seed=seed,
        max_length=1024,
        activation_function="gelu",
        attention_dropout=0.1,
        activation_dropout=0.1,
        max_position_embeddings=1024,
        scale_embedding=False,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=EOS,
    )
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def load_ours(folder: Path) -> torch.nn.Module:
    from s2s.models import from_transformers

    return from_transformers(folder)


def load_theirs(folder: Path) -> torch.nn.Module:
    from transformers import BartForConditionalGeneration

    return BartForConditionalGeneration.from_pretrained(folder).eval()


def padded_ids(
    rows: int, longest: int, *, vocab_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`rows` random sequences of `3/4 longest` to `longest` tokens, each ending with EOS, right-padded with
    PAD; returns (ids, attention_mask)."""
    lengths = torch.randint(max(1, (3 * longest) // 4), longest + 1, (rows,), generator=generator)
    ids = torch.randint(FIRST_WORD, vocab_size, (rows, longest), generator=generator)
    mask = (torch.arange(longest) < lengths[:, None]).long()
    ids[torch.arange(rows), lengths - 1] = EOS
    return ids.masked_fill(mask == 0, PAD), mask


def make_training_batches(setup: Setup, count: int, *, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """`count` padded batches; the labels carry -100 under padding, as a seq2seq collator leaves them."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids, mask = padded_ids(
            setup.batch_size, setup.source_length, vocab_size=setup.vocab_size, generator=g
        )
        labels, label_mask = padded_ids(
            setup.batch_size, setup.target_length, vocab_size=setup.vocab_size, generator=g
        )
        labels = labels.masked_fill(label_mask == 0, -100)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def _autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def first_losses(
    models: dict[str, torch.nn.Module], batch: dict[str, torch.Tensor], precisions: tuple[str, ...]
) -> dict[str, dict]:
    """Each model's loss on `batch` with dropout off (eval mode), in each precision (fp32, bf16 autocast):
    the same weights must give the same loss before any step."""
    checks = {}
    for precision in precisions:
        losses = {}
        for side, model in models.items():
            model.eval()
            with torch.no_grad(), _autocast(precision == "bf16"):
                losses[side] = float(model(**batch).loss)
        check = {f"loss_{side}": loss for side, loss in losses.items()}
        if len(losses) == 2:
            check["abs_difference"] = abs(losses["ours"] - losses["theirs"])
        checks[precision] = check
    return checks


def measure_training(
    folder: Path,
    setup: Setup,
    sides: list[str],
    *,
    precision: str,
    peak_gflops: float | None,
    log_fn: Callable,
) -> tuple[dict, dict]:
    """The training row in `precision` ("bf16" autocast or "fp32") and the step-0 loss check."""
    bf16 = precision == "bf16"
    batches = make_training_batches(setup, setup.warmup_steps + setup.train_steps)
    warmup, timed_batches = batches[: setup.warmup_steps], batches[setup.warmup_steps :]
    loaders = {"ours": load_ours, "theirs": load_theirs}
    models = {side: loaders[side](folder) for side in sides}
    losses = first_losses(models, batches[0], setup.precisions)
    log_fn("  step-0 loss (eval mode): " + json.dumps(losses))
    source_tokens = sum(int(b["attention_mask"].sum()) for b in timed_batches)
    runners: dict[str, Callable[[], dict] | None] = {side: None for side in ("ours", "theirs")}
    for side, model in models.items():
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, fused=True)
        train_steps(model, optimizer, warmup, bf16=bf16)  # kernels, allocator, optimizer state

        def run(model=model, optimizer=optimizer) -> dict[str, float | None]:
            with Stopwatch() as watch:
                target_tokens = train_steps(model, optimizer, timed_batches, bf16=bf16)
            flops = training_flops(
                setup.model,
                vocab_size=setup.vocab_size,
                source_tokens=source_tokens,
                target_tokens=target_tokens,
            )
            return {
                "value": target_tokens / watch.seconds,
                "seconds": watch.seconds,
                "mfu": flops / watch.seconds / (peak_gflops * 1e9) if peak_gflops else None,
            }

        runners[side] = run
    log_fn("  training, " + ("bf16 autocast" if bf16 else "fp32"))
    runs = alternate(runners, setup.repetitions, log=log_fn)
    row = compare(runs.get("ours"), runs.get("theirs"), unit="target tokens/s", goal=GOALS["training"])
    return row, losses


def decode(
    model: torch.nn.Module,
    sources: tuple[torch.Tensor, torch.Tensor],
    *,
    batch_size: int,
    num_beams: int,
    new_tokens: int,
    bf16: bool,
) -> torch.Tensor:
    """`model.generate` over the padded `sources` in batches, every output exactly `new_tokens` long (the
    same arguments for ours and Hugging Face); returns the generated ids, decoder start token included."""
    ids, mask = sources
    outputs = []
    # as recipes.generate and the trainer's prediction decode a test set: ours packs its decoder weights once
    with torch.no_grad(), _autocast(bf16), fixed_weights(model):
        for start in range(0, ids.size(0), batch_size):
            batch = slice(start, start + batch_size)
            out = model.generate(
                input_ids=ids[batch],
                attention_mask=mask[batch],
                num_beams=num_beams,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                early_stopping=num_beams > 1,
                length_penalty=1.0,
            )
            if out.size(1) != new_tokens + 1:
                raise RuntimeError(
                    f"{type(model).__name__}: {out.size(1) - 1} new tokens, expected {new_tokens}"
                )
            outputs.append(out)
    return torch.cat(outputs)


def measure_generation(
    folder: Path, setup: Setup, sides: list[str], *, peaks: dict, log_fn: Callable
) -> tuple[dict, dict]:
    """One row per precision and decoding mode, and how far the two sides' outputs agree."""
    g = torch.Generator().manual_seed(1)
    sources = padded_ids(
        setup.generation_sources, setup.source_length, vocab_size=setup.vocab_size, generator=g
    )
    new_tokens = setup.generation_new_tokens
    loaders = {"ours": load_ours, "theirs": load_theirs}
    models = {side: loaders[side](folder).eval() for side in sides}
    rows, agreement = {}, {}
    for beams in setup.beams:
        mode = mode_name(beams)
        flops = decoding_flops(
            setup.model,
            vocab_size=setup.vocab_size,
            source_tokens=int(sources[1].sum()),
            generated_tokens=setup.generation_sources * beams * new_tokens,
        )
        runners: dict[str, Callable[[], dict] | None] = {}
        for precision in setup.precisions:
            bf16 = precision == "bf16"
            outputs = {}
            for side, model in models.items():
                settings = dict(
                    batch_size=setup.generation_batch_size, num_beams=beams, new_tokens=new_tokens, bf16=bf16
                )
                # the untimed first pass: warm-up (kernel build and selection, allocator) and the outputs
                outputs[side] = decode(model, sources, **settings)
                runners[f"{side} {precision}"] = timed(
                    _decode_count(model, sources, settings), flops=flops, peak_gflops=peaks.get(precision)
                )
            if len(outputs) == 2:
                same = (outputs["ours"] == outputs["theirs"]).all(dim=1)
                agreement[f"{precision} {mode}"] = {
                    "identical_sequences": int(same.sum()),
                    "sequences": int(same.numel()),
                    "identical": bool(same.all()),
                }
        log_fn(f"  {mode}: {', '.join(runners)}")
        runs = alternate(runners, setup.repetitions, log=log_fn)
        for precision in setup.precisions:
            rows[f"generation {precision} {mode}"] = compare(
                runs.get(f"ours {precision}"),
                runs.get(f"theirs {precision}"),
                unit="sequences/s",
                goal=GOALS["generation"],
            )
    return rows, agreement


def _decode_count(model, sources, settings: dict) -> Callable[[], int]:
    """One decode of `sources` with `settings`, returning how many sequences it produced (what `timed` counts)."""
    return lambda: decode(model, sources, **settings).size(0)


def engine_paths() -> dict[str, bool]:
    """Which of our CPU decode accelerations were available in this run (each falls back to torch
    operations with the same results when it is not): the fused decode-attention kernel and the packed
    decoder weights."""
    from s2s.models import decode_kernel
    from s2s.models.packed import packing_available

    return {
        "decode_attention_kernel": decode_kernel.kernel() is not None,
        "packed_weights_fp32": packing_available(torch.device("cpu"), torch.float32),
        "packed_weights_bf16": packing_available(torch.device("cpu"), torch.bfloat16),
    }


def run_setup(
    setup: Setup, *, sides: list[str] | None = None, peak: dict | None = None, log_fn: Callable = log
) -> dict:
    """Save the checkpoint, then measure training and generation on it; the result dict (rows, checks)."""
    sides = sides or ["ours", "theirs"]
    peaks = {p: (peak or {}).get(p, {}).get("gflops") for p in ("fp32", "bf16")}
    precisions = native_precisions(setup.precisions)
    if precisions != setup.precisions:
        log_fn("  this CPU has no bf16 instructions: fp32 only (bf16 would time torch's emulation)")
        setup = dataclasses.replace(setup, precisions=precisions)
    training_precision = setup.precisions[-1]
    with tempfile.TemporaryDirectory(prefix="bench-hf-bart-") as scratch:
        folder = save_bart_folder(Path(scratch) / "bart", setup)
        log_fn(f"  saved a random BART ({setup.name}) to {folder}")
        training_row, losses = measure_training(
            folder,
            setup,
            sides,
            precision=training_precision,
            peak_gflops=peaks[training_precision],
            log_fn=log_fn,
        )
        generation_rows, agreement = measure_generation(folder, setup, sides, peaks=peaks, log_fn=log_fn)
    rows = {f"training {training_precision}": training_row, **generation_rows}
    checks = {"step0_loss": losses, "generation_agreement": agreement}
    if "ours" in sides:
        checks["engine_paths"] = engine_paths()
    return {
        "title": "A BART-base-sized Hugging Face checkpoint: imported into s2s vs transformers native",
        "setup": {
            "model": {**setup.model, "activation": "gelu", "post-norm": True, "dropout (all three)": 0.1},
            "vocab_size": setup.vocab_size,
            "training": f"{setup.batch_size} pairs x <= {setup.source_length} -> <= {setup.target_length} "
            f"tokens, padded; {setup.warmup_steps} warm-up + {setup.train_steps} timed steps per repetition, "
            f"{'bf16 autocast' if training_precision == 'bf16' else 'fp32'}, fused AdamW lr {LEARNING_RATE:g}",
            "generation": f"{setup.generation_sources} padded sources of <= {setup.source_length} tokens, "
            f"batches of {setup.generation_batch_size}, exactly {setup.generation_new_tokens} new tokens "
            "(min = max)",
            "repetitions": setup.repetitions,
            "threads": torch.get_num_threads(),
        },
        "rows": rows,
        "checks": checks,
        "markdown": checks_markdown(checks),
    }


def checks_markdown(checks: dict) -> str:
    """The correctness checks under the table: step-0 losses, output agreement, our engine's paths."""
    lines = [""]
    for precision, check in checks.get("step0_loss", {}).items():
        if "abs_difference" in check:
            lines.append(
                f"- step-0 loss, {precision} (eval mode): ours {check['loss_ours']:.6f}, "
                f"HF {check['loss_theirs']:.6f}, |difference| {check['abs_difference']:.2e}"
            )
    for name, agreement in checks.get("generation_agreement", {}).items():
        lines.append(
            f"- {name}: {agreement['identical_sequences']}/{agreement['sequences']} sequences identical to HF"
        )
    if "engine_paths" in checks:
        lines.append(
            "- our decode paths in this run: "
            + ", ".join(f"{k} {v}" for k, v in checks["engine_paths"].items())
        )
    return "\n".join(lines)


def run(
    profile: Profile, data=None, toolkits: dict | None = None, *, peak: dict | None = None, log_fn=log
) -> dict:
    """The suite's entry point (`python -m bench --only hf_bart_base`): the setup of the profile's name
    (full, quick, smoke). Needs transformers on both sides: ours imports the checkpoint it saves."""
    if toolkits is not None and "theirs" not in toolkits:
        return {"skipped": "needs transformers: the checkpoint is a transformers BART, saved by it"}
    sides = [side for side in ("ours", "theirs") if toolkits is None or side in toolkits]
    return run_setup(SETUPS[profile.name], sides=sides, peak=peak, log_fn=log_fn)


def main(argv: list[str] | None = None) -> dict:
    from bench import peak as peak_module
    from bench.report import comparison_table

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setup", choices=sorted(SETUPS), default="full", help="run sizes (default full)")
    parser.add_argument("--repetitions", type=int, help="A B rounds per cell (full: 3)")
    parser.add_argument("--steps", type=int, help="timed training steps per repetition and side (full: 3)")
    parser.add_argument("--sources", type=int, help="sources decoded per timed generation run (full: 8)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for name in ("repetitions", "steps", "sources", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {
        "repetitions": args.repetitions,
        "train_steps": args.steps,
        "generation_sources": args.sources,
    }
    setup = dataclasses.replace(SETUPS[args.setup], **{k: v for k, v in overrides.items() if v is not None})

    load_before = os.getloadavg()
    started = time.perf_counter()
    log(f"[peak] matmul {setup.peak_size}^3")
    measured_peak = peak_module.run(size=setup.peak_size, runs=setup.peak_runs)
    result = run_setup(setup, peak=measured_peak)
    command = "python -m bench.hf_bart_base " + " ".join(argv if argv is not None else sys.argv[1:])
    result |= {
        "command": command.strip(),
        "peak": measured_peak,
        "minutes": (time.perf_counter() - started) / 60,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    print("\n".join(comparison_table(result)) + "\n" + result["markdown"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
