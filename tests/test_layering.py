"""The layering contracts (``[tool.importlinter]`` in pyproject.toml, checked by ``make lint``)
hold for the tree, and break as they should: on an import cycle, and on a front end importing
another front end."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(src: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own tool, our own tree)
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=ROOT,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the package to break."""
    shutil.copytree(ROOT / "src" / "keyhouse", tmp_path / "keyhouse")
    return tmp_path


def _append(copy: Path, module: str, line: str) -> None:
    path = copy / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{line}\n")


def _verdicts(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each contract's verdict, by the start of its name (lint-imports wraps long lines); the
    exit status agrees."""
    text = " ".join(result.stdout.split())
    verdicts = {}
    for name in (CYCLES, FRONT_ENDS):
        found = re.search(re.escape(name) + r".*? (KEPT|BROKEN)\b", text)
        assert found, text
        verdicts[name] = found.group(1)
    assert (result.returncode == 0) == all(v == "KEPT" for v in verdicts.values()), text
    return verdicts


CYCLES = "No import cycle among keyhouse's packages"
FRONT_ENDS = "Front ends (the console"


def test_the_tree_keeps_every_contract() -> None:
    assert _verdicts(_lint(ROOT / "src")) == {CYCLES: "KEPT", FRONT_ENDS: "KEPT"}


def test_an_import_cycle_breaks_the_build_even_under_type_checking(copy: Path) -> None:
    # The database layer reaching up into the services runtime closes a loop.
    _append(
        copy,
        "keyhouse.db",
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from keyhouse.runtime import Engines",
    )
    assert _verdicts(_lint(copy)) == {CYCLES: "BROKEN", FRONT_ENDS: "KEPT"}


def test_a_front_end_importing_another_front_end_breaks_the_build(copy: Path) -> None:
    _append(copy, "keyhouse.console.services", "from keyhouse.services.routes import view  # noqa")
    assert _verdicts(_lint(copy)) == {CYCLES: "KEPT", FRONT_ENDS: "BROKEN"}


def test_every_route_module_is_a_front_end_of_the_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [fronts] = [c for c in config["contracts"] if c["type"] == "independence"]
    routes = {
        f"keyhouse.{path.parent.name}.routes"
        for path in (ROOT / "src" / "keyhouse").glob("*/routes.py")
        if path.parent.name != "console"  # (the console is one front end as a whole)
    }
    assert routes <= set(fronts["modules"])
