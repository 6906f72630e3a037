"""The end-of-run reports of a training script: a metrics table on stdout, ``{split}_results.json``,
``all_results.json`` and ``trainer_state.json`` in ``output_dir``.

They follow Hugging Face's ``Trainer.log_metrics`` / ``save_metrics`` / ``save_state`` byte for byte where a
tool could read the output (file names, JSON layout, the formatting of each number), so a script ported from
the Hugging Face examples, and whatever reads its output folder, keeps working unchanged. The Trainer calls
these through thin methods that pass its output folder and whether this process is the main one.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESULTS_SUFFIX = "_results.json"
ALL_RESULTS_NAME = "all_results.json"
TRAINER_STATE_NAME = "trainer_state.json"


def format_seconds(seconds: float) -> str:
    """``h:mm:ss.xx``: whole seconds as a timedelta, then hundredths (truncated, as Hugging Face does)."""
    hundredths = int(abs(seconds - int(seconds)) * 100)
    return f"{datetime.timedelta(seconds=int(seconds))}.{hundredths:02d}"


def metrics_format(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Human-readable values: memory in MB, ``*_runtime`` as ``h:mm:ss.xx``, ``total_flos`` in GF, other
    floats rounded to 4 decimals; everything else unchanged."""
    formatted = dict(metrics)
    for key, value in formatted.items():
        if "_mem_" in key:
            formatted[key] = f"{int(value) >> 20}MB"
        elif "_runtime" in key:
            formatted[key] = format_seconds(value)
        elif key == "total_flos":
            formatted[key] = f"{int(value) >> 30}GF"
        elif isinstance(value, float):
            formatted[key] = round(value, 4)
    return formatted


def metrics_table(split: str, metrics: Mapping[str, Any]) -> str:
    """The ``***** {split} metrics *****`` block: one ``key = value`` line per metric, sorted by key, keys
    left-aligned and values right-aligned to the widest of each."""
    lines = [f"***** {split} metrics *****"]
    formatted = metrics_format(metrics)
    if formatted:
        key_width = max(len(str(key)) for key in formatted)
        value_width = max(len(str(value)) for value in formatted.values())
        lines += [f"  {key: <{key_width}} = {formatted[key]:>{value_width}}" for key in sorted(formatted)]
    return "\n".join(lines)


def log_metrics(split: str, metrics: Mapping[str, Any], *, is_main: bool) -> None:
    """Print the metrics table to stdout on the main process (other processes print nothing).

    It goes through ``print``, not the logger, as in Hugging Face: the table is the script's result and
    shows whatever the log level."""
    if is_main:
        print(metrics_table(split, metrics))


def save_metrics(
    output_dir: str | Path, split: str, metrics: Mapping[str, Any], combined: bool = True
) -> Path:
    """Write ``{split}_results.json`` and, with ``combined``, merge the metrics into ``all_results.json``
    (a later split overwrites keys it shares with an earlier one). Returns the split's file.

    Raw numbers are written (no formatting), indented by 4 with sorted keys. Call it on the main process
    only: every process would write the same file."""
    _check_split(split)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{split}{RESULTS_SUFFIX}"
    _write_json(path, metrics)
    if combined:
        all_path = output_dir / ALL_RESULTS_NAME
        merged = _read_results(all_path) if all_path.exists() else {}
        merged.update(metrics)
        _write_json(all_path, merged)
    return path


def save_state(state: Any, output_dir: str | Path) -> Path:
    """Write the trainer state (global step, log history, best metric, ...) as ``trainer_state.json`` in
    ``output_dir``: ``save_model`` writes only the weights, config and tokenizer. Returns the file."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / TRAINER_STATE_NAME
    state.save_to_json(path)
    return path


def _check_split(split: str) -> None:
    # The split becomes a file name: a path separator would write outside output_dir.
    if not isinstance(split, str) or not split or "/" in split or "\\" in split or split in (".", ".."):
        raise ValueError(
            f"split={split!r} must be a plain name such as 'train', 'eval' or 'predict' (it names "
            f"the file <split>{RESULTS_SUFFIX})"
        )


def _json_number(value: Any) -> Any:
    # numpy scalars (np.mean in compute_metrics) and one-element tensors become plain numbers.
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):  # an array of several values
            pass
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON serialisable; return plain numbers")


def _write_json(path: Path, metrics: Mapping[str, Any]) -> None:
    try:  # serialise first, so a bad value leaves no half-written file
        text = json.dumps(dict(metrics), indent=4, sort_keys=True, default=_json_number)
    except TypeError as err:
        raise TypeError(f"cannot write {path}: {err}") from err
    path.write_text(text)


def _read_results(path: Path) -> dict[str, Any]:
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); delete it or pass combined=False to save_metrics"
        ) from err
    if not isinstance(results, dict):
        raise ValueError(f"{path} holds a {type(results).__name__}, not a JSON object of metrics; delete it")
    return results
