"""Preparation and training start at corpus scale, ours against Hugging Face, on the same generated corpus.

    python -m bench.scale --pairs 1000000 [--shards 16] [--steps 30] [--num_proc 2] [--work DIR]

Each side runs twice in a fresh child process: a cold run (empty caches: read, tokenize, train `--steps`
updates) and a cached run (the same command again, which should find everything prepared). Measured:

- preparation time of the cold run (reading the text into Arrow + tokenization + the lengths the batching
  needs), as pairs per second;
- peak memory of each run: the sum over the process tree (the tokenization workers included), sampled every
  0.2 s from /proc, resident (RSS, which counts the pages of memory-mapped files the process touched, a
  cache the kernel can drop, once per process that touched them), proportional (PSS: a page shared by n
  processes counted 1/n in each, so the tree's sum counts it once) and anonymous (RssAnon: memory the
  processes themselves hold);
- disk used by each side's cache folder after the cold run;
- launch to the first optimizer step on the cached run (from the child's creation, imports included);
- resident and anonymous memory of the main process during training (read at every update).

Ours: the translation recipe's own steps (`recipes.data.load_splits`, `recipes.preprocessing.tokenize_splits`,
`Seq2SeqTrainer` with `max_tokens_per_batch`) on the generated JSONL shards. Theirs: `datasets.load_dataset
("json")` + `datasets.map` with the `run_translation.py` preprocessing + `transformers.Seq2SeqTrainer(
group_by_length=True)`, a BART of the same size, a batch size in sentences that gives the same mean tokens
per batch. Both use the same tokenizer (a byte-level BPE of 8,000 trained once on a sample of the corpus, not
timed), the same number of tokenization processes, 256-token limits, and no checkpoints or evaluation.

The corpus (`bench.corpus`) and the tokenizer are kept under `--work` and reused; each side's caches are
emptied before its cold run. Results: `bench/scale_results.json` (one entry per corpus size).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "scale_results.json"
MODEL_SIZE = {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "num_heads": 4, "ffn_dim": 256}
"""The `tiny` preset of our models, and the BART built to match it."""
MAX_LENGTH = 256
VOCAB_SIZE = 8000


# ------------------------------------------------------------------------------------------- memory
def _status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and Pss (kB) of one process from /proc (empty if it is gone). Pss, the proportional set
    size, counts a page shared by n processes as 1/n in each, so summed over a tree it counts the pages of a
    memory-mapped file that the main process and the tokenization workers all touched once, where summed RSS
    counts them once per process."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "RssAnon:")):
                    key, amount = line.split(":")
                    values[key] = int(amount.split()[0])
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    values["Pss"] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return values


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants, from /proc/<pid>/task/*/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in glob.glob(f"/proc/{current}/task/*/children"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                todo += [int(c) for c in Path(children).read_text().split()]
    return found


class TreeMemorySampler(threading.Thread):
    """Peak summed RSS, RssAnon and Pss of a process tree, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss_kb = self.peak_anon_kb = self.peak_pss_kb = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            statuses = [_status(p) for p in _tree(self.pid)]
            self.peak_rss_kb = max(self.peak_rss_kb, sum(s.get("VmRSS", 0) for s in statuses))
            self.peak_anon_kb = max(self.peak_anon_kb, sum(s.get("RssAnon", 0) for s in statuses))
            self.peak_pss_kb = max(self.peak_pss_kb, sum(s.get("Pss", 0) for s in statuses))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


# ------------------------------------------------------------------------------------------- children
class _Clock:
    """Stage timings and memory readings of one child, written as JSON at the end."""

    def __init__(self) -> None:
        import psutil

        self.launched = psutil.Process().create_time()
        self.stages: dict[str, float] = {}
        self.steps: list[dict[str, float]] = []
        self._last = time.time()

    def stage(self, name: str) -> None:
        now = time.time()
        self.stages[name] = round(now - self._last, 3)
        self._last = now

    def step(self, step: int) -> None:
        memory = _status(os.getpid())
        self.steps.append(
            {
                "step": step,
                "since_launch_s": round(time.time() - self.launched, 3),
                "rss_mb": memory.get("VmRSS", 0) / 1024,
                "anon_mb": memory.get("RssAnon", 0) / 1024,
            }
        )

    def result(self, **extra: Any) -> dict[str, Any]:
        return {"stages_s": self.stages, "steps": self.steps, **extra}


