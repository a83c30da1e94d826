"""scripts/ifeval_mini_alpaca.py on a toy world (the tiny models in the world's layout): AlpacaEval generation with
the world's guides and the offline reward-model judge into leaderboard rows, through the real ``w2s-eval`` CLI."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from w2s_eval.world import ifeval_data as d

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "ifeval_mini_alpaca.py"


def _script():
    spec = importlib.util.spec_from_file_location("ifeval_mini_alpaca", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _toy_world(root: Path, toy_dirs, instructions: list[str]) -> Path:
    world = root / "ifeval-mini"
    (world / "data").mkdir(parents=True)
    for part, key in (("strong", "strong"), ("tuned", "tuned"), ("untuned", "untuned"), ("reward_model", "rm")):
        (world / part).symlink_to(toy_dirs[key])
    (world / "data" / "heldout.jsonl").write_text(
        "".join(json.dumps({"instruction": i, "reference": "x"}) + "\n" for i in instructions), encoding="utf-8"
    )
    return world


def test_method_specs_split_and_name_directories():
    s = _script()
    assert s.split_methods("base,bon:n=4,cbs:w=2,k=2,l=16,eft:beta=0.5") == [
        "base",
        "bon:n=4",
        "cbs:w=2,k=2,l=16",
        "eft:beta=0.5",
    ]
    assert [s.slug(m) for m in ("base", "bon:n=4", "cbs:w=2,k=2,l=16")] == ["base", "bon-n4", "cbs-w2-k2-l16"]


def test_dry_run_writes_inputs_and_commands(tmp_path, toy_dirs, ifeval_home, monkeypatch):
    monkeypatch.setenv("W2S_EVAL_HOME", str(ifeval_home))
    rows = d.load_alpaca_rows(cache=ifeval_home)
    world = _toy_world(tmp_path, toy_dirs, [r["instruction"] for r in rows[-4:]])
    out = tmp_path / "out"
    assert _script().main(["--world-dir", str(world), "--out", str(out), "--limit", "3", "--dry-run"]) == 0
    ref = json.loads((out / "reference_gpt4.json").read_text())
    assert ref == rows[-4:-1]  # GPT-4's answers to exactly the held-out instructions, in their order
    assert [r["instruction"] for r in json.loads((out / "instructions.json").read_text())] == [
        r["instruction"] for r in rows[-4:-1]
    ]
    cmds = (out / "commands.sh").read_text().splitlines()
    assert len(cmds) == 3 + 3 + 2  # generate per method, judge vs GPT-4 per method, judge vs base per non-base
    assert "--reward-model " + str(world.resolve() / "reward_model") in cmds[-1]
    assert "weighted_alpaca_eval_gpt4_turbo" in (out / "official_judge.sh").read_text()


def test_instructions_outside_alpaca_eval_are_refused(tmp_path, toy_dirs, ifeval_home, monkeypatch):
    monkeypatch.setenv("W2S_EVAL_HOME", str(ifeval_home))
    world = _toy_world(tmp_path, toy_dirs, ["Not an AlpacaEval instruction."])
    with pytest.raises(SystemExit, match="not AlpacaEval's"):
        _script().main(["--world-dir", str(world), "--out", str(tmp_path / "out"), "--dry-run"])


@pytest.mark.slow
def test_generate_and_judge_into_leaderboard_rows(tmp_path, toy_dirs, ifeval_home):
    rows = d.load_alpaca_rows(cache=ifeval_home)
    world = _toy_world(tmp_path, toy_dirs, [r["instruction"] for r in rows[:3]])
    out = tmp_path / "out"
    env = {
        **os.environ,
        "W2S_EVAL_HOME": str(ifeval_home),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    p = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--world-dir",
            str(world),
            "--out",
            str(out),
            "--limit",
            "3",
            "--methods",
            "base,cbs:w=2,k=2,l=4",
            "--max-new-tokens",
            "8",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    for m in ("base", "cbs-w2-k2-l4"):
        outputs = json.loads((out / m / "model_outputs.json").read_text())
        assert [o["instruction"] for o in outputs] == [r["instruction"] for r in rows[:3]]
        assert all(o["generator"] == f"ifeval-mini__{m}" for o in outputs)
    with open(out / "leaderboard.csv", newline="") as f:
        board = {r[""]: r for r in csv.DictReader(f)}  # the first column (no header) names the row
    assert set(board) == {"base", "cbs-w2-k2-l4"}
    for row in board.values():
        assert row["n_total"] == "3" and 0 <= float(row["win_rate"]) <= 100
        assert str(world.resolve() / "reward_model") in row["annotator"]
    with open(out / "leaderboard_vs_base.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1
    judge = json.loads((out / "cbs-w2-k2-l4" / "judge_vs_base" / "judge.json").read_text())
    assert judge["metrics"]["n_total"] == 3


def test_committed_leaderboards_follow_from_their_annotations():
    """results/ifeval-mini-alpaca: every leaderboard row is AlpacaEval's get_winrate of that judgement's committed
    annotations, and each judged pair holds the committed outputs of both sides."""
    from alpaca_eval.metrics import get_winrate

    root = REPO / "results" / "ifeval-mini-alpaca"
    outputs = {
        m: {o["instruction"]: o["output"] for o in json.loads((root / m / "model_outputs.json").read_text())}
        for m in ("base", "bon-n4", "cbs-w2-k2-l16")
    }
    gpt4 = {r["instruction"]: r["output"] for r in json.loads((root / "reference_gpt4.json").read_text())}
    for board, sub, reference in (
        ("leaderboard.csv", "judge_vs_gpt4", gpt4),
        ("leaderboard_vs_base.csv", "judge_vs_base", outputs["base"]),
    ):
        with open(root / board, newline="", encoding="utf-8") as f:
            rows = {r[""]: r for r in csv.DictReader(f)}
        assert rows
        for name, row in rows.items():
            annotations = json.loads((root / name / sub / "annotations.json").read_text())
            assert len(annotations) == int(row["n_total"]) == 32
            for a in annotations:
                assert a["output_2"] == outputs[name][a["instruction"]] and a["output_1"] == reference[a["instruction"]]
            got = get_winrate(annotations)
            for key in ("win_rate", "standard_error", "discrete_win_rate"):
                assert float(row[key]) == pytest.approx(got[key], rel=1e-9)
            assert (int(row["n_wins"]), int(row["n_wins_base"])) == (got["n_wins"], got["n_wins_base"])
