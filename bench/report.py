"""Write the results: `bench/results.json` (every figure and run) and `bench/results.md` (the tables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def ratio_cell(row: dict) -> str:
    ratio, goal = row.get("ratio"), row.get("goal")
    if row.get("difference") is not None:  # scores (BLEU): a difference reads better than a ratio near 0
        return f"{row['difference']:+.2f}"
    if ratio is None:
        return "-"
    text = f"{ratio:.2f}x"
    if goal is not None:
        text += f" (goal {goal:g}x: {'met' if ratio >= goal else 'MISSED'})"
    return text


def comparison_table(result: dict) -> list[str]:
    """A markdown table of a comparison's rows: ours, theirs, ratio, and MFU where measured."""
    rows = result.get("rows", {})
    with_mfu = any("mfu_ours" in row or "mfu_theirs" in row for row in rows.values())
    header = "| setting | unit | ours | Hugging Face | ours / HF |" + (
        " MFU ours | MFU HF |" if with_mfu else ""
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, row in rows.items():
        if "error" in row and row.get("ours") is None and row.get("theirs") is None:
            lines.append(f"| {name} | - | - | - | {row['error']} |" + (" - | - |" if with_mfu else ""))
            continue
        digits = 2 if row.get("unit", "").endswith("BLEU") else 1
        cells = [name, row.get("unit", ""), fmt(row.get("ours"), digits), fmt(row.get("theirs"), digits)]
        cells.append(ratio_cell(row))
        if with_mfu:
            cells += [percent(row.get("mfu_ours")), percent(row.get("mfu_theirs"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _load(value: Any) -> str:
    return "-" if not value else f"{value[0]:.1f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Benchmark results",
        "",
        f"`{meta['command']}` on {meta['cpu']} ({meta['cores']} cores, torch {meta['torch']} with "
        f"{meta['threads']} threads, transformers {meta.get('transformers', '-')}), {meta['date']}, "
        f"{meta['total_minutes']:.1f} minutes. Profile `{meta['profile']}`. Load average before/after: "
        f"{_load(meta.get('load_average_before'))} / {_load(meta.get('load_average_after'))}."
        + (f" **{meta['note']}**" if meta.get("note") else "")
        + "".join(
            f" Some comparisons come from an earlier run: `{run['command']}`, {run['date']}."
            for run in meta.get("earlier_runs", [])
        ),
        "",
        "Ratios are medians of per-repetition ratios (ours and Hugging Face run alternately, A B A B); above 1 "
        "means we are ahead. Every run is in `bench/results.json`.",
        "",
    ]
    peak = results.get("peak")
    if peak:
        lines += [
            "## Matmul peak of this machine",
            "",
            f"fp32 {peak['fp32']['gflops']:.1f} GFLOP/s, bf16 {peak['bf16']['gflops']:.1f} GFLOP/s "
            f"(bf16/fp32 = {peak['bf16_over_fp32']:.2f}x), {peak['size']}x{peak['size']} matmuls, median of "
            f"{peak['runs']} runs.",
            "",
        ]
    for name, result in results.get("comparisons", {}).items():
        lines += [f"## {result.get('title', name)}", ""]
        if "error" in result:
            lines += [f"Failed: `{result['error']}`", ""]
            continue
        if "rows" in result:
            lines += comparison_table(result)
        if "markdown" in result:
            lines.append(result["markdown"])
        setup = result.get("setup")
        if setup:
            lines += ["", "Setup: " + "; ".join(f"{k} = {v}" for k, v in setup.items())]
        for note in result.get("notes", []):
            lines += ["", note]
        lines.append("")
    skipped = results.get("skipped", {})
    if skipped:
        lines += ["## Not run", ""] + [f"- {name}: {reason}" for name, reason in skipped.items()] + [""]
    return "\n".join(lines)


def merge(previous: dict, update: dict) -> dict:
    """`update` (a run of some comparisons) laid over `previous` (an earlier results file): the comparisons
    it ran replace the old ones, the others stay, and the meta lists every run that contributed."""
    merged = {**previous, "meta": update["meta"], "peak": update["peak"]}
    merged["comparisons"] = {**previous.get("comparisons", {}), **update["comparisons"]}
    merged["skipped"] = {
        name: reason
        for name, reason in {**previous.get("skipped", {}), **update["skipped"]}.items()
        if name not in update["comparisons"]
    }
    earlier = previous.get("meta", {})
    merged["meta"]["earlier_runs"] = [
        *earlier.get("earlier_runs", []),
        {
            k: earlier.get(k)
            for k in ("command", "date", "profile", "load_average_before", "load_average_after")
        },
    ]
    return merged


def write(results: dict, *, json_path: Path, markdown_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    markdown_path.write_text(markdown(results), encoding="utf-8")
