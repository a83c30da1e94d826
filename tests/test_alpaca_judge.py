"""The offline reward-model judge: preference direction, AlpacaEval's metrics, leaderboard rows, bad input."""

import csv
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from w2s_eval.alpaca import judge as J
from w2s_eval.cli import main

QUESTIONS = [f"Question number {i}?" for i in range(6)]


def length_scorer(prompts, responses, finished):
    """A judge that prefers longer answers: reward = number of characters."""
    return torch.tensor([float(len(r)) for r in responses])


def _rows(outputs, generator):
    return [
        {"instruction": q, "output": o, "generator": generator, "dataset": "toy"} for q, o in zip(QUESTIONS, outputs)
    ]


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_longer_answers_win_every_time_against_shorter_references():
    model = _rows([f"a long and detailed answer {i}" for i in range(6)], "long")
    ref = _rows(["short"] * 6, "ref")
    res = J.judge_outputs(model, ref, length_scorer, annotator="length")
    m = res["metrics"]
    assert m["n_wins"] == 6 and m["n_wins_base"] == 0 and m["n_draws"] == 0 and m["n_total"] == 6
    assert m["discrete_win_rate"] == 100.0 and m["win_rate"] > 99.99
    # AlpacaEval's convention: output_1 is the reference, output_2 the model, preference 2 = model wins
    for a in res["annotations"]:
        assert a["generator_1"] == "ref" and a["output_1"] == "short" and a["generator_2"] == "long"
        assert a["preference"] == pytest.approx(1 + _sigmoid(len(a["output_2"]) - len(a["output_1"])))
    flipped = J.judge_outputs(ref, model, length_scorer)["metrics"]
    assert flipped["n_wins"] == 0 and flipped["discrete_win_rate"] == 0.0 and flipped["win_rate"] < 0.01


def test_win_rate_is_the_mean_sigmoid_of_reward_differences():
    lengths = [3, 5, 9, 4, 4, 12]
    model = _rows(["m" * n for n in lengths], "mixed")
    ref = _rows(["r" * 5] * 6, "ref")
    m = J.judge_outputs(model, list(reversed(ref)), length_scorer)["metrics"]  # reference order does not matter
    expected = [_sigmoid(n - 5) for n in lengths]
    assert m["win_rate"] == pytest.approx(100 * np.mean(expected))
    assert m["standard_error"] == pytest.approx(100 * pd.Series(expected).sem())
    assert (m["n_wins"], m["n_wins_base"], m["n_draws"]) == (2, 3, 1)  # 9, 12 win; 3, 4, 4 lose; 5 ties


def test_outputs_and_leaderboard_rows_stack(tmp_path):
    ref = _rows(["mid answer"] * 6, "ref")
    board = tmp_path / "board.csv"
    for name, text in (("bon-n4", "a much longer answer here"), ("base", "tiny")):
        res = J.judge_outputs(_rows([text] * 6, name), ref, length_scorer, annotator="length")
        J.write_judgement(res, tmp_path / name, leaderboard=board)
        ann = json.loads((tmp_path / name / "annotations.json").read_text())
        assert len(ann) == 6 and {
            "instruction",
            "output_1",
            "output_2",
            "generator_1",
            "generator_2",
            "preference",
            "annotator",
        } <= set(ann[0])
        single = pd.read_csv(tmp_path / name / "leaderboard.csv", index_col=0)
        assert list(single.index) == [name]
    table = pd.read_csv(board, index_col=0)
    assert list(table.index) == ["bon-n4", "base"]  # sorted by win rate, as AlpacaEval's leaderboards
    assert list(table.columns[:9]) == [
        "win_rate",
        "standard_error",
        "n_wins",
        "n_wins_base",
        "n_draws",
        "n_total",
        "discrete_win_rate",
        "mode",
        "avg_length",
    ]
    assert table.loc["base", "avg_length"] == 4 and set(table["annotator"]) == {"length"}
    # no NaN printed anywhere: the LC cells are empty and the note says why
    text = board.read_text()
    assert "nan" not in text.lower()
    with open(board, newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["length_controlled_winrate"] == "" and r["lc_note"].startswith("not computed:") for r in rows)
    # a row from another judge does not join this table, and nothing is written
    other = J.judge_outputs(_rows(["x"] * 6, "other"), ref, length_scorer, annotator="another-rm")
    with pytest.raises(ValueError, match="same judge and reference"):
        J.write_judgement(other, tmp_path / "other", leaderboard=board)
    assert not (tmp_path / "other").exists() and board.read_text() == text


