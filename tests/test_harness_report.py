"""The report: numbers equal to a hand computation from records; formats; plots (no models needed)."""

import csv
import io
import json
import math
import random
import statistics

import pytest

from w2s_eval.harness.records import RECORDS_FILE
from w2s_eval.harness.report import load_run, mean_se, summarize, to_latex, to_markdown, write_report

METHODS = ["cbs:w=2,k=2,l=5", "base", "bon:n=16", "bon:n=4", "eft:beta=1", "cbs:w=4,k=4,l=5"]


def _records(n_prompts=4, seeds=(0, 1, 2), methods=METHODS, rng_seed=0):
    rng = random.Random(rng_seed)
    out = []
    for spec in methods:
        for p in range(n_prompts):
            for s in seeds:
                out.append({"prompt_id": f"p{p}", "prompt": f"prompt {p}", "method": spec, "seed": s,
                            "gold": round(rng.gauss(0, 1), 3), "judge": round(rng.uniform(-1, 1), 3),
                            "guide_score": round(rng.gauss(2, 1), 3), "strong_tokens": rng.randint(10, 900),
                            "guide_tokens": rng.randint(0, 2000), "samples": rng.randint(1, 20),
                            "wall_time_s": rng.uniform(0.1, 3.0), "config_hash": "h1",
                            "config": {"world": "toy", "method": spec, "seed": s}})
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
        summarize([r for r in records if r["prompt_id"] == "p0" and r["method"] == "base"]
                  + [r for r in records if r["prompt_id"] == "p1" and r["method"] == "bon:n=4"])


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
    assert [(b, r.method) for b, r in series["CBS (L=5)"]] == [(1, "base"), (4, "cbs:w=2,k=2,l=5"),
                                                              (16, "cbs:w=4,k=4,l=5")]
