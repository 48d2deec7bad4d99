"""Imports flow one way (GUIDE.md): the layers contract in pyproject.toml, checked by import-linter."""

from pathlib import Path

from importlinter import cli as importlinter_cli

ROOT = Path(__file__).resolve().parents[1]


def test_no_upward_imports(monkeypatch):
    monkeypatch.chdir(ROOT)  # the contract lives in pyproject.toml
    assert importlinter_cli.lint_imports(no_cache=True) == 0, "an import runs upward: see `lint-imports`"
