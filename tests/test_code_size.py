"""Size guards of the package's code, as ruff formats it (one argument a line when a call does not fit 120
characters): no module of ``w2s_eval/`` over 520 lines, no function over 100. Guards against a module or a function
that has grown into two concepts, not targets to pack to."""

import ast
from pathlib import Path

import w2s_eval

PACKAGE = Path(w2s_eval.__file__).resolve().parent
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 520, 100


def test_no_module_over_520_lines_and_no_function_over_100():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(PACKAGE).as_posix()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, too_long
