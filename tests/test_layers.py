"""The import graph only points down (issue 14): aapt_world (the library) < envs (the source
worlds and the neural env) < training < agents (the applications: CLI, agents, evaluation,
viewer). Function-local imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LAYERS = ("aapt_world", "envs", "training", "agents")


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_imports_only_point_down(package: str) -> None:
    above = set(LAYERS[LAYERS.index(package) + 1:])
    wrong = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & above)
             for p in sorted((ROOT / package).rglob("*.py")) if imported_packages(p) & above}
    assert not wrong, f"{package} imports layers above it: {wrong}"
