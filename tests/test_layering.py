"""The import direction between packages (docs/architecture.md): metrics and samplers stand on their own."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "metrics": {"torch", "s2s", "samplers", "recipes"},
    "samplers": {"s2s", "metrics", "recipes"},
    "s2s": {"metrics", "recipes"},
}


def imported_top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_layering(package):
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        bad = imported_top_level_names(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not offenders, "layering violated:\n" + "\n".join(offenders)


def test_metrics_runs_without_torch():
    code = "import sys, metrics; assert 'torch' not in sys.modules, 'metrics pulled in torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
