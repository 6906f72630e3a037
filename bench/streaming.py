"""Streaming token-budget batches on a generated WMT-like corpus: padding efficiency and mid-epoch resume time.

    python -m bench.streaming --corpus DIR [--pairs 5000000 --shards 32] [--gzip_corpus DIR]
        [--budgets 4096 8192 16384] [--efficiency_pairs 1000000] [--tokenizer sentencepiece|words]
        [--output bench/results/streaming.json]

The corpus comes from ``bench.corpus`` (written under ``--corpus`` unless its ``corpus.json`` is there already):
Zipfian words, log-normal lengths, a few very long and empty lines, JSON Lines shards.

- Padding efficiency: ``StreamingTokenBatches`` (window and buffer of 50,000 examples by default) is read for
  the first ``--efficiency_pairs`` examples of an epoch at each token budget; efficiency is real tokens /
  padded tokens over source + target, each side padded to its own batch maximum (``samplers.padding_counts``'
  definition). Examples longer than the budget are left out (``skip_too_long``) and counted.
- Resume: a stream over the whole corpus is read until it is inside the third shard of the epoch and in the
  middle of a buffer; its ``state_dict()`` goes through JSON (as in a checkpoint), then the time from building
  a new stream to holding its first batch is measured (``load_state_dict``, re-reading and tokenizing the
  current buffer), and that batch is checked to be the one the uninterrupted stream yields next. With
  ``--gzip_corpus`` the same for gzip shards (where the current shard is decompressed again up to the position).

Tokenization: ``sentencepiece`` trains the project's joint unigram tokenizer (8,000 pieces) on the first
200,000 pairs and caches it under bench/results/; ``words`` counts whitespace words + 1, a fast stand-in.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from bench.corpus import CorpusSpec, write_corpus
from samplers.streaming import ShardLines, StreamingTokenBatches, jsonl_pair

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
GOALS = {"padding_efficiency": 0.95, "resume_seconds": 5.0}


def corpus_shards(folder: Path, *, pairs: int, shards: int, gzip: bool) -> tuple[list[Path], dict]:
    """The shard files under ``folder``, written first when it holds no corpus."""
    manifest_path = folder / "corpus.json"
    if not manifest_path.is_file():
        print(f"writing {pairs} pairs in {shards} shards under {folder} ...", flush=True)
        write_corpus(CorpusSpec(pairs=pairs, shards=shards, format="jsonl", gzip=gzip), folder)
    manifest = json.loads(manifest_path.read_text())
    if manifest["spec"]["format"] != "jsonl":
        raise ValueError(
            f"{folder} holds a {manifest['spec']['format']!r} corpus; this bench reads JSON Lines"
        )
    return [folder / files[0] for files in manifest["files"]], manifest


def make_batch_tokenize(
    kind: str, shards: list[Path], spec: dict, manifest_bytes: int
) -> Callable[[list[dict]], list[dict]]:
    """Tokenize a buffer's examples in one call (the stream's ``batch_tokenize``)."""
    if kind == "words":

        def count_words(examples: list[dict]) -> list[dict]:
            return [
                {
                    "input_ids": [0] * (len(e["source"].split()) + 1),
                    "labels": [0] * (len(e["target"].split()) + 1),
                }
                for e in examples
            ]

        return count_words
    from s2s.tokenization import load_tokenizer, train_joint_tokenizer

    # Keyed by the corpus bytes too: a tokenizer trained on another version of the generator's corpus (other
    # words) splits this one into other pieces, and every figure would move with it.
    cache = RESULTS / (
        f"streaming_spm8000_{spec['pairs']}pairs_{spec['shards']}shards_seed{spec['seed']}_{manifest_bytes}bytes"
    )
    if (cache / "tokenizer_config.json").is_file():
        tokenizer = load_tokenizer(cache)
    else:
        fields = (f"translation.{spec['source_lang']}", f"translation.{spec['target_lang']}")
        sample = [
            (e["source"], e["target"]) for e in islice(ShardLines(jsonl_pair(*fields))(shards[0]), 200_000)
        ]
        tokenizer = train_joint_tokenizer(
            sample, vocab_size=8000, backend="sentencepiece", model_type="unigram"
        )
        tokenizer.save_pretrained(cache)

    def tokenize(examples: list[dict]) -> list[dict]:
        encoded = tokenizer([e["source"] for e in examples], text_target=[e["target"] for e in examples])
        return [
            {"input_ids": s, "labels": t}
            for s, t in zip(encoded["input_ids"], encoded["labels"], strict=True)
        ]

    return tokenize


def build(
    shards,
    tokenize,
    spec: dict,
    *,
    max_tokens: int,
    window_size: int | None,
    buffer_size: int | None,
    prefetch: bool = True,
):
    fields = (f"translation.{spec['source_lang']}", f"translation.{spec['target_lang']}")
    return StreamingTokenBatches(
        shards,
        read_shard=ShardLines(jsonl_pair(*fields)),
        batch_tokenize=tokenize,
        max_tokens=max_tokens,
        window_size=window_size,
        buffer_size=buffer_size,
        skip_too_long=True,
        seed=0,
        prefetch=prefetch,
    )


def efficiency(stream: StreamingTokenBatches, pairs: int) -> dict[str, Any]:
    real = padded = examples = batches = 0
    largest = 0
    started = time.perf_counter()
    for batch in stream:
        src = [len(e["input_ids"]) for e in batch]
        tgt = [len(e["labels"]) for e in batch]
        real += sum(src) + sum(tgt)
        padded += len(batch) * (max(src) + max(tgt))
        largest = max(largest, len(batch) * max(max(src), max(tgt)))
        examples += len(batch)
        batches += 1
        if examples >= pairs:
            break
    return {
        "padding_efficiency": round(real / padded, 4),
        "examples": examples,
        "batches": batches,
        "mean_batch_size": round(examples / batches, 1),
        "largest_batch_cost": largest,
        "left_out_too_long": stream.num_skipped,
        "seconds": round(time.perf_counter() - started, 1),
    }


def resume_time(
    make: Callable[..., StreamingTokenBatches], *, shard: int, into_buffer: int
) -> dict[str, Any]:
    """Read into shard ``shard`` and to the middle of a buffer, then time state -> new stream -> first batch.

    The uninterrupted stream reads without its read-ahead thread: left running, that thread would be
    tokenizing the next buffer while the resume is timed, which a job resumed in a new process never has
    (the same order either way). The resumed stream reads as training does, read-ahead on."""
    reader = make(prefetch=False)
    batches: Iterator = iter(reader)
    started = time.perf_counter()
    read = 0
    while reader.state_dict()["shard"] < shard:
        next(batches)
        read += 1
    while (
        reader.state_dict()["batches"] < into_buffer
    ):  # mid-buffer: the resume rebuilds the buffer's batches
        next(batches)
        read += 1
    reading = time.perf_counter() - started
    state = json.loads(json.dumps(reader.state_dict()))
    expected = next(batches)

    started = time.perf_counter()
    resumed = make()
    resumed.load_state_dict(state)
    first = next(iter(resumed))
    seconds = time.perf_counter() - started
    if first != expected:
        raise AssertionError("the resumed stream's first batch is not the uninterrupted stream's next batch")
    return {
        "resume_seconds": round(seconds, 2),
        "read_before_state_seconds": round(reading, 1),
        "batches_before_state": read,
        "state": {k: state[k] for k in ("shard", "position", "buffer", "batches")},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--gzip_corpus", type=Path, default=None)
    parser.add_argument("--pairs", type=int, default=5_000_000)
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--efficiency_pairs", type=int, default=1_000_000)
    parser.add_argument(
        "--window_size", type=int, default=None, help="default: the stream's own, sized from each budget"
    )
    parser.add_argument("--buffer_size", type=int, default=None, help="default: the window size")
    parser.add_argument("--resume_shard", type=int, default=2, help="resume inside this shard of the epoch")
    parser.add_argument(
        "--resume_into_buffer", type=int, default=20, help="batches of the buffer before the state"
    )
    parser.add_argument("--resume_max_tokens", type=int, default=8192)
    parser.add_argument("--tokenizer", choices=("sentencepiece", "words"), default="sentencepiece")
    parser.add_argument("--output", type=Path, default=RESULTS / "streaming.json")
    args = parser.parse_args(argv)

    shards, manifest = corpus_shards(args.corpus, pairs=args.pairs, shards=args.shards, gzip=False)
    spec = manifest["spec"]
    tokenize = make_batch_tokenize(args.tokenizer, shards, spec, manifest["bytes"])
    sizes = {"window_size": args.window_size, "buffer_size": args.buffer_size}
    results: dict[str, Any] = {
        "corpus": {"pairs": spec["pairs"], "shards": spec["shards"], "bytes": manifest["bytes"]},
        "tokenizer": args.tokenizer,
        **sizes,
        "efficiency": {},
        "resume": {},
    }
    for budget in args.budgets:
        stream = build(shards, tokenize, spec, max_tokens=budget, **sizes)
        results["efficiency"][str(budget)] = figures = efficiency(stream, args.efficiency_pairs)
        print(f"max_tokens={budget}: {figures}", flush=True)

    corpora = [("plain", shards, spec)]
    if args.gzip_corpus is not None:
        gz_shards, gz_manifest = corpus_shards(
            args.gzip_corpus, pairs=args.pairs, shards=args.shards, gzip=True
        )
        corpora.append(("gzip", gz_shards, gz_manifest["spec"]))
    for name, files, files_spec in corpora:

        def make(files=files, files_spec=files_spec, prefetch: bool = True) -> StreamingTokenBatches:
            return build(
                files, tokenize, files_spec, max_tokens=args.resume_max_tokens, prefetch=prefetch, **sizes
            )

        results["resume"][name] = figures = resume_time(
            make, shard=args.resume_shard, into_buffer=args.resume_into_buffer
        )
        print(f"resume ({name} shards, max_tokens={args.resume_max_tokens}): {figures}", flush=True)

    # the process's peak, over every budget and resume above: what a buffer of this size costs in memory
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"peak RSS {results['peak_rss_mib']} MiB", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