def test_a_finished_judgement_is_not_overwritten_by_another(tmp_path):
    ref = _rows(["mid"] * 6, "ref")
    res = J.judge_outputs(_rows(["long answer"] * 6, "m"), ref, length_scorer, annotator="length")
    J.write_judgement(res, tmp_path / "j")
    before = (tmp_path / "j" / "annotations.json").read_bytes()
    J.write_judgement(res, tmp_path / "j")  # the same judgement again is fine
    changed = J.judge_outputs(_rows(["other answer"] * 6, "m"), ref, length_scorer, annotator="length")
    with pytest.raises(ValueError, match="pairs_sha256"):
        J.write_judgement(changed, tmp_path / "j")
    assert (tmp_path / "j" / "annotations.json").read_bytes() == before


def test_different_instruction_sets_are_refused():
    model = _rows(["a"] * 6, "m")
    ref = _rows(["b"] * 6, "ref")[:-1] + [{"instruction": "Something else", "output": "b"}]
    with pytest.raises(ValueError, match="different instruction sets"):
        J.judge_outputs(model, ref, length_scorer)
    # a --limit run against the full reference set: refused, unless asked to judge that subset
    part = _rows(["a much longer answer"] * 3, "m")
    with pytest.raises(ValueError, match="3 only in the reference.*--subset"):
        J.judge_outputs(part, _rows(["b"] * 6, "ref"), length_scorer)
    sub = J.judge_outputs(part, _rows(["b"] * 6, "ref"), length_scorer, subset=True)
    assert sub["metrics"]["n_total"] == 3 and [a["instruction"] for a in sub["annotations"]] == QUESTIONS[:3]
    with pytest.raises(ValueError, match="only in the model outputs"):  # subset never invents references
        J.judge_outputs(model, ref, length_scorer, subset=True)
    with pytest.raises(ValueError, match="2 generators"):
        J.judge_outputs(
            _rows(["a"] * 5, "m") + [{"instruction": QUESTIONS[5], "output": "a", "generator": "n"}],
            _rows(["b"] * 6, "ref"),
            length_scorer,
        )


def test_length_controlled_win_rate_when_its_inputs_exist(tmp_path, monkeypatch):
    """AlpacaEval's own LC metric runs on our annotations when the instruction difficulty can be had.

    The hub file is replaced by a local one of the same layout; the instructions' official
    rows are those of the question list.
    """
    import alpaca_eval.metrics.glm_winrate as glm

    rng = np.random.default_rng(0)
    gamed = pd.DataFrame(
        [
            {
                "model": m,
                "index": i,
                "instruction_difficulty": rng.normal(),
                "preference": rng.uniform(),
                "std_delta_len": rng.normal(),
                "not_gamed_baseline": False,
            }
            for m in ("gamed_a", "gamed_b")
            for i in range(len(QUESTIONS))
        ]
    )
    gamed.to_csv(tmp_path / "df_gamed.csv", index=False)
    monkeypatch.setattr(glm, "hf_hub_download", lambda **kw: str(tmp_path / "df_gamed.csv"))
    monkeypatch.setattr(J, "official_instruction_index", lambda: {q: i for i, q in enumerate(QUESTIONS)})
    monkeypatch.setattr(J, "_lc_data_note", lambda: None)
    res = J.judge_outputs(_rows(["x" * (i + 2) for i in range(6)], "m"), _rows(["yyyy"] * 6, "ref"), length_scorer)
    m = res["metrics"]
    assert res["lc_note"] == "computed"
    assert 0.0 <= m["length_controlled_winrate"] <= 100.0 and math.isfinite(m["length_controlled_winrate"])
    assert res["row"]["length_controlled_winrate"] == m["length_controlled_winrate"]


