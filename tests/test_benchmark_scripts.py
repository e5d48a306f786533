"""The benchmark scripts keep up with the library: every ``alignnet`` name they import exists.

They are not run by the suite (they take minutes to hours); a moved or renamed function would otherwise only show
when someone reruns a benchmark (``bench_train.py`` imported a module removed in an earlier refactor).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_alignnet_import_of_a_benchmark_resolves(script):
    tree = ast.parse(script.read_text(), filename=str(script))
    checked = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "alignnet":
                    importlib.import_module(alias.name)
                    checked += 1
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "alignnet":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):  # a submodule imported by name
                    importlib.import_module(f"{node.module}.{alias.name}")
                checked += 1
    assert checked, f"{script.name} imports nothing from alignnet: is it still a benchmark of this library?"
