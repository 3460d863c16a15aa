#!/usr/bin/env python3
"""How long the cases are: the body of every ``@case`` function under a suites directory (its
lines from the first statement after the docstring to its end, blank lines and comments
included), then the median, the longest and how many exceed 40 and 60 lines; and the helper
definitions the suite modules hold beside their cases.

    python ci/case_lengths.py [SUITES_DIR]      # default: suites/ of this checkout
"""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path


def _is_case(fn: ast.FunctionDef) -> bool:
    for deco in fn.decorator_list:
        call = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(call, ast.Name) and call.id == "case":
            return True
    return False


def _body_lines(fn: ast.FunctionDef) -> int:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]  # the docstring states the requirement; it is not the case's length
    if not body:
        return 0
    return (fn.end_lineno or body[-1].end_lineno or 0) - body[0].lineno + 1


def measure(suites: Path) -> tuple[dict[str, int], int]:
    lengths: dict[str, int] = {}
    helpers = 0
    for path in sorted(suites.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and _is_case(node):
                lengths[f"{path.relative_to(suites)}::{node.name}"] = _body_lines(node)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("test_"):
                helpers += 1
    return lengths, helpers


def main(argv: list[str]) -> int:
    suites = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "suites"
    lengths, helpers = measure(suites)
    if not lengths:
        print(f"no @case functions under {suites}", file=sys.stderr)
        return 2
    values = sorted(lengths.values())
    longest = max(lengths, key=lengths.__getitem__)
    print(f"{suites}: {len(values)} cases; body lines median {statistics.median(values):.0f}, "
          f"longest {lengths[longest]} ({longest}); over 40: {sum(v > 40 for v in values)}, "
          f"over 60: {sum(v > 60 for v in values)}; helper definitions in suite modules: {helpers}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
