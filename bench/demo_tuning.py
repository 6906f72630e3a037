"""Tune `make demo`'s settings on the validation set only: each variant is the demo config plus a few
`--name value` overrides, trained for the config's fixed number of updates and scored by 4-beam BLEU on all
1,014 validation sentences. The test set is never read (`--do_predict false`), so nothing here can choose a
setting by its test score.

    python -m bench.demo_tuning --variants baseline linear_decay          # two runs side by side
    python -m bench.demo_tuning --variants baseline --average 2 3 4       # also the mean of the last 2/3/4
    python -m bench.demo_tuning --list                                    # the variants and their overrides

Every run also saves a checkpoint every 100 updates and keeps the last four (saving does not change the
updates), so the mean of the last K checkpoints (`--average`) is scored from the same run without training
again. Runs use `--threads` threads each (default 1: two runs on a shared 2-core machine) and at most
`--parallel` at once. A run whose folder under `--work` already holds its validation scores is not trained
again; its figures are read back. Results are merged into `--out` (default bench/results/demo_tuning.json)
by variant name, with the exact command of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import cpu_name

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "recipes" / "configs" / "demo_multi30k.yaml"
DEFAULT_OUT = REPO / "bench" / "results" / "demo_tuning.json"
VALIDATION_ROWS = 1014
"""All of Multi30k's validation split: the selection score uses every sentence, not the config's slice."""

TUNING_OVERRIDES = (
    "--do_predict", "false",  # the test set is not read while tuning
    "--eval_strategy", "no",  # no evaluation during training: only the final 4-beam score is compared
    "--max_eval_samples", str(VALIDATION_ROWS),
    "--save_steps", "100",
    "--save_total_limit", "4",  # the last four checkpoints (1,200..1,500 of the demo), for averaging after the run
)  # fmt: skip

VARIANTS: dict[str, tuple[str, ...]] = {
    "baseline": (),  # the demo config as it is: 1,500 updates since the steps_* runs below
    "steps_1000": ("--max_steps", "1000"),  # the demo before: what `baseline` measured in the earlier results
    "linear_decay": ("--lr_scheduler_type", "linear"),
    "cosine_decay": ("--lr_scheduler_type", "cosine"),
    "lr_1.5e-3": ("--learning_rate", "0.0015"),
    "lr_3e-3": ("--learning_rate", "0.003"),
    "linear_lr_3e-3": ("--lr_scheduler_type", "linear", "--learning_rate", "0.003"),
    "linear_lr_1.5e-3": ("--lr_scheduler_type", "linear", "--learning_rate", "0.0015"),
    "linear_warmup_100": ("--lr_scheduler_type", "linear", "--warmup_steps", "100"),
    "linear_warmup_400": ("--lr_scheduler_type", "linear", "--warmup_steps", "400"),
    "warmup_100": ("--warmup_steps", "100"),
    "warmup_400": ("--warmup_steps", "400"),
    "dropout_0.2": ("--model_overrides", '{"dropout": 0.2}'),
    "dropout_0.3": ("--model_overrides", '{"dropout": 0.3}'),
    "linear_dropout_0.2": ("--lr_scheduler_type", "linear", "--model_overrides", '{"dropout": 0.2}'),
    "label_smoothing_0.2": ("--label_smoothing_factor", "0.2"),
    "linear_label_smoothing_0.2": ("--lr_scheduler_type", "linear", "--label_smoothing_factor", "0.2"),
    "weight_decay_0.01": ("--weight_decay", "0.01"),
    "steps_1500": ("--max_steps", "1500"),
    "steps_2000": ("--max_steps", "2000"),
    "steps_1500_dropout_0.2": ("--max_steps", "1500", "--model_overrides", '{"dropout": 0.2}'),
    "vocab_6k": ("--vocab_size", "6000"),
    "vocab_10k": ("--vocab_size", "10000"),
    "linear_vocab_6k": ("--lr_scheduler_type", "linear", "--vocab_size", "6000"),
    "linear_vocab_10k": ("--lr_scheduler_type", "linear", "--vocab_size", "10000"),
}
"""Each variant changes one thing against the demo config (or against the linear decay, once that won)."""


def train_command(name: str, work: Path) -> list[str]:
    """The recipe's command line for variant `name`, training into `work/name`."""
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)} (--list shows them)")
    return [
        sys.executable, "-m", "recipes.translation", str(CONFIG),
        "--output_dir", str(work / name), *TUNING_OVERRIDES, *VARIANTS[name],
    ]  # fmt: skip


def averaged_eval_command(model_dir: Path, output_dir: Path) -> list[str]:
    """Score the saved model in `model_dir` on the whole validation set, with the demo config's decoding."""
    return [
        sys.executable, "-m", "recipes.translation", str(CONFIG),
        "--model_name_or_path", str(model_dir), "--output_dir", str(output_dir),
        "--do_train", "false", "--do_predict", "false", "--eval_strategy", "no",
        "--max_eval_samples", str(VALIDATION_ROWS),
    ]  # fmt: skip


