"""`w2s-eval compare`, `report` and `demo` through the real CLI entry point, on the toy world.

The toy world is registered only for the tests: ``W2S_EVAL_WORLD_MODULES=harness_toyworld``
(``tests/harness_toyworld.py``) and ``--world-home`` holding its model paths.
"""

import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness_toyworld import InterruptingGold, gold_e_count, make_world, write_home

from w2s_eval.cli import main
from w2s_eval.harness.records import RECORDS_FILE, read_records, record_key
from w2s_eval.harness.report import summary_of, to_markdown
from w2s_eval.world_registry import register_world, unregister_world

TESTS = Path(__file__).parent


@pytest.fixture
def toy_home(tmp_path, toy_dirs, monkeypatch):
    monkeypatch.setenv("W2S_EVAL_WORLD_MODULES", "harness_toyworld")
    return write_home(tmp_path / "home", toy_dirs)


def _compare(home, out, *extra, methods="base,bon:n=2,cbs:w=1,k=2,l=3", world="toy"):
    return main(
        [
            "compare",
            "--world",
            world,
            "--world-home",
            str(home),
            "--methods",
            methods,
            "--prompts",
            "2",
            "--seeds",
            "2",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--max-new-tokens",
            "5",
            "--no-progress",
            *extra,
        ]
    )


@pytest.mark.slow
def test_compare_and_report_from_the_command_line(toy_home, tmp_path, capsys):
    out = tmp_path / "run"
    assert _compare(toy_home, out) == 0
    printed = capsys.readouterr().out
    records, tail = read_records(out / RECORDS_FILE)
    assert tail is None and len(records) == 2 * 2 * 3
    assert all(r["config"]["sampling"]["max_new_tokens"] == 5 for r in records)
    # the printed table equals a hand computation from the records
    for spec in ("base", "bon:n=2", "cbs:w=1,k=2,l=3"):
        gold = [r["gold"] for r in records if r["method"] == spec]
        row = f"| {spec} | 4 | {statistics.mean(gold):.3f} ± {statistics.stdev(gold) / math.sqrt(4):.3f} |"
        assert row in printed
    for name in ("report.md", "report.csv", "report.tex", "gold_by_method.png", "gold_vs_samples.png"):
        assert (out / name).exists() and str(out / name) in printed
    # rerun: nothing new; report alone rebuilds the same table
    assert _compare(toy_home, out) == 0
    assert "0 new" in capsys.readouterr().out
    csv_before = (out / "report.csv").read_text()
    (out / "report.csv").unlink()
    assert main(["report", str(out), "--no-plots"]) == 0
    assert (out / "report.csv").read_text() == csv_before
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["method"] for r in rows] == ["base", "bon:n=2", "cbs:w=1,k=2,l=3"]


def test_cli_bad_input_gives_clear_errors(toy_home, tmp_path, capsys):
    assert _compare(toy_home, tmp_path / "r1", world="imdb-tiny") == 2
    assert "unknown world 'imdb-tiny'" in capsys.readouterr().err
    assert _compare(toy_home, tmp_path / "r2", methods="base,beam:n=4") == 2
    assert "unknown method 'beam'" in capsys.readouterr().err
    out = tmp_path / "r3"
    assert _compare(toy_home, out, methods="base") == 0
    assert _compare(toy_home, out, "--temperature", "0.3", methods="base") == 2
    err = capsys.readouterr().err
    assert "sampling.temperature is 1.0 there but 0.3 now" in err and "--out" in err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_ctrl_c_keeps_records_and_the_same_command_resumes(toy_dirs, tmp_path, capsys):
    state = {"gold": InterruptingGold(after=3)}
    register_world("toy-ctrlc", lambda home: make_world(toy_dirs, gold=state["gold"], name="toy-ctrlc"))
    try:
        out = tmp_path / "run"
        assert _compare(tmp_path, out, "--no-report", world="toy-ctrlc") == 130
        assert "run the same command again to resume" in capsys.readouterr().err
        kept = read_records(out / RECORDS_FILE)[0]
        assert len(kept) == 2
        state["gold"] = gold_e_count
        assert _compare(tmp_path, out, "--no-report", world="toy-ctrlc") == 0
        records = read_records(out / RECORDS_FILE)[0]
        assert len(records) == len({record_key(r) for r in records}) == 12
        assert records[:2] == kept
    finally:
        unregister_world("toy-ctrlc")


@pytest.mark.slow
def test_demo_builds_the_world_only_when_missing(toy_dirs, tmp_path, monkeypatch, capsys):
    from harness_toyworld import load_toy

    import w2s_eval.cli as cli

    calls = []

    def build_world(name, home, **kw):  # what the real builder leaves behind: a loadable world
        calls.append((name, str(home)))
        write_home(home, toy_dirs)
        return home

    monkeypatch.setattr(cli, "build_world", build_world)  # the builder the demo calls
    register_world("toy-lazy", load_toy)
    home, out = tmp_path / "h", tmp_path / "demo"
    argv = [
        "demo",
        "--world",
        "toy-lazy",
        "--world-home",
        str(home),
        "--methods",
        "base,bon:n=2",
        "--prompts",
        "2",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
    ]
    try:
        assert main(argv) == 0
        assert calls == [("toy-lazy", str(home))]
        printed = capsys.readouterr().out
        assert "| bon:n=2 | 2 |" in printed and str(out / "gold_vs_samples.png") in printed
        assert len(read_records(out / RECORDS_FILE)[0]) == 4
        assert main(argv) == 0
        assert len(calls) == 1  # built once
    finally:
        unregister_world("toy-lazy")
    assert json.loads((home / "toy_dirs.json").read_text())["strong"] == toy_dirs["strong"]


