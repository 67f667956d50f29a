"""The light layers stay light: wire, protocol and status load without the ML stack,
and the product never imports its test doubles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "solora_node"
HEAVY = ("torch", "peft", "transformers")

LIGHT_MODULES = [
    "solora_node.protocol.blocks",
    "solora_node.protocol.messages",
    "solora_node.protocol.reasons",
    "solora_node.net.port",
    "solora_node.net.client",
    "solora_node.net.server",
    "solora_node.commands.status",
    "solora_node.testing.loopback",
]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_module_imports_no_ml_stack(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_tests_and_benchmarks_import_the_test_doubles() -> None:
    allowed = {PACKAGE / "testing", PACKAGE / "benchmarks"}
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if not any(parent in allowed for parent in path.parents)
        and any(m.startswith("solora_node.testing") for m in _imported_modules(path))
    ]
    assert offenders == []
