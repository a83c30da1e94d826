"""The report: numbers equal to a hand computation from records; formats; plots (no models needed)."""

import csv
import io
import json
import math
import random
import statistics

import pytest

from w2s_eval.harness.records import RECORDS_FILE
from w2s_eval.harness.report import mean_se, summarize, to_latex, to_markdown, write_report
from w2s_eval.harness.runs import load_run

METHODS = ["cbs:w=2,k=2,l=5", "base", "bon:n=16", "bon:n=4", "eft:beta=1", "cbs:w=4,k=4,l=5"]


def _records(n_prompts=4, seeds=(0, 1, 2), methods=METHODS, rng_seed=0):
    rng = random.Random(rng_seed)
    out = []
    for spec in methods:
        for p in range(n_prompts):
            for s in seeds:
                out.append(
                    {
                        "prompt_id": f"p{p}",
                        "prompt": f"prompt {p}",
                        "method": spec,
                        "seed": s,
                        "gold": round(rng.gauss(0, 1), 3),
                        "judge": round(rng.uniform(-1, 1), 3),
                        "guide_score": round(rng.gauss(2, 1), 3),
                        "strong_tokens": rng.randint(10, 900),
                        "guide_tokens": rng.randint(0, 2000),
                        "samples": rng.randint(1, 20),
                        "wall_time_s": rng.uniform(0.1, 3.0),
                        "config_hash": "h1",
                        "config": {"world": "toy", "method": spec, "seed": s},
                    }
                )
    return out


def _write(run_dir, records):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RECORDS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def _csv_rows(path):
    return {row["method"]: row for row in csv.DictReader(io.StringIO(path.read_text()))}


def test_table_numbers_equal_a_hand_computation(tmp_path):
    records = _records()
    paths = write_report(_write(tmp_path / "run", records))
    rows = _csv_rows(paths["csv"])
    assert list(rows) == ["base", "eft:beta=1", "bon:n=4", "cbs:w=2,k=2,l=5", "bon:n=16", "cbs:w=4,k=4,l=5"]
    base = {(r["prompt_id"], r["seed"]): r["gold"] for r in records if r["method"] == "base"}
    md = paths["markdown"].read_text()
    for spec in METHODS:
        mine = [r for r in records if r["method"] == spec]
        gold = [r["gold"] for r in mine]
        row = rows[spec]
        assert int(row["n"]) == 12 and int(row["n_prompts"]) == 4 and int(row["n_seeds"]) == 3
        assert float(row["gold_mean"]) == pytest.approx(statistics.mean(gold))
        assert float(row["gold_se"]) == pytest.approx(statistics.stdev(gold) / math.sqrt(12))
        assert float(row["judge_mean"]) == pytest.approx(statistics.mean(r["judge"] for r in mine))
        assert float(row["guide_mean"]) == pytest.approx(statistics.mean(r["guide_score"] for r in mine))
        assert float(row["strong_tokens"]) == pytest.approx(statistics.mean(r["strong_tokens"] for r in mine))
        assert float(row["guide_tokens"]) == pytest.approx(statistics.mean(r["guide_tokens"] for r in mine))
        assert float(row["wall_time_s"]) == pytest.approx(statistics.mean(r["wall_time_s"] for r in mine))
        if spec == "base":
            assert row["delta_gold_vs_base"] == ""
        else:
            d = [r["gold"] - base[(r["prompt_id"], r["seed"])] for r in mine]
            assert float(row["delta_gold_vs_base"]) == pytest.approx(statistics.mean(d))
            assert float(row["delta_gold_se"]) == pytest.approx(statistics.stdev(d) / math.sqrt(12))
        m, se = statistics.mean(gold), statistics.stdev(gold) / math.sqrt(12)
        assert f"| {spec} | 12 | {m:.3f} ± {se:.3f} |" in md
    # methods of equal budget sit together; the budget is printed once per group
    lines = [ln for ln in md.splitlines() if ln.startswith("| ") and "method" not in ln]
    assert [ln.split("|")[1].strip() for ln in lines] == ["1", "", "4", "", "16", ""]
    tex = paths["latex"].read_text()
    assert tex.count(r"\midrule") == 3 and r"\texttt{cbs:w=4,k=4,l=5}" in tex and r"$\pm$" in tex


