"""What a job leaves behind: the results files, the predictions with their sentence scores, the files a later
`recipes.generate` run needs, the learning curves, and the summary printed at the end."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import datasets

from recipes.arguments import DataArguments, ModelArguments, Task
from recipes.data import SOURCE, TARGET

logger = logging.getLogger("recipes")

RECIPE_ARGS_FILE = "recipe_args.json"  # model and data arguments, saved with the model for recipes.generate


def write_results(output_dir: str | Path, split: str, metrics: Mapping[str, Any]) -> None:
    """`<split>_results.json`, and the same numbers merged into `all_results.json`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    clean = {k: _json_number(v) for k, v in sorted(metrics.items())}
    (output_dir / f"{split}_results.json").write_text(json.dumps(clean, indent=2) + "\n")
    all_path = output_dir / "all_results.json"
    merged = json.loads(all_path.read_text()) if all_path.is_file() else {}
    merged.update(clean)
    all_path.write_text(json.dumps(dict(sorted(merged.items())), indent=2) + "\n")
    for key, value in clean.items():
        logger.info("  %s = %s", key, value)


def _json_number(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN; the string keeps the file valid and the problem visible
    return value


def sentence_scores(
    hypotheses: Sequence[str], references: Sequence[str], metric_names: Sequence[str]
) -> list[dict]:
    """Per-example scores to put next to each prediction (sentence BLEU/chrF as sacrebleu computes them)."""
    import metrics as m

    rows: list[dict[str, float]] = [{} for _ in hypotheses]
    for name in metric_names:
        if name == "bleu":
            scores = [{"bleu": s["bleu"]} for s in m.bleu(hypotheses, references, sentence=True)]
        elif name in ("chrf", "chrf++"):
            word_order = 2 if name == "chrf++" else 0
            scores = [
                {name: s["chrf"]}
                for s in m.chrf(hypotheses, references, sentence=True, word_order=word_order)
            ]
        elif name == "ter":
            scores = [{"ter": s["ter"]} for s in m.ter(hypotheses, references, sentence=True)]
        else:
            scores = [
                {k: v for k, v in s.items() if k in ("rouge1", "rouge2", "rougeL", "rougeLsum")}
                for s in m.rouge(hypotheses, references, sentence=True, split_sentences=True)
            ]
        for row, score in zip(rows, scores):
            row.update({k: round(float(v), 4) for k, v in score.items()})
    return rows


def write_predictions(
    output_dir: str | Path,
    raw: datasets.Dataset,
    hypotheses: Sequence[str],
    *,
    metric_names: Sequence[str],
) -> list[dict[str, Any]]:
    """`generated_predictions.txt` (one hypothesis per line) and `generated_predictions.jsonl` (source,
    reference, hypothesis and sentence scores per line)."""
    output_dir = Path(output_dir)
    sources, references = raw[SOURCE], raw[TARGET]
    # A newline inside a hypothesis would shift every later line of the .txt file against the test set.
    lines = [" ".join(h.splitlines()) for h in hypotheses]
    (output_dir / "generated_predictions.txt").write_text(
        "".join(line + "\n" for line in lines), encoding="utf-8"
    )
    scores = sentence_scores(list(hypotheses), list(references), metric_names)
    rows = [
        {"id": i, "source": s, "reference": r, "hypothesis": h, "scores": sc}
        for i, (s, r, h, sc) in enumerate(zip(sources, references, hypotheses, scores))
    ]
    with open(output_dir / "generated_predictions.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    logger.info("wrote %d predictions to %s", len(rows), output_dir / "generated_predictions.{txt,jsonl}")
    return rows


def save_run_files(
    trainer: Any,
    tokenizer: Any,
    model: Any,
    model_args: ModelArguments,
    data_args: DataArguments,
    *,
    curve_history: list[dict] | None = None,
) -> None:
    """Everything a later `recipes.generate` or `--model_name_or_path` run needs, plus the training record:
    tokenizer, generation config, recipe arguments, trainer_state.json and the learning curves.

    The curves are drawn from `curve_history` when given: the log history as training left it. The final
    evaluation that follows (the kept checkpoint, other decoding settings such as 4 beams) is logged at the
    last step too, and drawn there it would read as one more point of the greedy validation curve; it is in
    eval_results.json and trainer_state.json."""
    from recipes.plotting import plot_learning_curves

    output_dir = Path(trainer.args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(output_dir)
    model.generation_config.save_pretrained(output_dir)
    recipe_args = {"model": asdict(model_args), "data": asdict(data_args)}
    (output_dir / RECIPE_ARGS_FILE).write_text(json.dumps(recipe_args, indent=2, default=str) + "\n")
    state = trainer.state
    if hasattr(state, "save_to_json"):
        state.save_to_json(output_dir / "trainer_state.json")
    history = state.log_history if curve_history is None else curve_history
    if history:
        for path in plot_learning_curves(history, output_dir):
            logger.info("learning curve: %s", path)


def print_summary(
    task: Task, predict_metrics: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, examples: int
) -> None:
    """The job's last words: the test scores and a few examples, on stdout."""
    wanted = ("bleu", "chrf", "chrf++", "ter", "rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len")
    shown = [
        f"{name} {predict_metrics[f'predict_{name}']:.2f}"
        for name in wanted
        if f"predict_{name}" in predict_metrics
    ]
    n = predict_metrics.get("predict_samples", len(rows))
    print(f"\nTest ({n} examples): " + (", ".join(shown) if shown else "no generation metrics"))
    if task == "translation" and "predict_bleu" in predict_metrics:
        print("(sacreBLEU: cased, 13a tokenization, detokenized output)")
    for row in list(rows)[:examples]:
        print(
            f"\n  source:     {row['source']}\n  reference:  {row['reference']}\n  hypothesis: {row['hypothesis']}"
        )
    print()
