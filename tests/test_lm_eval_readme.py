"""Every ``lm_eval`` command in README.md parses (issue 12 item 7): its flags by lm-eval's own command-line
parser, and for ``--model w2s`` its ``--model_args`` by the backend's real parser -- so README examples cannot
rot. No model is loaded (the README names hub ids and placeholders)."""

from __future__ import annotations

import re
import shlex

import pytest
from test_lm_eval_helpers import REPO

LAUNCHERS = (["lm_eval"], ["lm-eval"], ["-m", "lm_eval"], ["-m", "w2s_eval.lm_eval_backend"])


def readme_lm_eval_commands(text: str) -> list[list[str]]:
    """The lm-eval arguments of each ``lm_eval ...`` command in the README's code blocks (also
    ``accelerate launch -m lm_eval``, ``torchrun ... -m lm_eval``, ``python -m w2s_eval.lm_eval_backend``)."""
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if "lm_eval" not in line and "lm-eval" not in line:
                continue  # another command (e.g. curl with a JSON body over several lines)
            argv = shlex.split(line, comments=True)
            for i in range(len(argv)):
                hit = next((lead for lead in LAUNCHERS if argv[i : i + len(lead)] == lead), None)
                if hit:
                    commands.append(argv[i + len(hit) :])
                    break
    return commands


def _check(argv: list[str]) -> None:
    from lm_eval._cli.harness import HarnessCLI

    from w2s_eval.lm_eval_backend.args import parse_model_args

    try:
        ns = HarnessCLI()._parser.parse_args(["run", *argv])
    except SystemExit:
        raise AssertionError(f"lm-eval's parser refuses: lm_eval {shlex.join(argv)}") from None
    if ns.model == "w2s":
        parse_model_args(ns.model_args or {})


COMMANDS = readme_lm_eval_commands((REPO / "README.md").read_text(encoding="utf-8"))


def test_readme_has_lm_eval_commands():
    assert sum("w2s" in argv for argv in COMMANDS) >= 2


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_readme_lm_eval_command_parses(argv):
    _check(argv)


def test_the_check_catches_a_bad_example():
    bad = readme_lm_eval_commands(
        "```bash\nlm_eval --model w2s \\\n  --model_args strong=S,method=cbs:w=4,k=4 --tasks x\n```\n"
    )
    assert bad == [["--model", "w2s", "--model_args", "strong=S,method=cbs:w=4,k=4", "--tasks", "x"]]
    with pytest.raises(ValueError, match="separate keys"):
        _check(bad[0])
    with pytest.raises(AssertionError, match="refuses"):
        _check(["--model", "w2s", "--no_such_flag"])
