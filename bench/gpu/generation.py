"""Generation speed on the device: our engine against Hugging Face `generate`, the same BART size, in
sequences per second.

WMT-like random sources (sorted by length into batches of `generation_batch_size`, padded, with attention
masks), every output forced to exactly `generation_new_tokens` new tokens (min = max) so both sides do the
same work; greedy and beam search, bf16 autocast and fp32. Each cell warms up on one batch, then the sides run
in turn (`repetitions` times) over all batches, timed with the device synchronised at both ends. MFU: matmul
FLOPs of the work (`bench.models.decoding_flops`) per second over the measured peak of the precision.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable

import torch

from bench.common import compare
from bench.generation import generate_exactly
from bench.gpu.data import source_batches
from bench.gpu.harness import log
from bench.gpu.models import build
from bench.gpu.peak import synchronize
from bench.gpu.settings import Settings
from bench.models import decoding_flops


def mode_name(num_beams: int) -> str:
    return "greedy" if num_beams == 1 else f"{num_beams} beams"


def decode(model, batches, *, num_beams: int, new_tokens: int, bf16: bool, device: torch.device) -> int:
    """`model.generate` over `batches` (ours and Hugging Face take the same arguments); returns the number
    of sequences, after checking each has exactly `new_tokens` new tokens."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    produced = 0
    with torch.no_grad(), autocast:
        for ids, mask in batches:
            produced += generate_exactly(model, ids, mask, num_beams=num_beams, new_tokens=new_tokens)
    return produced


def timed(run: Callable[[], int], device: torch.device, *, flops: float, peak_tflops: float | None) -> dict:
    synchronize(device)
    started = time.perf_counter()
    sequences = run()
    synchronize(device)
    seconds = time.perf_counter() - started
    return {
        "value": sequences / seconds,
        "seconds": seconds,
        "mfu": flops / seconds / (peak_tflops * 1e12) if peak_tflops else None,
    }


def run(settings: Settings, device: torch.device, *, peak: dict, partial: dict) -> dict:
    import transformers

    size, vocab = settings.model, settings.vocab_size
    batches = [
        (ids.to(device), mask.to(device))
        for ids, mask in source_batches(
            settings.generation_sources, settings.generation_batch_size, vocab_size=vocab, seed=2
        )
    ]
    source_tokens = sum(int(mask.sum()) for _, mask in batches)
    new_tokens = settings.generation_new_tokens
    partial["setup"] = {
        "model": {**size, "activation": "gelu"},
        "vocab_size": vocab,
        "sources": settings.generation_sources,
        "source_tokens": source_tokens,
        "batch_size": settings.generation_batch_size,
        "new_tokens (forced)": new_tokens,
        "repetitions": settings.repetitions,
        "transformers": transformers.__version__,
    }
    models, errors = {}, {}
    partial["errors"] = errors
    for side in ("ours", "theirs"):
        try:
            models[side] = build(side, size, vocab_size=vocab).eval().to(device)
        except Exception as err:  # noqa: BLE001
            errors[side] = "".join(traceback.format_exception(err))
    rows = partial.setdefault("rows", {})
    for beams in settings.generation_beams:
        flops = decoding_flops(
            size,
            vocab_size=vocab,
            source_tokens=source_tokens,
            generated_tokens=settings.generation_sources * beams * new_tokens,
        )
        for precision in settings.generation_precisions:
            name = f"{precision} {mode_name(beams)}"
            options = dict(num_beams=beams, new_tokens=new_tokens, bf16=precision == "bf16", device=device)
            peak_tflops = (peak.get(precision) or {}).get("tflops")
            runs: dict[str, list[dict]] = {"ours": [], "theirs": []}
            for repetition in range(settings.repetitions + 1):  # the first round warms up on one batch
                for side, model in models.items():
                    key = f"{side} {name}"
                    if key in errors:
                        continue
                    try:
                        if repetition == 0:
                            decode(model, batches[:1], **options)
                            continue
                        measured = timed(
                            lambda model=model, options=options: decode(model, batches, **options),
                            device,
                            flops=flops,
                            peak_tflops=peak_tflops,
                        )
                    except Exception as err:  # noqa: BLE001 - one failing cell leaves the others
                        errors[key] = "".join(traceback.format_exception(err))
                        log(f"  {key}: FAILED ({type(err).__name__}: {err})")
                        continue
                    runs[side].append(measured)
                    log(f"  {key} rep {repetition}: {measured['value']:,.1f} sequences/s")
            rows[name] = compare(runs["ours"], runs["theirs"], unit="sequences/s")
    return partial
