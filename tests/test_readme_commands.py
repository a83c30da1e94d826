"""Every ``w2s-eval`` command in README.md parses with the real command-line parser (issue 12 item 7: README
examples cannot rot); ``tests/test_lm_eval_readme.py`` does the same for the ``lm_eval`` commands. Nothing is
run: the README names hub ids and placeholders."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from w2s_eval.cli import build_parser
from w2s_eval.config import parse_method

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_w2s_eval_commands(text: str) -> list[list[str]]:
    """The arguments of each ``w2s-eval ...`` command in the README's shell code blocks (also after ``&&``
    and as ``.venv/bin/w2s-eval``), continuation lines joined."""
    commands = []
    for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if "w2s-eval" not in line:
                continue  # another command (e.g. curl with a JSON body over several lines)
            lex = shlex.shlex(line, posix=True, punctuation_chars="&|;")
            lex.whitespace_split, lex.commenters = True, "#"
            argv: list[str] = []
            for token in [*lex, "&&"]:
                if token not in ("&&", "||", ";", "|"):
                    argv.append(token)
                    continue
                if argv and Path(argv[0]).name == "w2s-eval":
                    commands.append(argv[1:])
                argv = []
    return commands


COMMANDS = readme_w2s_eval_commands(README.read_text(encoding="utf-8"))


def _parse(argv: list[str]) -> None:
    """The flags by the real parser; a method spec (``--method``) by the real method parser."""
    try:
        ns = build_parser(argv[0] if argv else None).parse_args(argv)
    except SystemExit:
        raise AssertionError(f"w2s-eval's parser refuses: w2s-eval {shlex.join(argv)}") from None
    if isinstance(getattr(ns, "method", None), str):
        parse_method(ns.method)


def test_readme_has_the_main_commands():
    names = {argv[0] for argv in COMMANDS if argv}
    assert {"demo", "compare", "report", "world", "alpaca-eval", "serve"} <= names


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_readme_w2s_eval_command_parses(argv):
    _parse(argv)


def test_the_check_catches_a_bad_example():
    bad = readme_w2s_eval_commands("```bash\nw2s-eval compare --world imdb-mini \\\n  --no-such-flag 3\n```\n")
    assert bad == [["compare", "--world", "imdb-mini", "--no-such-flag", "3"]]
    with pytest.raises(AssertionError, match="refuses"):
        _parse(bad[0])


def test_ci_runs_the_readme_test_command():
    """The README's second set-up command (install with the lock, then the tests) is what CI runs (.ci/run)."""
    text = README.read_text(encoding="utf-8")
    setup = [ln for ln in text.splitlines() if ln.startswith("python3 -m venv .venv && ")]
    assert len(setup) == 2 and all("-c constraints/reference.txt" in ln for ln in setup)
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert setup[1] in ci
