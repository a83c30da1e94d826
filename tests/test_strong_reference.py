"""The committed multi-strong-model reference run (issue 14): its tables and plot come from its committed records."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from w2s_eval.provenance import fingerprint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "imdb-mini-strong"
SCRIPT = ROOT / "scripts" / "strong_reference.py"
MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-0.5b")
MEASURED = ("base", "bon:n=4", "bon:n=16", "cbs:w=2,k=2,l=5", "cbs:w=4,k=4,l=5")


def _check(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "check", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_committed_summary_and_reports_are_made_from_the_committed_records():
    proc = _check(RESULTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "ok"
    assert (RESULTS / "gain_vs_params.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_strong_model_ran_the_whole_grid_and_eft_is_na_across_vocabularies():
    summary = json.loads((RESULTS / "summary.json").read_text())
    assert set(summary["models"]) == set(MODELS)
    params = [summary["models"][m]["params"] for m in MODELS]
    assert params == sorted(params) and len(set(params)) == 3
    fingerprints = {m["world_fingerprint"] for m in summary["models"].values()}
    assert fingerprints == {fingerprint(json.loads((RESULTS / "world_manifest.json").read_text()))}
    for name, model in summary["models"].items():
        for method in MEASURED:
            assert model["methods"][method]["n"] >= 128, (name, method)  # >= 64 prompts x 2 seeds
        eft = model["methods"]["eft:beta=1"]
        if name == "smollm2-135m":  # the guides' own vocabulary
            assert eft["n"] >= 128
        else:
            assert eft == {"n": 0, "note": "n/a (vocabulary differs)"}
            report = (RESULTS / name / "report.md").read_text()
            assert "n/a (vocabulary differs)" in report


def test_check_fails_when_a_committed_figure_is_not_what_the_records_give(tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(RESULTS, out)
    summary = json.loads((out / "summary.json").read_text())
    summary["models"]["gemma3-270m"]["methods"]["cbs:w=4,k=4,l=5"]["gold_gain"] += 0.01
    (out / "summary.json").write_text(json.dumps(summary))
    proc = _check(out)
    assert proc.returncode == 1
    assert "summary.json differs" in proc.stderr


@pytest.mark.parametrize("model", MODELS)
def test_each_run_has_its_own_identity(model):
    config = json.loads((RESULTS / model / "config.json").read_text())
    assert config["identity"].get("strong") == (None if model == "smollm2-135m" else model)
