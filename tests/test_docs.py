"""docs/reliability.md names a test for every guarantee, and every test it names exists."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_every_guarantee_names_tests_that_exist():
    rows = [
        line
        for line in DOC.read_text("utf-8").splitlines()
        if line.startswith("| ") and not line.startswith(("| guarantee", "| figure"))
    ]
    assert len(rows) > 20
    missing = []
    for row in rows:
        claim, proof = row.strip("| ").rsplit(" | ", 1)
        files = re.findall(r"`(tests/\w+\.py)", proof)
        assert files, f"no test named for: {claim[:80]}"
        # `tests/a.py::x`, `::y` (same file), `tests/b.py::z`: each name belongs to the file
        # named last before it.
        current = None
        for file, name in re.findall(r"`(tests/\w+\.py)?(?:::(\w+))?`?", proof):
            current = file or current
            if name and name not in _tests_in(ROOT / current):
                missing.append(f"{current}::{name}")
    assert missing == []