def _step_callback(base: type, clock: _Clock) -> Any:
    class RecordSteps(base):  # type: ignore[misc, valid-type]
        def on_step_end(self, args, state, control, **kwargs):
            clock.step(state.global_step)

    return RecordSteps()


def run_ours(options: dict[str, Any]) -> dict[str, Any]:
    """The translation recipe's steps, timed one by one (the same calls as `recipes.pipeline.run`)."""
    clock = _Clock()
    from recipes.arguments import check_arguments, parse_arguments, task_defaults
    from recipes.data import load_splits
    from recipes.modeling import configure_generation, load_or_build_model
    from recipes.preprocessing import tokenize_splits
    from recipes.tokenizer import load_or_train_tokenizer
    from recipes.training import build_trainer
    from s2s.callbacks import TrainerCallback
    from s2s.dataloaders import dataset_lengths

    clock.stage("imports")
    argv = [
        "--train_file", str(Path(options["corpus"]) / "train-*.jsonl"),
        "--source_lang", "de", "--target_lang", "en",
        "--tokenizer_name_or_path", options["tokenizer"],
        "--model_preset", "tiny",
        "--max_source_length", str(MAX_LENGTH), "--max_target_length", str(MAX_LENGTH),
        "--drop_empty_examples", "true",
        "--dataset_cache_dir", options["cache"],
        "--preprocessing_num_workers", str(options["num_proc"]),
        "--output_dir", options["output"], "--overwrite_output_dir", "true",
        "--do_train", "true", "--max_steps", str(options["steps"]),
        "--max_tokens_per_batch", str(options["budget"]),
        "--learning_rate", "5e-4", "--save_strategy", "no", "--eval_strategy", "no",
        "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "1000", "--seed", "0",
    ]  # fmt: skip
    model_args, data_args, training_args = parse_arguments(argv)
    task_defaults("translation", data_args)
    check_arguments(model_args, data_args, training_args)
    clock.stage("arguments")
    raw = load_splits("translation", data_args, training_args)
    clock.stage("read")
    tokenizer = load_or_train_tokenizer(model_args, training_args, raw["train"])
    clock.stage("tokenizer")
    tokenized = tokenize_splits(raw, tokenizer, data_args)
    clock.stage("tokenize")
    lengths = dataset_lengths(tokenized["train"], length_column_name="length")
    clock.stage("lengths")
    model = load_or_build_model(model_args, data_args, tokenizer)
    configure_generation(model, data_args, new_model=True, training_args=training_args)
    trainer = build_trainer(
        model, tokenizer, training_args, tokenized, data_args=data_args, task="translation"
    )
    trainer.add_callback(_step_callback(TrainerCallback, clock))
    clock.stage("model_and_trainer")
    trainer.train()
    clock.stage("train")
    return clock.result(pairs=len(tokenized["train"]), mean_cost=float(lengths.max(axis=1).mean()))


