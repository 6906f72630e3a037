"""The markdown page of a GPU check (`results.md`): what ran where, the test outcomes, the tables."""

from __future__ import annotations

from bench.report import comparison_table


def render(data: dict) -> str:
    meta, sections = data["meta"], data["sections"]
    lines = ["# GPU check", ""]
    lines.append(f"- mode {meta.get('mode')}, device {meta.get('device')}, started {meta.get('started')}")
    environment = sections.get("environment", {}).get("result", {})
    if environment:
        gpu = environment.get("gpu") or {}
        versions = environment.get("versions") or {}
        lines.append(
            f"- {gpu.get('name', 'no GPU')}; torch {versions.get('torch')} (CUDA {environment.get('torch_cuda')}), "
            f"transformers {versions.get('transformers')}, accelerate {versions.get('accelerate')}, "
            f"Python {versions.get('python')}"
        )
    lines.append("")
    lines.append("| section | status | seconds | note |")
    lines.append("|---|---|---|---|")
    for name, entry in sections.items():
        note = (entry.get("error") or "").splitlines()[0][:120] if entry.get("error") else ""
        lines.append(f"| {name} | {entry['status']} | {entry.get('seconds', 0):.1f} | {note} |")
    lines += _tests(sections.get("tests", {}).get("result"))
    lines += _peak(sections.get("peak", {}).get("result"))
    for name, title in (("training", "Training throughput (bf16)"), ("generation", "Generation")):
        result = sections.get(name, {}).get("result")
        if result and result.get("rows"):
            lines += ["", f"## {title}", "", *comparison_table(result), ""]
            lines += _memory(result)
            for key, error in (result.get("errors") or {}).items():
                lines.append(f"- {key} failed: `{error.strip().splitlines()[-1]}`")
    return "\n".join(lines) + "\n"


def _tests(result: dict | None) -> list[str]:
    if not result:
        return []
    lines = [
        "",
        "## CUDA tests",
        "",
        f"`{result.get('command')}`: {result.get('summary') or 'no summary'}",
        "",
    ]
    for name, outcome in (result.get("outcomes") or {}).items():
        if outcome not in ("PASSED", "SKIPPED"):
            lines.append(f"- {outcome} {name}")
    return lines


def _peak(result: dict | None) -> list[str]:
    if not result:
        return []
    cells = [f"{name} {result[name]['tflops']:.4g} TFLOP/s" for name in ("bf16", "fp32") if name in result]
    return ["", f"Matmul peak ({result.get('size')}^3): " + ", ".join(cells)]


def _memory(result: dict) -> list[str]:
    rows = result.get("rows", {})
    cells = [
        f"{name}: ours {row['peak_mem_gib_ours']:.2f} GiB, HF {row['peak_mem_gib_theirs']:.2f} GiB"
        for name, row in rows.items()
        if row.get("peak_mem_gib_ours") is not None and row.get("peak_mem_gib_theirs") is not None
    ]
    return [f"Peak GPU memory: {'; '.join(cells)}", ""] if cells else []
