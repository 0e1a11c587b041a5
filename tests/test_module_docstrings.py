"""Every module of the package says what it is for, in its docstring."""

from __future__ import annotations

import ast
from pathlib import Path

import keyhouse

PACKAGE = Path(keyhouse.__file__).parent


def test_every_module_has_a_docstring() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 50
    missing = [
        str(path.relative_to(PACKAGE))
        for path in modules
        if not ast.get_docstring(ast.parse(path.read_text(), str(path)))
    ]
    assert missing == []
