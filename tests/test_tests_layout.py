"""tests/README.md's rule, checked: a test module never imports another test module or a
conftest.py; shared helpers come from tests/builders.py or tests/support/."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ALLOWED = ("tests.builders", "tests.support")


def _imports_of_tests(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                found.append("." * node.level + node.module)
            elif node.module == "tests":
                found += [f"tests.{a.name}" for a in node.names]
            elif node.module.startswith("tests."):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("tests.")]
    return found


def test_no_test_module_imports_another_or_a_conftest() -> None:
    wrong = {
        str(path.relative_to(TESTS)): bad
        for path in sorted(TESTS.rglob("*.py"))
        if (
            bad := [
                m
                for m in _imports_of_tests(path)
                if not any(m == a or m.startswith(a + ".") for a in ALLOWED)
            ]
        )
    }
    assert wrong == {}