def test_length_controlled_not_computed_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(J, "official_instruction_index", lambda: None)
    res = J.judge_outputs(_rows(["a"] * 6, "m"), _rows(["b"] * 6, "r"), length_scorer)
    assert "fetch-data" in res["lc_note"] and "length_controlled_winrate" not in res["metrics"]
    monkeypatch.setattr(J, "official_instruction_index", lambda: {QUESTIONS[0]: 0})
    assert (
        "5 of 6 instructions are not from the official"
        in J.judge_outputs(_rows(["a"] * 6, "m"), _rows(["b"] * 6, "r"), length_scorer)["lc_note"]
    )
    monkeypatch.setattr(J, "official_instruction_index", lambda: {q: i for i, q in enumerate(QUESTIONS)})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached there
    import alpaca_eval.constants as c

    monkeypatch.setattr(c, "DEFAULT_CACHE_DIR", str(tmp_path / "hf"))
    note = J.judge_outputs(_rows(["a"] * 6, "m"), _rows(["b"] * 6, "r"), length_scorer)["lc_note"]
    assert "instruction difficulty" in note and "offline" in note
    assert (
        J.judge_outputs(_rows(["a"] * 6, "m"), _rows(["b"] * 6, "r"), length_scorer, lc="off")["lc_note"]
        == "not computed: switched off (--lc off)"
    )


def test_cli_judge_with_a_toy_reward_model(toy_dirs, tmp_path, capsys):
    model = tmp_path / "model_outputs.json"
    ref = tmp_path / "ref.json"
    model.write_text(json.dumps(_rows(["the movie was great"] * 6, "toy-cbs")))
    ref.write_text(json.dumps(_rows(["bad film"] * 6, "ref")))
    args = [
        "alpaca-eval",
        "judge",
        "--model-outputs",
        str(model),
        "--reference-outputs",
        str(ref),
        "--reward-model",
        toy_dirs["rm"],
        "--out",
        str(tmp_path / "j"),
        "--leaderboard",
        str(tmp_path / "board.csv"),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "win rate" in out and "length-controlled win rate not computed" in out and "nan" not in out.lower()
    ann = json.loads((tmp_path / "j" / "annotations.json").read_text())
    rm = J.load_reward_scorer(toy_dirs["rm"], dtype="float32", device="cpu")  # the chat-templated RM score
    r_model = rm(QUESTIONS, ["the movie was great"] * 6, [True] * 6)
    r_ref = rm(QUESTIONS, ["bad film"] * 6, [True] * 6)
    assert [a["instruction"] for a in ann] == QUESTIONS
    assert [a["preference"] for a in ann] == pytest.approx((1 + torch.sigmoid(r_model - r_ref)).tolist())
    assert [a["reward_2"] for a in ann] == pytest.approx(r_model.tolist())
    table = pd.read_csv(tmp_path / "board.csv", index_col=0)
    assert list(table.index) == ["toy-cbs"] and table.loc["toy-cbs", "n_total"] == 6


def test_cli_judge_refuses_a_multi_label_model_and_writes_nothing(toy_dirs, tmp_path, capsys):
    model = tmp_path / "m.json"
    model.write_text(json.dumps(_rows(["a"] * 6, "m")))
    args = [
        "alpaca-eval",
        "judge",
        "--model-outputs",
        str(model),
        "--reference-outputs",
        str(model),
        "--reward-model",
        toy_dirs["clf"],
        "--out",
        str(tmp_path / "j"),
        "--device",
        "cpu",
    ]
    assert main(args) == 2
    assert "has 2 outputs" in capsys.readouterr().err
    assert not (tmp_path / "j").exists()
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps([{"instruction": "q"}]))
    args[args.index("--reference-outputs") + 1] = str(missing)
    assert main(args) == 2
    assert "field 'output' is missing" in capsys.readouterr().err