def last_checkpoints(run_dir: Path, count: int) -> list[Path]:
    """The `count` newest checkpoint-<step> folders of a run, oldest first."""
    steps = sorted(
        (int(path.name.split("-", 1)[1]), path)
        for path in run_dir.glob("checkpoint-*")
        if path.name.split("-", 1)[1].isdigit()
    )
    if len(steps) < count:
        raise SystemExit(f"{run_dir} holds {len(steps)} checkpoints, fewer than the {count} to average")
    return [path for _, path in steps[-count:]]


_TRAINING_STATE = frozenset(
    ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pt", "sampler.json", "manifest.json",
     "trainer_state.json", "training_args.json")
)  # fmt: skip
"""A checkpoint's files that belong to resuming training, not to the model (the weights are replaced)."""


def write_averaged_model(checkpoints: Sequence[Path], folder: Path) -> None:
    """A loadable model folder: the newest checkpoint's config and tokenizer, the checkpoints' mean weights."""
    from safetensors.torch import save_file

    from s2s.checkpointing import WEIGHTS_NAME, average_model_weights

    newest = checkpoints[-1]
    folder.mkdir(parents=True, exist_ok=True)
    for path in newest.iterdir():  # config, generation config, tokenizer: what a saved model holds
        if path.is_file() and path.name not in _TRAINING_STATE:
            shutil.copy2(path, folder / path.name)
    save_file(average_model_weights(checkpoints), str(folder / WEIGHTS_NAME), metadata={"format": "pt"})


def with_threads(command: list[str], threads: int) -> list[str]:
    """`command` on `threads` torch threads: the config pins its own count, which would win otherwise."""
    return [*command, "--num_threads", str(threads)]


def _run(command: list[str], log: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with log.open("w") as stream:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=stream, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def _scores(folder: Path) -> dict[str, float]:
    metrics = json.loads((folder / "eval_results.json").read_text())
    return {"bleu": round(metrics["eval_bleu"], 2), "chrf": round(metrics["eval_chrf"], 2)}


def run_variant(name: str, work: Path, averages: Sequence[int], threads: int) -> dict:
    """Train (unless already done) and score one variant, then the means of its last checkpoints."""
    run_dir = work / name
    command = with_threads(train_command(name, work), threads)
    entry: dict = {"overrides": list(VARIANTS[name]), "command": _shell(command, threads)}
    if not (run_dir / "eval_results.json").is_file():
        entry["wall_seconds"] = round(_run(command, work / f"{name}.log", threads), 1)
    train = json.loads((run_dir / "train_results.json").read_text())
    entry["train_runtime_s"] = round(train.get("train_runtime", float("nan")), 1)
    entry["final_train_loss"] = _last_logged_loss(run_dir)
    entry["validation_last"] = _scores(run_dir)
    for count in averages:
        averaged = run_dir / f"average_last_{count}"
        if not (averaged / "eval" / "eval_results.json").is_file():
            checkpoints = last_checkpoints(run_dir, count)
            write_averaged_model(checkpoints, averaged / "model")
            evaluate = with_threads(averaged_eval_command(averaged / "model", averaged / "eval"), threads)
            _run(evaluate, averaged / "eval.log", threads)
        entry[f"validation_average_last_{count}"] = _scores(averaged / "eval")
    return entry


def cpu_description() -> str:
    """The processor's model name and whether it has AMX, kept with each run's scores."""
    try:
        amx = "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        amx = False
    return f"{cpu_name()}{' (AMX)' if amx else ''}"


def _last_logged_loss(run_dir: Path) -> float | None:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    losses = [row["loss"] for row in state.get("log_history", []) if "loss" in row]
    return round(losses[-1], 4) if losses else None


def _shell(command: Sequence[str], threads: int) -> str:
    quoted = [f"'{part}'" if any(c in part for c in ' {}"') else part for part in command]
    quoted[0] = "python"
    return f"OMP_NUM_THREADS={threads} " + " ".join(quoted).replace(str(REPO) + "/", "")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=["baseline"])
    parser.add_argument(
        "--average", nargs="*", type=int, default=[], help="also score the mean of the last K"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/demo_tuning"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, overrides in VARIANTS.items():
            print(f"{name:28} {' '.join(overrides) or '(the config as it is)'}")
        return
    for count in args.average:
        if not 2 <= count <= 4:
            raise SystemExit(f"--average {count}: runs keep their last 4 checkpoints, so K must be 2-4")
    for name in args.variants:
        train_command(name, args.work)  # unknown names stop here, before any training
    args.work.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    def one(name: str) -> None:
        entry = run_variant(name, args.work, args.average, args.threads)
        entry["load_average_after"] = round(os.getloadavg()[0], 2)
        entry["cpu"] = cpu_description()
        with lock:
            results = json.loads(args.out.read_text()) if args.out.is_file() else {}
            results.setdefault("variants", {})[name] = {**results.get("variants", {}).get(name, {}), **entry}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(name, json.dumps(entry), flush=True)

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        for future in [pool.submit(one, name) for name in args.variants]:
            future.result()


if __name__ == "__main__":
    main()
