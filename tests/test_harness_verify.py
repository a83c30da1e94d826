"""`w2s-eval verify`: a run against committed results is identical, reproduced within noise, or differs (naming
the method and figure); synthetic record sets written with the harness's record writer, and the committed results."""

import json
import lzma
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from w2s_eval.harness.records import CONFIG_FILE, RECORDS_FILE, RecordLog, read_records
from w2s_eval.harness.report import summarize, to_markdown, write_report
from w2s_eval.harness.verify import DIFFERS, IDENTICAL, WITHIN_NOISE, lock_deviations, read_lock, verify
from w2s_eval.provenance import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
BON, CBS = "bon:n=16", "cbs:w=4,k=4,l=5"
EFFECTS = {"base": 0.0, BON: 0.7, CBS: 1.6}
IDENTITY = {"world": "toy", "world_fingerprint": "f1", "dtype": "float32", "guide": "implicit", "guide_beta": 1.0}
VERSIONS = {"python": "3.11.7", "torch": "2.13.0+cpu", "transformers": "5.24.0"}


def _run(path, n_prompts=48, seeds=(0,), effects=None, noise_seed=0, identity=None, versions=None):
    """A run directory written as compare writes one (config.json, then RecordLog): prompt p has a level shared by
    every run (the prompt's own difficulty), each record adds the method's effect and noise drawn from its key and
    ``noise_seed`` (the same key and noise_seed: the same record)."""
    effects = effects or EFFECTS
    atomic_write_json(
        path / CONFIG_FILE, {"config_hash": "h1", "identity": identity or IDENTITY, "versions": versions or VERSIONS}
    )
    log = RecordLog(path)
    levels = random.Random(99)
    level = [levels.gauss(0, 1.5) for _ in range(n_prompts)]
    for method, effect in effects.items():
        for p in range(n_prompts):
            for s in seeds:
                rng = random.Random(f"{noise_seed} {method} {p} {s}")  # a record's draws: its key's alone
                log.append(
                    {
                        "prompt_id": f"imdb-{p}",
                        "prompt": f"prompt {p}",
                        "method": method,
                        "seed": s,
                        "response": f"{method} {p} {s} {noise_seed}",
                        "gold": level[p] + effect + rng.gauss(0, 1),
                        "judge": 0.2 + 0.1 * effect + rng.gauss(0, 0.3),
                        "guide_score": rng.gauss(0, 1),
                        "strong_tokens": 64,
                        "guide_tokens": 0,
                        "samples": 1,
                        "rounds": 1,
                        "wall_time_s": 0.5,
                        "config_hash": "h1",
                        "config": dict(IDENTITY, method=method, seed=s),
                    }
                )
    return path


def test_identical_records_are_said_to_be_identical(tmp_path):
    ref = _run(tmp_path / "ref", seeds=(0, 1))
    new = _run(tmp_path / "new", n_prompts=16)  # the first 16 prompts, seed 0: a part of the reference
    v = verify(new, ref)
    assert v.status == IDENTICAL and v.ok and not v.differing
    assert v.identical == {"base": (16, 16), BON: (16, 16), CBS: (16, 16)}
    assert all(f.paired and f.n == 16 and f.diff == 0 for f in v.figures)
    assert "identical records" in v.text() and "all 48 shared records" in v.text()


def test_records_that_agree_are_reproduced_within_noise(tmp_path):
    ref = _run(tmp_path / "ref", noise_seed=0)
    new = _run(tmp_path / "new", noise_seed=1)  # the same prompts, other draws
    v = verify(new, ref)
    assert v.status == WITHIN_NOISE and v.ok
    names = {(f.method, f.name) for f in v.figures}
    assert {
        (BON, "gold gain over base"),
        (CBS, "gold gain over base"),
        (CBS, "judge gain over base"),
        ("base", "gold"),
        ("base", "judge"),
    } <= names
    gain = next(f for f in v.figures if f.method == CBS and f.name == "gold gain over base")
    assert gain.paired and gain.n == 48 and gain.diff == pytest.approx(gain.here - gain.there)
    assert all(f.z <= 3 for f in v.figures)
    assert v.text().startswith(f"check against {ref}: reproduced within noise")
    assert "records with the same response" in v.text() or v.identical[CBS] == (0, 48)


