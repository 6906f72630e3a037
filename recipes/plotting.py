"""Learning curves (loss, learning rate, evaluation metrics against steps) as PNG files.

Reads the `log_history` of a `trainer_state.json` (a list of dicts, each with a `step` and some numbers:
`loss`, `learning_rate`, `grad_norm` for training logs; `eval_loss`, `eval_bleu`, ... for evaluations).
Figures are drawn with matplotlib's object API on an Agg canvas, never through `pyplot`, so plotting works
without a display and does not change the backend or the global state of a program that also uses pyplot.

    python -m recipes.plotting out/trainer_state.json            # writes the PNGs next to it
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recipes.cli import DEBUG_HELP, run_command

# Bookkeeping numbers that are logged like metrics but are not curves anyone wants to read.
_NOT_CURVES = {"step", "epoch", "total_flos", "num_input_tokens_seen"}
_NOT_CURVE_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second", "_tokens_per_second")


def load_log_history(
    source: str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The log history from a `trainer_state.json` path, a loaded state dict, or the list itself."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"{path}: no trainer state to plot; pass output_dir/trainer_state.json"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); is the file complete?"
            ) from exc
    if isinstance(source, Mapping):
        if "log_history" not in source:
            raise ValueError(f"a trainer state needs a 'log_history' list; it has the keys {sorted(source)}")
        source = source["log_history"]
    if not isinstance(source, Sequence) or not all(isinstance(entry, Mapping) for entry in source):
        raise ValueError("a log history is a list of dicts, one per logging step")
    return [dict(entry) for entry in source]


def curves(history: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """Each logged quantity as (steps, values), finite values only, in logging order.

    Entries without a `step` (a final summary, say) are skipped: there is no x to draw them at, and so are
    training quantities that are zero throughout (evaluation metrics always stay).
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    for entry in history:
        step = entry.get("step")
        if not _is_number(step):
            continue
        for key, value in entry.items():
            if key in _NOT_CURVES or key.endswith(_NOT_CURVE_SUFFIXES) or not _is_number(value):
                continue
            if not math.isfinite(value):
                continue  # a NaN step is reported by the trainer; a gap in the curve is the honest picture
            xs, ys = series.setdefault(key, ([], []))
            xs.append(float(step))
            ys.append(float(value))
    # A training counter that stayed at zero (nonfinite_steps in a healthy run) is a flat line that says
    # nothing; an evaluation metric at zero (BLEU of an untrained model) is a result and stays.
    return {key: line for key, line in series.items() if key.startswith("eval_") or any(line[1])}


def plot_learning_curves(
    source: str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    *,
    prefix: str = "learning_curve_",
    dpi: int = 100,
) -> list[Path]:
    """Write one PNG per curve into `output_dir` and return their paths.

    - `<prefix>loss.png`: training `loss` and `eval_loss` together (over- or under-fitting shows at a glance);
    - `<prefix>learning_rate.png`, `<prefix>grad_norm.png` when logged;
    - `<prefix><metric>.png` for every other evaluation number (`eval_bleu`, `eval_rouge1`, ...).

    Nothing is written for a history with no numbers at logged steps (an empty list returns []).
    """
    series = curves(load_log_history(source))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    loss_lines = {name: series.pop(name) for name in ("loss", "train_loss", "eval_loss") if name in series}
    if loss_lines:
        written.append(
            _plot(loss_lines, output_dir / f"{prefix}loss.png", title="Loss", ylabel="loss", dpi=dpi)
        )
    for name, line in sorted(series.items()):
        label = name.removeprefix("eval_")
        path = output_dir / f"{prefix}{name}.png"
        log_scale = name == "grad_norm"
        written.append(_plot({name: line}, path, title=label, ylabel=label, dpi=dpi, log_scale=log_scale))
    return written


def _plot(
    lines: Mapping[str, tuple[list[float], list[float]]],
    path: Path,
    *,
    title: str,
    ylabel: str,
    dpi: int,
    log_scale: bool = False,
) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, (xs, ys) in lines.items():
        # One evaluation point is invisible as a line; markers make sparse eval curves readable.
        axes.plot(xs, ys, label=name, marker="o" if len(xs) < 30 else None, markersize=3)
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    if log_scale and all(y > 0 for _, ys in lines.values() for y in ys):
        axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    if len(lines) > 1:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    return path


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.plotting", description=__doc__.split("\n\n")[0])
    parser.add_argument("trainer_state", help="path to trainer_state.json")
    parser.add_argument("--output_dir", help="where to write the PNGs (default: next to the state file)")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    output_dir = args.output_dir or Path(args.trainer_state).parent
    for path in plot_learning_curves(args.trainer_state, output_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