def test_only_pairs_recorded_for_every_method_are_compared(tmp_path):
    records = _records(n_prompts=3, seeds=(0, 1), methods=["base", "bon:n=4"])
    records = [r for r in records if not (r["method"] == "bon:n=4" and r["prompt_id"] == "p2" and r["seed"] == 1)]
    s = summarize(records)
    assert [r.n for r in s.rows] == [5, 5]
    assert any("1 record(s)" in n for n in s.notes)
    base = [r["gold"] for r in records if r["method"] == "base" and (r["prompt_id"], r["seed"]) != ("p2", 1)]
    assert s.rows[0].gold_mean == pytest.approx(statistics.mean(base))
    s_all = summarize(records, matched=False)
    assert [r.n for r in s_all.rows] == [6, 5]
    with pytest.raises(ValueError, match="no .prompt, seed. pair"):
        summarize(
            [r for r in records if r["prompt_id"] == "p0" and r["method"] == "base"]
            + [r for r in records if r["prompt_id"] == "p1" and r["method"] == "bon:n=4"]
        )


def test_single_record_has_no_standard_error_and_formats_hold(tmp_path):
    assert mean_se([]) == (None, None) and mean_se([2.0]) == (2.0, None)
    s = summarize(_records(n_prompts=1, seeds=(0,), methods=["base", "eft:beta=1"]))
    assert s.rows[0].gold_se is None
    gold_cell = to_markdown(s).split("\n")[4].split("|")[4].strip()
    assert gold_cell == f"{s.rows[0].gold_mean:.3f}"  # printed without "± se"
    assert "--" in to_latex(s)


def test_report_from_a_truncated_or_mixed_records_file(tmp_path):
    run = _write(tmp_path / "run", _records(n_prompts=2, seeds=(0,), methods=["base", "bon:n=4"]))
    with open(run / RECORDS_FILE, "a") as f:
        f.write('{"prompt_id": "p9", "meth')
    records, notes = load_run(run)
    assert len(records) == 4 and "truncated" in notes[0]
    assert "truncated" in write_report(run, plots=False)["markdown"].read_text()
    other = _records(n_prompts=1, seeds=(5,), methods=["base"])
    for r in other:
        r["config_hash"], r["config"]["sampling"] = "h2", {"temperature": 0.3}
    _write(tmp_path / "mixed", _records(n_prompts=1, seeds=(0,), methods=["base"]) + other)
    with pytest.raises(ValueError, match="mixes records of different configs.*sampling"):
        load_run(tmp_path / "mixed")
    with pytest.raises(FileNotFoundError, match="w2s-eval compare"):
        load_run(tmp_path / "empty")


def test_plots_are_png_files(tmp_path):
    paths = write_report(_write(tmp_path / "run", _records()), out_dir=tmp_path / "rep")
    for key in ("plot_methods", "plot_samples"):
        data = paths[key].read_bytes()
        assert paths[key].parent == tmp_path / "rep" and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    from w2s_eval.harness.plots import _series

    series = _series(paths["summary"].rows)
    assert [(b, r.method) for b, r in series["BoN"]] == [(1, "base"), (4, "bon:n=4"), (16, "bon:n=16")]
    assert [(b, r.method) for b, r in series["CBS (L=5)"]] == [
        (1, "base"),
        (4, "cbs:w=2,k=2,l=5"),
        (16, "cbs:w=4,k=4,l=5"),
    ]


# ----------------------------------------------------------------------------- issue 25, item 8: bad records


