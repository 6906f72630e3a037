"""Generation speed: our engine against Hugging Face `generate` on a BART of the same size.

Both models: d_model 256, 3+3 layers, 4 heads, ffn 1024, vocab 8000, random weights built from a config (no
download). 256 random sources of 32 tokens, every output forced to exactly 48 new tokens (min = max new
tokens), greedy and 4 beams, in fp32 and under bf16 autocast. The two sides run alternately (A B A B ...) so
drifts of a shared machine hit both alike; the reported ratio is the median of the per-pair ratios.

    python -m bench.generation [--quick] [--batch-size 64] [--output bench/results/generation.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

SIZE = {"d_model": 256, "encoder_layers": 3, "decoder_layers": 3, "num_heads": 4, "ffn_dim": 1024}
VOCAB = 8000
PAD, BOS, EOS = 0, 2, 3
RESULTS = Path(__file__).resolve().parent / "results" / "generation.json"


def build_ours(seed: int = 0) -> torch.nn.Module:
    from s2s.models import TransformerConfig, TransformerForConditionalGeneration

    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=VOCAB, activation="gelu", max_position_embeddings=256, **SIZE)
    return TransformerForConditionalGeneration(config).eval()


def build_bart(seed: int = 0) -> torch.nn.Module:
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=VOCAB,
        d_model=SIZE["d_model"],
        encoder_layers=SIZE["encoder_layers"],
        decoder_layers=SIZE["decoder_layers"],
        encoder_attention_heads=SIZE["num_heads"],
        decoder_attention_heads=SIZE["num_heads"],
        encoder_ffn_dim=SIZE["ffn_dim"],
        decoder_ffn_dim=SIZE["ffn_dim"],
        max_position_embeddings=256,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=BOS,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    return BartForConditionalGeneration(config).eval()


def make_sources(count: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, VOCAB, (count, length), generator=g)


def run_all(model, sources: torch.Tensor, *, batch_size: int, num_beams: int, new_tokens: int, bf16: bool):
    """Generate for every source; returns the number of output sequences."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    produced = 0
    with torch.no_grad(), autocast:
        for start in range(0, sources.size(0), batch_size):
            ids = sources[start : start + batch_size]
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                num_beams=num_beams,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                early_stopping=num_beams > 1,
                length_penalty=1.0,
            )
            assert out.size(1) == new_tokens + 1, f"expected {new_tokens} new tokens, got {out.size(1) - 1}"
            produced += out.size(0)
    return produced


def timed(fn: Callable[[], int]) -> float:
    started = time.perf_counter()
    count = fn()
    return count / (time.perf_counter() - started)


def measure(args: argparse.Namespace) -> dict:
    ours, bart = build_ours(), build_bart()
    sources = make_sources(args.sources, args.source_length)
    cells = []
    for precision in args.precisions:
        for beams in args.beams:
            kw = dict(
                batch_size=args.batch_size,
                num_beams=beams,
                new_tokens=args.new_tokens,
                bf16=precision == "bf16",
            )
            warm = sources[: min(args.batch_size, sources.size(0))]
            run_all(ours, warm, **kw)  # warm-up: kernel selection, allocator
            run_all(bart, warm, **kw)
            rates: dict[str, list[float]] = {"ours": [], "hf": []}
            for _ in range(args.repetitions):  # A B A B
                rates["ours"].append(timed(lambda kw=kw: run_all(ours, sources, **kw)))
                rates["hf"].append(timed(lambda kw=kw: run_all(bart, sources, **kw)))
            ratios = [a / b for a, b in zip(rates["ours"], rates["hf"])]
            cell = {
                "precision": precision,
                "mode": "greedy" if beams == 1 else f"{beams} beams",
                "ours_seq_per_s": [round(r, 2) for r in rates["ours"]],
                "hf_seq_per_s": [round(r, 2) for r in rates["hf"]],
                "ours_median": round(statistics.median(rates["ours"]), 2),
                "hf_median": round(statistics.median(rates["hf"]), 2),
                "median_ratio": round(statistics.median(ratios), 3),
            }
            cells.append(cell)
            print(
                f"{precision:5s} {cell['mode']:8s} ours {cell['ours_median']:8.1f} seq/s  "
                f"HF {cell['hf_median']:8.1f} seq/s  ratio {cell['median_ratio']:.2f}x  (pairs: "
                + ", ".join(f"{r:.2f}" for r in ratios)
                + ")",
                flush=True,
            )
    return {
        "benchmark": "generation",
        "command": "python -m bench.generation" + (" --quick" if args.quick else ""),
        "setup": {
            "model": SIZE,
            "vocab_size": VOCAB,
            "sources": args.sources,
            "source_length": args.source_length,
            "new_tokens": args.new_tokens,
            "batch_size": args.batch_size,
            "repetitions": args.repetitions,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_at_end": os.getloadavg(),
        },
        "cells": cells,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="64 sources, 3 pairs: a check in about a minute")
    parser.add_argument("--sources", type=int, default=256)
    parser.add_argument("--source-length", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64, help="sources per generate call (both sides)")
    parser.add_argument("--repetitions", type=int, default=3, help="A B pairs per cell (>= 3)")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.sources = min(args.sources, 64)
    if args.repetitions < 1:
        parser.error("--repetitions must be >= 1")
    result = measure(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
