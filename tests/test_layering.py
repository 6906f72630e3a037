"""The import direction between packages (docs/architecture.md): metrics and samplers stand on their own."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO

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


# The trainer's collaborators get what they need through an explicit interface (arguments, a documented
# Protocol of public members); none reaches into an object's private fields, the trainer's above all.
COLLABORATORS = [
    "s2s/evaluation.py",
    "s2s/hyperparameter_search.py",
    "s2s/training_loop.py",
    "s2s/checkpointer.py",
    "s2s/strategy.py",
]


def private_attribute_uses(source: str) -> list[str]:
    """``x._name`` for any ``x`` other than ``self``/``cls`` (dunder names such as ``__name__`` are fine)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_private_attribute_check_catches_trainer_privates():
    source = "def loop(trainer):\n    trainer._past = None\n    return trainer._loss_units(1), self._ok, x.__name__"
    assert private_attribute_uses(source) == ["line 2: trainer._past", "line 3: trainer._loss_units"]


@pytest.mark.parametrize("module", COLLABORATORS)
def test_collaborators_read_no_private_fields(module):
    offenders = private_attribute_uses((REPO / module).read_text(encoding="utf-8"))
    assert not offenders, f"{module} reads private fields:\n" + "\n".join(offenders)


def test_evaluation_knows_no_trainer():
    # The loop gets the override points (EvaluationSteps) and an EvaluationSetup, so it cannot write
    # trainer.control or reset trainer state behind the trainer's back.
    tree = ast.parse((REPO / "s2s/evaluation.py").read_text(encoding="utf-8"))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs}
    assert not {n for n in names if "trainer" in n.lower()}