def _nan_gold(records):
    records[5]["gold"] = float("nan")  # json.dumps writes a bare NaN, which json.loads reads back


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda rs: rs[5].pop("gold"), "gold is missing"),
        (lambda rs: rs[5].update(gold="0.5"), "gold is '0.5' (str), not a number"),
        (lambda rs: rs[5].update(gold=None), "gold is None (NoneType), not a number"),
        (_nan_gold, "gold is nan (not a finite number)"),
        (lambda rs: rs[5].update(judge=True), "judge is True (bool), not a number"),
        (lambda rs: rs[5].update(guide_score=float("inf")), "guide_score is inf (not a finite number)"),
        (lambda rs: rs[5].pop("wall_time_s"), "wall_time_s is missing"),
    ],
)
def test_a_bad_number_in_a_record_is_named_with_its_record_and_field(tmp_path, capsys, damage, message):
    """``w2s-eval report`` on a records file with one bad record: exit 2 and one line naming the record (number,
    prompt, method, seed) and the field, no traceback, no 'nan ± nan'."""
    from w2s_eval.cli import main

    records = _records()
    damage(records)
    run = _write(tmp_path / "run", records)
    assert main(["report", str(run), "--no-plots"]) == 2
    err = capsys.readouterr().err
    where = f"record 6 of {run / RECORDS_FILE} (prompt 'p1', method 'cbs:w=2,k=2,l=5', seed 2): "
    assert err.startswith(f"error: {where}{message}; remove that line"), err
    assert not (run / "report.md").exists()


def test_a_key_recorded_twice_with_other_results_is_refused_and_an_exact_repeat_dropped(tmp_path, capsys):
    """Two writers of one directory leave a key twice: another gold (issue: +0.278 became -16.413 silently) is
    refused naming both records; the same results again are left out with a note."""
    from w2s_eval.cli import main

    records = _records()
    run = _write(tmp_path / "run", records + [dict(records[0], gold=100.0)])
    assert main(["report", str(run), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert (
        f"holds different records for prompt 'p0', method cbs:w=2,k=2,l=5, seed 0 (records 1 and "
        f"{len(records) + 1}: gold {records[0]['gold']!r} vs 100.0)"
    ) in err
    run = _write(tmp_path / "again", records + [dict(records[0], wall_time_s=9.0)])
    summary = write_report(run, plots=False)["summary"]
    assert summary.n_records == len(records)
    assert (
        "1 repeated record(s) of a (prompt, method, seed) already recorded, with the same results, were left "
        "out" in summary.notes
    )


def test_method_specs_are_made_canonical(tmp_path):
    """``bon:n=04`` and ``bon:n=4`` are one method (one row), as are ``cbs:l=none,w=2,k=2`` and
    ``cbs:w=2,k=2,l=inf``; a repeat written under the other spelling is a repeat."""
    records = _records(methods=["base", "bon:n=4", "cbs:w=2,k=2,l=inf"])
    for r in records[12:18]:
        r["method"] = "bon:n=04"
    for r in records[24:]:
        r["method"] = "cbs:l=none,w=2,k=2"
    rows = _csv_rows(write_report(_write(tmp_path / "run", records), plots=False)["csv"])
    assert list(rows) == ["base", "bon:n=4", "cbs:w=2,k=2,l=inf"] and rows["bon:n=4"]["n"] == "12"
    run = _write(tmp_path / "dup", records + [dict(records[12], method="bon:n=4", gold=99.0)])
    with pytest.raises(ValueError, match="different records for prompt 'p0', method bon:n=4, seed 0"):
        load_run(run)


def test_records_of_another_config_than_config_json_are_refused(tmp_path):
    run = _write(tmp_path / "run", _records())  # all of config h1
    (run / "config.json").write_text(json.dumps({"config_hash": "h1", "identity": {}}))
    assert len(load_run(run)[0]) == len(_records())
    (run / "config.json").write_text(json.dumps({"config_hash": "h2", "identity": {}}))
    with pytest.raises(ValueError, match=r"made with config h1, but the directory's config.json is for config h2"):
        load_run(run)
