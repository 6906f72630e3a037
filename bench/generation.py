"""Generation speed (issue 4): our engine against Hugging Face `generate` and CTranslate2, on the same BART size.

Ours and Hugging Face's BART: d_model 256, 3+3 layers, 4 heads, ffn 1024, gelu, vocab 8000, random weights built
from a config (no download). CTranslate2 gets that very BART, converted (`bench.ct2_reference`). 256 random
sources of 32 tokens, every output forced to exactly 48 new tokens (min = max new tokens: random weights would
otherwise stop at random), batches of 64 sources, greedy and 4 beams; ours and Hugging Face in fp32 and under
bf16 autocast, CTranslate2 in float32, int8 and bfloat16 where the CPU supports it, with as many threads as
torch. All engines run in turn within each repetition (ours fp32, HF fp32, ours bf16, HF bf16, CT2 ...), so a
drift of a shared machine hits them alike; ratios are medians of the per-repetition ratios.
Ours decodes each pass over the sources inside `fixed_weights()`, as `recipes.generate` decodes a file: it packs
its decoder weights for the matmul library once per pass, not once per batch.

MFU: matmul FLOPs of the work (`bench.models.decoding_flops`: each source token once through the encoder and
the cross-attention keys/values, each generated token of each beam hypothesis through the decoder and the
output projection, attention scores left out) per second, over the measured matmul peak of the precision
(CTranslate2 int8 against the fp32 peak: no int8 peak is measured).

    python -m bench.generation [--quick] [--threads 1] [--output bench/results/generation.json]
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
from pathlib import Path

import torch

from bench.common import CACHE, PROFILES, Profile, alternate, compare, log, median
from bench.models import build_bart, build_ours, decoding_flops
from bench.report import fmt, percent
from s2s.models.packed import fixed_weights

GOALS = {"bf16": 3.0, "fp32": 1.5}  # ours / Hugging Face, issue 4
CT2_GOAL = 1.0  # issue 4: "beat it in bf16"
CT2_PEAK = {"float32": "fp32", "int8": "fp32", "bfloat16": "bf16"}  # the peak each compute type is held to
RESULTS = CACHE / "generation.json"


def make_sources(count: int, length: int, *, vocab_size: int, seed: int = 0) -> torch.Tensor:
    """Random ids above the special ids (pad 0, unk 1, bos 2, eos 3), no padding."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab_size, (count, length), generator=g)


def mode_name(num_beams: int) -> str:
    return "greedy" if num_beams == 1 else f"{num_beams} beams"


