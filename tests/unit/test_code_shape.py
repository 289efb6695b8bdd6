"""The shape the code is kept in (issue 9): small files and functions, public
functions documented, no block of code written twice.

Limits: no non-test module over 900 lines, no function over 120 lines (a nested
function counts inside its parent), at least 80 % of the public functions and
classes of ``edge/`` and ``cloud/`` with a docstring, and no run of 10 code lines
(blank lines, comments and imports left out, white space folded) standing in two
places of non-test code. Each failure names the places to split or share.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocols", "edge", "cloud", "simulators", "fusebox")
MAX_FILE_LINES = 900
MAX_FUNCTION_LINES = 120
MIN_DOCSTRING_SHARE = 0.80
DUPLICATE_RUN = 10


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_no_module_is_over_900_lines() -> None:
    long = {
        _rel(p): n
        for p in _modules()
        if (n := p.read_text().count("\n")) > MAX_FILE_LINES
    }
    assert not long, f"split these along the seams their docstrings name: {long}"


def test_no_function_is_over_120_lines() -> None:
    long: dict[str, int] = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{_rel(path)}:{node.lineno} {node.name}"] = n
    assert not long, f"break these into steps: {long}"


def test_public_functions_of_edge_and_cloud_are_documented() -> None:
    public = documented = 0
    missing: list[str] = []
    for path in _modules():
        if not _rel(path).startswith(("edge/", "cloud/")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
            ) or node.name.startswith("_"):
                continue
            public += 1
            if ast.get_docstring(node):
                documented += 1
            else:
                missing.append(f"{_rel(path)}:{node.lineno} {node.name}")
    share = documented / public
    assert share >= MIN_DOCSTRING_SHARE, (
        f"{documented} of {public} public functions and classes have a docstring "
        f"({share:.0%}); for example: {missing[:20]}"
    )


_SKIP = re.compile(r"^(#|import |from \S+ import |\)|\]|\}|[\)\]\}],?|\"\"\"|'''|$)")


def _code_lines(path: Path) -> list[tuple[int, str]]:
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = " ".join(line.split())
        if not _SKIP.match(text):
            out.append((number, text))
    return out


def test_no_block_of_ten_code_lines_is_written_twice() -> None:
    seen: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for path in _modules():
        lines = _code_lines(path)
        for i in range(len(lines) - DUPLICATE_RUN + 1):
            run = lines[i : i + DUPLICATE_RUN]
            key = hashlib.sha1("\n".join(t for _, t in run).encode()).hexdigest()
            seen[key].append((_rel(path), run[0][0], run[-1][0]))
    twice = set()
    for places in seen.values():
        for a in places:
            for b in places:
                # overlapping windows of one repeated stretch are not a copy
                if a < b and (a[0] != b[0] or a[2] < b[1]):
                    twice.add((a[0], a[1], b[0], b[1]))
    pairs = sorted({(a, b) for a, _, b, _ in twice})
    assert not pairs, (
        "these files share a block of 10+ code lines; make one piece of code serve "
        f"both: {pairs[:20]} ({len(twice)} windows)"
    )
