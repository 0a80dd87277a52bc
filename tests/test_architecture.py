"""The architecture holds: layers import only downward, no cycles, small modules and functions.

The layer order is the import-linter contract in pyproject.toml (ARCHITECTURE.md explains it); the size and
import rules are the ones the code settled on: modules up to ~400 lines, functions up to ~80, imports at
module top except optional heavy dependencies.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recsys_llm"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LAZY_OK = {"matplotlib", "pymilvus", "milvus_lite", "onnxruntime", "onnx", "optimum", "uvicorn", "IPython"}
"""Optional or heavy dependencies a function may import when it runs (plots, Milvus, ONNX export, serving)."""
MODULE_EXCEPTIONS: dict[str, str] = {}
"""Module -> why it may exceed MAX_MODULE_LINES (keep this empty or justify each entry)."""


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_import_contract_layers_and_no_cycles(monkeypatch):
    importlinter_cli = pytest.importorskip("importlinter.cli", reason="pip install -e '.[dev]' for import-linter")
    monkeypatch.chdir(ROOT)
    # lint_imports configures logging with dictConfig, which disables every logger that exists (the library's,
    # created when the test modules were collected): re-enable them, or later tests' caplog sees nothing
    loggers = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    was_disabled = {lg: lg.disabled for lg in loggers}
    try:
        assert importlinter_cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
    finally:
        for lg, disabled in was_disabled.items():
            lg.disabled = disabled


def test_modules_are_small():
    too_long = {str(p.relative_to(ROOT)): n for p in _modules()
                if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
                and str(p.relative_to(PACKAGE)) not in MODULE_EXCEPTIONS}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {too_long}"


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_functions_are_short():
    long = []
    for p in _modules():
        for fn in _functions(ast.parse(p.read_text())):
            n = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            if n > MAX_FUNCTION_LINES:
                long.append(f"{p.relative_to(ROOT)}:{fn.lineno} {fn.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_imports_are_at_module_top():
    lazy = []
    for p in _modules():
        for fn in _functions(ast.parse(p.read_text())):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                bad = [n for n in names if n.split(".")[0] not in LAZY_OK]
                if bad:
                    lazy.append(f"{p.relative_to(ROOT)}:{node.lineno} {', '.join(bad)}")
    assert not lazy, f"function-local imports of core dependencies (move them to the module top): {lazy}"