def test_records_that_differ_name_the_method_and_figure(tmp_path):
    ref = _run(tmp_path / "ref", noise_seed=0)
    new = _run(tmp_path / "new", noise_seed=1, effects={"base": 0.0, BON: 0.7, CBS: 3.1})
    v = verify(new, ref)
    assert v.status == DIFFERS and not v.ok
    assert [(f.method, f.name) for f in v.differing] == [(CBS, "gold gain over base")]
    f = v.differing[0]
    assert f.diff == pytest.approx(1.5, abs=3 * f.se) and f.z > 3
    text = v.text()
    assert text.startswith(f"check against {ref}: DIFFERS: {CBS} gold gain over base (more than 3 combined s.e.)")
    assert f"{CBS} gold gain over base: +" in text and "paired over 48 (prompt, seed) pairs" in text


def test_a_reference_with_only_its_report_is_compared_unpaired(tmp_path):
    ref = _run(tmp_path / "ref", noise_seed=0)
    write_report(ref, plots=False)
    (ref / RECORDS_FILE).unlink()
    agree = verify(_run(tmp_path / "agree", noise_seed=1), ref)
    assert agree.status == WITHIN_NOISE and not agree.identical
    assert not any(f.paired for f in agree.figures)
    gain = next(f for f in agree.figures if f.method == CBS)
    assert gain.name == "gold gain over base" and gain.se == pytest.approx((gain.here_se**2 + gain.there_se**2) ** 0.5)
    assert any("has no records" in n for n in agree.notes)
    differ = verify(_run(tmp_path / "differ", noise_seed=1, effects={"base": 0.0, BON: -0.8, CBS: 1.6}), ref)
    assert differ.status == DIFFERS and [(f.method, f.name) for f in differ.differing] == [(BON, "gold gain over base")]


def test_notes_name_the_world_versions_and_lock(tmp_path):
    lock = tmp_path / "constraints" / "reference.txt"
    lock.parent.mkdir()
    lock.write_text("# a lock\ntorch==2.13.0\ntransformers==5.24.0\nscikit_learn==1.9.1  # resolved\n")
    ref = _run(tmp_path / "results" / "ref")
    atomic_write_json(ref / "lock.json", {"lock": "constraints/reference.txt"})
    new = _run(
        tmp_path / "new",
        noise_seed=1,
        identity=dict(IDENTITY, world_fingerprint="f2"),
        versions=dict(VERSIONS, transformers="5.25.0"),
    )
    v = verify(new, ref)
    text = v.text()
    assert "another world: fingerprint f2 here, f1 there" in text
    assert "package versions differ: transformers 5.25.0 here, 5.24.0 there" in text
    assert (
        "the reference names the lock constraints/reference.txt; this run's install deviates from it: "
        "transformers 5.25.0 (lock 5.24.0)" in text
    )
    assert read_lock(lock) == {"torch": "2.13.0", "transformers": "5.24.0", "scikit-learn": "1.9.1"}
    assert (
        lock_deviations(
            {"torch": "2.13.0+cpu", "scikit-learn": "1.9.1", "python": "3.12.0", "numpy": "2"}, read_lock(lock)
        )
        == []
    )


def test_the_demo_table_marks_gains_beyond_two_standard_errors(tmp_path):
    records, _ = read_records(
        _run(tmp_path / "run", n_prompts=8, effects={"base": 0, BON: 0.05, CBS: 3.0}) / RECORDS_FILE
    )
    table = to_markdown(summarize(records), mark=2.0)
    cbs = next(line for line in table.splitlines() if f"| {CBS} |" in line)
    bon = next(line for line in table.splitlines() if f"| {BON} |" in line)
    assert " *" in cbs.split("|")[5] and "*" not in bon
    assert "*" not in to_markdown(summarize(records))


def _cli(*argv):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "w2s_eval.cli", *argv], capture_output=True, text=True, env=env, timeout=300
    )