def decode_torch(
    model: torch.nn.Module,
    sources: torch.Tensor,
    *,
    batch_size: int,
    num_beams: int,
    new_tokens: int,
    bf16: bool,
) -> int:
    """`model.generate` over `sources` in batches (ours and Hugging Face take the same arguments); returns
    the number of sequences produced, after checking each has exactly `new_tokens` new tokens."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    produced = 0
    # as recipes.generate decodes a test set: ours packs its decoder weights once for all the batches
    with torch.no_grad(), autocast, fixed_weights(model):
        for start in range(0, sources.size(0), batch_size):
            ids = sources[start : start + batch_size]
            produced += generate_exactly(
                model, ids, torch.ones_like(ids), num_beams=num_beams, new_tokens=new_tokens
            )
    return produced


def generate_exactly(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, *, num_beams: int, new_tokens: int
) -> int:
    """One `model.generate` call forced to exactly `new_tokens` new tokens (ours and Hugging Face take the same
    arguments), so both engines do equal work; returns the number of sequences, after checking their length."""
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        num_beams=num_beams,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        early_stopping=num_beams > 1,
        length_penalty=1.0,
    )
    if out.size(1) != new_tokens + 1:  # + the decoder start token
        raise RuntimeError(f"{type(model).__name__}: {out.size(1) - 1} new tokens, expected {new_tokens}")
    return out.size(0)


def decode_ct2(generator, sources: torch.Tensor, *, batch_size: int, num_beams: int, new_tokens: int) -> int:
    """The same batches through a `bench.ct2_reference.CT2Generator`; returns the sequences produced."""
    produced = 0
    for start in range(0, sources.size(0), batch_size):
        outputs = generator.generate(
            sources[start : start + batch_size], num_beams=num_beams, new_tokens=new_tokens
        )
        lengths = {len(ids) for ids in outputs}
        if lengths != {new_tokens}:
            raise RuntimeError(f"CTranslate2: outputs of {sorted(lengths)} tokens, expected {new_tokens}")
        produced += len(outputs)
    return produced


def timed(decode: Callable[[], int], *, flops: float, peak_gflops: float | None) -> Callable[[], dict]:
    """A runner for `bench.common.alternate`: sequences/s of one call of `decode`, and its MFU."""

    def run() -> dict[str, float | None]:
        started = time.perf_counter()
        sequences = decode()
        seconds = time.perf_counter() - started
        return {
            "value": sequences / seconds,
            "seconds": seconds,
            "mfu": flops / seconds / (peak_gflops * 1e9) if peak_gflops else None,
        }

    return run


def run(
    profile: Profile,
    data=None,
    toolkits: dict | None = None,
    *,
    peak: dict | None = None,
    log_fn: Callable[[str], None] = log,
) -> dict:
    """Decode the profile's random sources with every available engine; one result row per precision and
    decoding mode (ours against Hugging Face), plus the CTranslate2 rows.

    `data` is not used (random ids need no tokenizer; the argument keeps the suite's signature); `toolkits`
    says which torch sides are available ("ours", "theirs"; None: both). CTranslate2 is measured when it
    imports and Hugging Face's BART is there to convert.
    """
    sides = [side for side in ("ours", "theirs") if toolkits is None or side in toolkits]
    size, vocab = profile.model, profile.vocab_size
    sources = make_sources(profile.generation_sources, profile.generation_source_length, vocab_size=vocab)
    new_tokens, batch_size = profile.generation_new_tokens, profile.generation_batch_size
    builders = {
        # gelu on both sides: BART's activation (the trainer comparisons keep our default relu)
        "ours": lambda: build_ours(size, vocab_size=vocab, activation="gelu").eval(),
        "theirs": lambda: build_bart(size, vocab_size=vocab).eval(),
    }
    models = {side: builders[side]() for side in sides}
    peaks = {p: (peak or {}).get(p, {}).get("gflops") for p in ("fp32", "bf16")}
    rows: dict[str, dict] = {}
    ct2_rows: dict[str, dict] = {}
    # the temporary folder outlives the CTranslate2 child processes, which the exit stack closes first
    with tempfile.TemporaryDirectory(prefix="bench-ct2-") as scratch, contextlib.ExitStack() as children:
        ct2_engines, ct2_skipped = _ct2_engines(models.get("theirs"), Path(scratch), profile, log_fn=log_fn)
        for engine in ct2_engines.values():  # child processes (see CT2Process)
            children.callback(engine.close)
        for beams in profile.generation_beams:
            mode = mode_name(beams)
            flops = decoding_flops(
                size,
                vocab_size=vocab,
                source_tokens=sources.numel(),
                generated_tokens=sources.size(0) * beams * new_tokens,
            )
            runners: dict[str, Callable[[], dict] | None] = {}
            for precision in profile.precisions:
                for side, model in models.items():
                    decode = _torch_decoder(model, batch_size, beams, new_tokens, bf16=precision == "bf16")
                    decode(sources[:batch_size])  # warm-up: kernel selection, allocator
                    runners[f"{side} {precision}"] = timed(
                        lambda decode=decode: decode(sources), flops=flops, peak_gflops=peaks[precision]
                    )
            for compute_type, engine in ct2_engines.items():
                decode = _ct2_decoder(engine, batch_size, beams, new_tokens)
                decode(sources[:batch_size])
                runners[f"ct2 {compute_type}"] = timed(
                    lambda decode=decode: decode(sources),
                    flops=flops,
                    peak_gflops=peaks[CT2_PEAK[compute_type]],
                )
            log_fn(f"  {mode}: {', '.join(runners)}")
            runs = alternate(runners, profile.repetitions, log=log_fn)
            for precision in profile.precisions:
                rows[f"{precision} {mode}"] = compare(
                    runs.get(f"ours {precision}"),
                    runs.get(f"theirs {precision}"),
                    unit="sequences/s",
                    goal=GOALS.get(precision),
                )
            for compute_type in ct2_engines:
                ct2_rows[f"{mode} {compute_type}"] = _ct2_row(runs, compute_type, profile.precisions)
    return {
        "title": "Generation alone: our engine vs Hugging Face generate (BART) and CTranslate2, sequences/s",
        "setup": {
            "model": {**size, "activation": "gelu"},
            "vocab_size": vocab,
            "sources": sources.size(0),
            "source_length": sources.size(1),
            "new_tokens (forced)": new_tokens,
            "batch_size": batch_size,
            "repetitions": profile.repetitions,
            "threads (torch and CTranslate2 intra_threads)": torch.get_num_threads(),
        },
        "rows": rows,
        "ctranslate2": {"rows": ct2_rows, "skipped": ct2_skipped},
        "markdown": ct2_markdown(ct2_rows, ct2_skipped),
        "notes": [
            "MFU counts each source token once (encoder, cross-attention keys/values) and each generated token "
            "of each beam hypothesis (decoder, output projection), 2 FLOPs per multiply-add, attention scores "
            "left out (`bench.models.decoding_flops`); CTranslate2 int8 is held to the fp32 peak."
        ],
    }


def _torch_decoder(model, batch_size: int, beams: int, new_tokens: int, *, bf16: bool) -> Callable:
    def decode(sources: torch.Tensor) -> int:
        return decode_torch(
            model, sources, batch_size=batch_size, num_beams=beams, new_tokens=new_tokens, bf16=bf16
        )

    return decode


def _ct2_decoder(engine, batch_size: int, beams: int, new_tokens: int) -> Callable:
    def decode(sources: torch.Tensor) -> int:
        return decode_ct2(engine, sources, batch_size=batch_size, num_beams=beams, new_tokens=new_tokens)

    return decode


def _ct2_engines(bart, scratch: Path, profile: Profile, *, log_fn) -> tuple[dict, dict[str, str]]:
    """One CTranslate2 generator per usable compute type, from `bart` converted; reasons for the rest."""
    if bart is None:
        return {}, {"all": "Hugging Face transformers is not available: there is no BART to convert"}
    try:
        from bench.ct2_reference import CT2Process, convert_bart, usable_compute_types

        usable, skipped = usable_compute_types(profile.ct2_compute_types)
    except ImportError as err:
        return {}, {"all": f"ctranslate2 does not import ({err}); it is in the [bench] extra"}
    model_dir = convert_bart(bart, scratch / "ct2")
    log_fn(f"  CTranslate2: converted BART; compute types {', '.join(usable) or 'none'}")
    engines = {
        compute_type: CT2Process(
            model_dir,
            vocab_size=profile.vocab_size,
            compute_type=compute_type,
            threads=torch.get_num_threads(),
        )
        for compute_type in usable
    }
    return engines, skipped


def _ct2_row(runs: dict[str, list[dict]], compute_type: str, precisions: tuple[str, ...]) -> dict:
    """CTranslate2's sequences/s and MFU, and the paired ratios ours / CT2 and Hugging Face / CT2."""
    ct2 = runs[f"ct2 {compute_type}"]
    row = {
        "unit": "sequences/s",
        "ctranslate2": median([r["value"] for r in ct2]),
        "ctranslate2_runs": [round(r["value"], 3) for r in ct2],
        "mfu_ctranslate2": median([r["mfu"] for r in ct2 if r["mfu"] is not None]),
    }
    for side in ("ours", "theirs"):
        for precision in precisions:
            if f"{side} {precision}" in runs:
                row[f"ratio_{side}_{precision}"] = compare(runs[f"{side} {precision}"], ct2, unit="")["ratio"]
    return row


def ct2_markdown(rows: dict[str, dict], skipped: dict[str, str]) -> str:
    """The CTranslate2 table: its sequences/s and MFU per decoding mode and compute type, and our (and
    Hugging Face's) speed relative to it."""
    if not rows and not skipped:
        return ""
    ratios = [k for row in rows.values() for k in row if k.startswith("ratio_ours_")]
    precisions = list(dict.fromkeys(k.removeprefix("ratio_ours_") for k in ratios))  # measured order
    header = ["CTranslate2", "seq/s", "MFU"]
    header += [f"ours {p} / CT2" for p in precisions] + [f"HF {p} / CT2" for p in precisions]
    lines = ["", "Second reference, CTranslate2 (the same BART, converted):", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        cells = [name, fmt(row["ctranslate2"]), percent(row["mfu_ctranslate2"])]
        for side in ("ours", "theirs"):
            for precision in precisions:
                ratio = row.get(f"ratio_{side}_{precision}")
                text = "-" if ratio is None else f"{ratio:.2f}x"
                if side == "ours" and precision == "bf16" and ratio is not None:
                    text += f" (goal {CT2_GOAL:g}x: {'met' if ratio >= CT2_GOAL else 'MISSED'})"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"\nCTranslate2 {name}: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from bench import peak as peak_module
    from bench.report import comparison_table

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the quick profile: 64 sources, 2 repetitions")
    parser.add_argument("--sources", type=int, help="sources decoded per timed run (default 256; quick 64)")
    parser.add_argument("--batch-size", type=int, help="sources per generate call, every engine (default 64)")
    parser.add_argument("--repetitions", type=int, help="rounds of all engines per mode (default 3; quick 2)")
    parser.add_argument("--beams", type=int, nargs="+", help="beam sizes (default 1 4)")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], help="torch precisions")
    parser.add_argument("--threads", type=int, default=None, help="torch and CTranslate2 threads")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = PROFILES["quick" if args.quick else "full"]
    overrides = {
        "generation_sources": args.sources,
        "generation_batch_size": args.batch_size,
        "repetitions": args.repetitions,
        "generation_beams": tuple(args.beams) if args.beams else None,
        "precisions": tuple(args.precisions) if args.precisions else None,
    }
    for name, value in overrides.items():
        if isinstance(value, int) and value < 1 or name == "generation_beams" and value and min(value) < 1:
            parser.error(f"--{name.removeprefix('generation_').replace('_', '-')} must be >= 1, got {value}")
    profile = dataclasses.replace(profile, **{k: v for k, v in overrides.items() if v is not None})

    load_before = os.getloadavg()
    log(f"[peak] matmul {profile.peak_size}^3")
    measured_peak = peak_module.run(size=profile.peak_size, runs=profile.peak_runs)
    log(f"  fp32 {measured_peak['fp32']['gflops']} GFLOP/s, bf16 {measured_peak['bf16']['gflops']} GFLOP/s")
    result = run(profile, peak=measured_peak)
    command = "python -m bench.generation " + " ".join(argv if argv is not None else sys.argv[1:])
    result |= {
        "command": command.strip(),
        "peak": measured_peak,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    table = "\n".join(comparison_table(result)) + "\n" + result["markdown"]
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