def run_hf(options: dict[str, Any]) -> dict[str, Any]:
    """`run_translation.py`'s preparation (`load_dataset("json")` + `map`) and `Seq2SeqTrainer(group_by_length)`."""
    clock = _Clock()
    import datasets
    import torch
    from tokenizers import Tokenizer, processors
    from transformers import (
        DataCollatorForSeq2Seq,
        PreTrainedTokenizerFast,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        TrainerCallback,
    )

    from bench.models import build_bart

    clock.stage("imports")
    files = sorted(glob.glob(str(Path(options["corpus"]) / "train-*.jsonl")))
    raw = datasets.load_dataset("json", data_files=files, split="train", cache_dir=options["cache"])
    clock.stage("read")
    backend = Tokenizer.from_file(str(Path(options["tokenizer"]) / "tokenizer.json"))
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 3)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    clock.stage("tokenizer")

    def preprocess(examples: dict[str, list]) -> dict[str, list]:
        inputs = [pair["de"] for pair in examples["translation"]]
        targets = [pair["en"] for pair in examples["translation"]]
        return tokenizer(inputs, text_target=targets, max_length=MAX_LENGTH, truncation=True)

    tokenized = raw.map(
        preprocess, batched=True, num_proc=options["num_proc"], remove_columns=raw.column_names
    )
    clock.stage("tokenize")
    torch.manual_seed(0)
    model = build_bart(MODEL_SIZE, vocab_size=len(tokenizer), max_length=MAX_LENGTH)
    args = Seq2SeqTrainingArguments(
        output_dir=options["output"],
        max_steps=options["steps"],
        per_device_train_batch_size=options["batch_size"],
        group_by_length=True,
        learning_rate=5e-4,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        logging_steps=1000,
        use_cpu=True,
        seed=0,
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=tokenized,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, pad_to_multiple_of=8),
    )
    trainer.add_callback(_step_callback(TrainerCallback, clock))
    clock.stage("model_and_trainer")
    trainer.train()
    clock.stage("train")
    return clock.result(pairs=len(tokenized))


SIDES = {"ours": run_ours, "hf": run_hf}


def child_main(side: str, options_json: str, out: str) -> None:
    result = SIDES[side](json.loads(options_json))
    Path(out).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------- parent
def run_child(side: str, options: dict[str, Any], result_path: Path, log_path: Path) -> dict[str, Any]:
    """One run of `side` in a fresh process: its own JSON plus the tree's peak memory and the wall time."""
    command = [sys.executable, "-m", "bench.scale", "--child", side, json.dumps(options), str(result_path)]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TOKENIZERS_PARALLELISM": "true",
        "HF_DATASETS_OFFLINE": "1",
    }
    started = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeMemorySampler(process.pid)
        sampler.start()
        code = process.wait()
        sampler.stop()
    if code != 0:
        raise RuntimeError(f"{side} failed (exit {code}); see {log_path}:\n" + log_path.read_text()[-3000:])
    result = json.loads(result_path.read_text())
    result.update(
        wall_s=round(time.time() - started, 1),
        peak_tree_rss_mb=round(sampler.peak_rss_kb / 1024),
        peak_tree_anon_mb=round(sampler.peak_anon_kb / 1024),
        peak_tree_pss_mb=round(sampler.peak_pss_kb / 1024),
    )
    return result


def prepare_inputs(work: Path, pairs: int, shards: int) -> tuple[Path, Path]:
    """The corpus and the shared tokenizer, made once and reused."""
    from bench.corpus import CorpusSpec, write_corpus

    corpus = work / f"corpus-{pairs}"
    if not (corpus / "corpus.json").is_file():
        print(f"writing {pairs} pairs to {corpus}", flush=True)
        write_corpus(CorpusSpec(pairs=pairs, shards=shards, format="jsonl"), corpus)
    tokenizer = work / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        from recipes.text_files import load_text_pairs
        from recipes.tokenizer import sampled_pairs
        from s2s.tokenization import train_joint_tokenizer

        print("training the shared tokenizer on 200,000 pairs of the first shard", flush=True)
        first = sorted(corpus.glob("train-*.jsonl"))[0]
        raw = load_text_pairs(
            first, source_field="translation.de", target_field="translation.en", drop_empty=True,
            max_samples=200_000, cache_dir=work / "tokenizer-cache",
        )  # fmt: skip
        trained = train_joint_tokenizer(
            sampled_pairs(raw, None, seed=0), vocab_size=VOCAB_SIZE, backend="bpe"
        )
        trained.save_pretrained(tokenizer)
    return corpus, tokenizer