def test_the_committed_records_verify_as_identical_from_the_command_line(tmp_path):
    """The demo's grid (16 prompts, seed 0) cut from the committed records of results/imdb-mini-strong: identical;
    one CBS gold shifted far: that figure differs (exit status 1)."""
    committed = ROOT / "results" / "imdb-mini-strong" / "smollm2-135m"
    records, _ = read_records(committed / "records.jsonl.xz")
    prompts = list(dict.fromkeys(r["prompt_id"] for r in records))[:16]
    part = [
        r
        for r in records
        if r["prompt_id"] in prompts and r["seed"] == 0 and r["method"] in ("base", "bon:n=16", "eft:beta=1", CBS)
    ]
    run = tmp_path / "run"
    (run).mkdir()
    (run / CONFIG_FILE).write_text((committed / CONFIG_FILE).read_text())
    RecordLog(run).extend(part)
    proc = _cli("verify", str(run), "--against", str(committed))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"check against {committed}: identical records (all 64 shared records")
    assert (
        "the reference names the lock constraints/reference.txt; this run's install matches the lock" in proc.stdout
    )  # results/imdb-mini-strong/lock.json, found from its model's folder
    shifted = [dict(r, gold=r["gold"] + 5.0) if r["method"] == CBS else r for r in part]
    (run / RECORDS_FILE).unlink()
    RecordLog(run).extend(shifted)
    proc = _cli("verify", str(run), "--against", str(committed), "--json")
    assert proc.returncode == 1, proc.stderr
    verdict = json.loads(proc.stdout)
    assert verdict["status"] == DIFFERS
    assert [(f["method"], f["name"]) for f in verdict["figures"] if f["differs"]] == [(CBS, "gold gain over base")]


def test_a_run_against_the_committed_report_gets_a_verdict(tmp_path):
    """results/imdb-mini has its report but no records: a run whose gains are near the committed ones is reproduced
    within noise (unpaired), with a note that the reference has no records and names its lock."""
    committed = ROOT / "results" / "imdb-mini"
    effects = {"base": 0.5, BON: 0.5 + 0.7, "eft:beta=1": 0.5 + 1.7, CBS: 0.5 + 1.6}
    identity = dict(json.loads((committed / CONFIG_FILE).read_text())["identity"], world_fingerprint="f1")
    run = _run(tmp_path / "run", n_prompts=64, seeds=(0, 1, 2), effects=effects, noise_seed=3, identity=identity)
    proc = _cli("verify", str(run), "--against", str(committed))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reproduced within noise" in proc.stdout.splitlines()[0]
    assert "has no records (only its report)" in proc.stdout and "the runs differ in" not in proc.stdout
    assert (
        "the reference names the lock constraints/reference.txt (it was made with transformers 5.23.0); this "
        "run's install matches the lock" in proc.stdout
    )
    assert "another world: fingerprint f1 here, fe06f76f3ccc54c2 there" in proc.stdout


def test_the_committed_results_name_their_lock():
    lock = read_lock(ROOT / "constraints" / "reference.txt")
    for results in ("imdb-mini", "imdb-mini-strong"):
        doc = json.loads((ROOT / "results" / results / "lock.json").read_text())
        assert doc["lock"] == "constraints/reference.txt"
        assert (ROOT / doc["lock"]).exists()
    strong = json.loads(
        lzma.decompress(
            (ROOT / "results" / "imdb-mini-strong" / "smollm2-135m" / "records.jsonl.xz").read_bytes()
        ).split(b"\n", 1)[0]
    )
    # the lock holds the versions the committed records were made with
    assert lock_deviations(strong["versions"], lock) == []


def test_the_demo_marks_its_gains_and_prints_the_verdict_under_its_table(toy_dirs, tmp_path, monkeypatch, capsys):
    """Two demos of the toy world, the second checked against the first: the same records, so 'identical records'
    under the second's table; the legend of the marks and which methods are not told apart come before it."""
    from harness_toyworld import write_home

    from w2s_eval.cli import main

    monkeypatch.setenv("W2S_EVAL_WORLD_MODULES", "harness_toyworld")
    home = write_home(tmp_path / "home", toy_dirs)
    argv = [
        "demo",
        "--world",
        "toy",
        "--world-home",
        str(home),
        "--methods",
        "base,bon:n=2",
        "--prompts",
        "3",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main([*argv, "--out", str(tmp_path / "first")]) == 0
    first = capsys.readouterr().out
    assert "check against" not in first  # a world other than imdb-mini: nothing committed to check against
    assert main([*argv, "--out", str(tmp_path / "second"), "--against", str(tmp_path / "first")]) == 0
    printed = capsys.readouterr().out
    table, _, verdict = printed.partition(f"check against {tmp_path / 'first'}: ")
    assert "| bon:n=2 | 3 |" in table and "* = gold gain over base more than 2 standard errors" in table
    assert ("NOT told apart from base on these 3 pairs: bon:n=2" in table) != ("told apart from base: bon:n=2" in table)
    assert verdict.startswith("identical records (all 6 shared records")