@pytest.mark.slow
def test_demo_prints_a_table_as_soon_as_each_method_finishes(toy_home, tmp_path, capsys):
    """The real CLI in a subprocess. The world's gold waits, after base's two calls (2 prompts x 2 seeds), until
    the test has read base's table: so that table came while the later methods were still to run."""
    (toy_home / "gate.json").write_text(json.dumps({"free": 2}))
    methods, out = ["base", "bon:n=2", "cbs:w=1,k=2,l=3"], tmp_path / "demo"
    argv = [
        "demo",
        "--world",
        "toy-gated",
        "--world-home",
        str(toy_home),
        "--methods",
        ",".join(methods),
        "--prompts",
        "2",
        "--seeds",
        "2",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
    ]
    env = dict(
        os.environ,
        W2S_EVAL_WORLD_MODULES="harness_toyworld",
        PYTHONPATH=str(TESTS),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    with (
        open(tmp_path / "stderr", "w") as err,
        subprocess.Popen(
            [sys.executable, "-m", "w2s_eval.cli", *argv], env=env, stdout=subprocess.PIPE, stderr=err, text=True
        ) as proc,
    ):
        head = []
        for line in proc.stdout:
            head.append(line)
            if line.startswith("results so far (1 of 3 methods"):
                break
        recorded_then = read_records(out / RECORDS_FILE)[0] if (out / RECORDS_FILE).exists() else []
        (toy_home / "gate.open").touch()
        printed = "".join(head) + proc.stdout.read()  # (communicate would skip what the reader buffered)
        proc.wait(timeout=300)
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()
    assert [r["method"] for r in recorded_then] == ["base"] * 4, printed  # base done, nothing of bon scored yet
    records = read_records(out / RECORDS_FILE)[0]
    assert len(records) == 12 and records[:4] == recorded_then
    # each table so far is the report of the finished methods' records; base's row by hand
    partial = ""
    for done in (1, 2):
        table = to_markdown(summary_of(out, methods=methods[:done]))
        partial += (
            f"results so far ({done} of 3 methods done: {', '.join(methods[:done])}; the full table "
            f"follows at the end):\n\n{table}\n"
        )
    gold = [r["gold"] for r in recorded_then]
    assert f"| base | 4 | {statistics.mean(gold):.3f} ± {statistics.stdev(gold) / math.sqrt(4):.3f} |" in partial
    assert "| bon:n=2 |" in partial and "| cbs:w=1,k=2,l=3 |" not in partial
    assert printed.startswith(partial)
    # then the final output, as a rerun with nothing left to compute prints it (no table before it there)
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "results so far" not in again and "| cbs:w=1,k=2,l=3 | 4 |" in again
    assert printed[len(partial) :] == again.replace("(0 new, 12 recorded before)", "(12 new, 0 recorded before)")


def test_each_command_is_added_by_the_module_the_table_names():
    import re

    from w2s_eval.cli import COMMANDS, build_parser

    def commands(parser):  # the subcommands the help lists, one per line: "    NAME   help"
        return set(re.findall(r"^    ([a-z][a-z-]*)(?:\s|$)", parser.format_help(), re.M))

    assert commands(build_parser()) == {c for names in COMMANDS.values() for c in names}
    for module, names in COMMANDS.items():
        for name in names:
            assert commands(build_parser(name)) == set(names), module


@pytest.mark.slow
def test_a_second_compare_into_one_out_is_refused(toy_home, tmp_path, capsys):
    """Issue 25, item 5: two concurrent ``compare`` runs left 24 records for 12 keys. The first (the real CLI in a
    subprocess) holds --out while its gold waits for a gate; a second into the same --out is refused at once,
    naming the first's pid; the first then finishes alone, one record per key."""
    (toy_home / "gate.json").write_text(json.dumps({"free": 0}))
    out = tmp_path / "run"
    argv = [
        "compare",
        "--world",
        "toy-gated",
        "--world-home",
        str(toy_home),
        "--methods",
        "base,bon:n=2",
        "--prompts",
        "2",
        "--seeds",
        "2",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--max-new-tokens",
        "4",
        "--no-progress",
        "--no-report",
    ]
    env = dict(
        os.environ,
        W2S_EVAL_WORLD_MODULES="harness_toyworld",
        PYTHONPATH=str(TESTS),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    with subprocess.Popen(
        [sys.executable, "-m", "w2s_eval.cli", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as first:
        try:
            deadline = time.monotonic() + 120
            while not (out / "config.json").exists():  # written under the lock, before generating
                assert time.monotonic() < deadline and first.poll() is None, first.stderr.read()
                time.sleep(0.05)
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"error: --out {out} is in use: pid {first.pid} (" in err and "give another --out" in err, err
        finally:
            (toy_home / "gate.open").touch()
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    records = read_records(out / RECORDS_FILE)[0]
    assert len(records) == len({record_key(r) for r in records}) == 8
    assert main(["report", str(out), "--no-plots"]) == 0  # and the finished directory is free again