def measure(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus, tokenizer = prepare_inputs(work, args.pairs, args.shards)
    entry: dict[str, Any] = {
        "pairs": args.pairs,
        "shards": args.shards,
        "steps": args.steps,
        "num_proc": args.num_proc,
        "token_budget": args.budget,
        "corpus_bytes": _folder_bytes(corpus),
        "load_before": os.getloadavg(),
    }
    batch_size = None
    for side in args.sides:
        cache, output = work / f"{side}-cache", work / f"{side}-output"
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(output, ignore_errors=True)
        options = {
            "corpus": str(corpus),
            "tokenizer": str(tokenizer),
            "cache": str(cache),
            "output": str(output),
            "num_proc": args.num_proc,
            "steps": args.steps,
            "budget": args.budget,
            "batch_size": batch_size or args.hf_batch_size,
        }
        runs = {}
        for run in ("cold", "cached"):
            print(f"{side}: {run} run", flush=True)
            runs[run] = run_child(side, options, work / f"{side}-{run}.json", work / f"{side}-{run}.log")
            if run == "cold":
                runs[run]["cache_bytes"] = _folder_bytes(cache)
        if side == "ours":
            # Their batch in sentences: our token budget over the mean padded cost of one pair.
            batch_size = max(1, round(args.budget / runs["cold"]["mean_cost"]))
        entry[side] = summarize(runs, batch_size=options["batch_size"] if side == "hf" else None)
        print(json.dumps({side: entry[side]}, indent=1), flush=True)
    entry["load_after"] = os.getloadavg()
    return entry


def summarize(runs: dict[str, dict[str, Any]], *, batch_size: int | None) -> dict[str, Any]:
    cold, cached = runs["cold"], runs["cached"]
    preparation = sum(cold["stages_s"].get(k, 0.0) for k in ("read", "tokenize", "lengths"))
    train_rss = [s["rss_mb"] for s in cached["steps"]]
    train_anon = [s["anon_mb"] for s in cached["steps"]]
    summary = {
        "preparation_s": round(preparation, 1),
        "preparation_pairs_per_s": round(cold["pairs"] / preparation) if preparation else None,
        "cold_stages_s": cold["stages_s"],
        "cached_stages_s": cached["stages_s"],
        "cold_peak_tree_rss_mb": cold["peak_tree_rss_mb"],
        "cold_peak_tree_anon_mb": cold["peak_tree_anon_mb"],
        "cached_peak_tree_rss_mb": cached["peak_tree_rss_mb"],
        "cached_peak_tree_anon_mb": cached["peak_tree_anon_mb"],
        "cold_peak_tree_pss_mb": cold.get("peak_tree_pss_mb"),
        "cached_peak_tree_pss_mb": cached.get("peak_tree_pss_mb"),
        "cache_disk_mb": round(cold["cache_bytes"] / 2**20),
        "cached_first_step_s": cached["steps"][0]["since_launch_s"] if cached["steps"] else None,
        "cold_first_step_s": cold["steps"][0]["since_launch_s"] if cold["steps"] else None,
        "training_rss_mb_max": round(max(train_rss)) if train_rss else None,
        "training_anon_mb_max": round(max(train_anon)) if train_anon else None,
        "pairs": cold["pairs"],
    }
    if batch_size is not None:
        summary["batch_size"] = batch_size
    return summary


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child_main(*argv[1:4])
        return
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30, help="optimizer updates of each run")
    parser.add_argument(
        "--budget", type=int, default=4096, help="our tokens per batch (max_tokens_per_batch)"
    )
    parser.add_argument("--hf_batch_size", type=int, default=None, help="theirs alone: sentences per batch")
    parser.add_argument("--num_proc", type=int, default=2, help="tokenization processes of both sides")
    parser.add_argument("--sides", nargs="+", choices=sorted(SIDES), default=["ours", "hf"])
    parser.add_argument("--work", default=str(REPO / "bench" / "results" / "scale"))
    parser.add_argument("--note", default="")
    parser.add_argument(
        "--key", default=None, help="name of the entry in the results file (default: --pairs)"
    )
    args = parser.parse_args(argv)
    if "hf" in args.sides and "ours" not in args.sides and args.hf_batch_size is None:
        parser.error("--sides hf alone needs --hf_batch_size (otherwise it is derived from our run)")
    entry = measure(args)
    entry["note"] = args.note
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[args.key or str(args.pairs)] = entry
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
