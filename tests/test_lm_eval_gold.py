"""The gold reward is stored as data and loaded without unpickling (issue 12 item 8): the same scores as
the trained sklearn model, a crafted pickle never runs, an old world's pickle only after its sha256 check."""

from __future__ import annotations

import json
import pickle
import random

import pytest

from w2s_eval.world.gold import GOLD_FILE, load_gold, save_gold, train_gold

WORDS = {1: ["great", "loved", "wonderful", "superb", "fun"], 0: ["awful", "boring", "hated", "dull", "bad"]}
TEXTS = [
    "A great and wonderful film, I loved it",
    "boring, dull and bad",
    "the plot was fun but the acting awful",
    "",
    "Ünïcode wörds and numbers 42 superb!!",
    "hated hated hated it",
]


def _gold():
    rng = random.Random(0)
    neutral = ["the", "film", "plot", "actor", "was", "and", "it", "movie", "scene", "a"]
    labels = [i % 2 for i in range(200)]
    texts = [" ".join(rng.choice(WORDS[y] + neutral) for _ in range(12)) for y in labels]
    return train_gold(texts, labels, max_features=500)[0]


class _Boom:
    def __reduce__(self):  # unpickling this calls _explode: a crafted gold file
        return (_explode, ())


def _explode():
    raise AssertionError("a pickle was loaded and ran code")


def _world(tmp_path, files: dict):
    (tmp_path / "gold").mkdir(parents=True)
    (tmp_path / "manifest.json").write_text(json.dumps({"steps": {"gold": {"files": files}}}))
    return tmp_path / "gold"


def test_saved_gold_scores_like_the_sklearn_model_without_pickle(tmp_path, monkeypatch):
    gold = _gold()
    path = save_gold(gold, tmp_path)
    assert path == tmp_path / GOLD_FILE and path.read_bytes()[:1] == b"{"
    monkeypatch.setattr(pickle, "load", lambda *a, **k: _explode())
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: _explode())
    again = load_gold(path)
    want, got = gold.texts(TEXTS), again.texts(TEXTS)
    assert len(set(want)) > 3  # the texts score differently
    for a, b in zip(got, want):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    assert load_gold(tmp_path).texts(TEXTS) == got  # the directory works too
    assert again(["A "], ["great film"]) == gold(["A "], ["great film"])


def test_a_world_gold_pkl_written_now_holds_data(tmp_path):
    """The world build keeps the name gold.pkl: the content (JSON data) decides how it loads, not the name."""
    gold = _gold()
    written = save_gold(gold, tmp_path / "gold.pkl")
    assert written == tmp_path / "gold.pkl" and written.read_bytes()[:1] == b"{"
    assert load_gold(written).texts(TEXTS) == gold.texts(TEXTS)
    assert load_gold(tmp_path).texts(TEXTS) == gold.texts(TEXTS)  # the directory of a world's gold step


def test_a_pickle_is_never_loaded_unverified(tmp_path):
    from w2s_eval.assets import sha256_file

    crafted = tmp_path / "evil.pkl"
    crafted.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ValueError, match="refusing to unpickle .*rebuild the world"):
        load_gold(crafted)
    with pytest.raises(ValueError, match="does not match the sha256"):
        load_gold(crafted, sha256="0" * 64)
    # an old world's gold.pkl: read when its manifest records the file's sha256, refused after tampering
    gold = _gold()
    blob = pickle.dumps({"vectorizer": gold.vectorizer, "classifier": gold.classifier})
    folder = _world(tmp_path / "w", {})
    (folder / "gold.pkl").write_bytes(blob)
    folder.parent.joinpath("manifest.json").write_text(
        json.dumps({"steps": {"gold": {"files": {"gold.pkl": sha256_file(folder / "gold.pkl")}}}})
    )
    assert load_gold(folder / "gold.pkl").texts(TEXTS) == gold.texts(TEXTS)
    (folder / "gold.pkl").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ValueError, match="does not match the sha256"):
        load_gold(folder / "gold.pkl")


def test_lm_eval_gold_specs_refuse_pickles(tmp_path, monkeypatch):
    from w2s_eval.lm_eval_backend.scorer_spec import load_scorer

    crafted = tmp_path / "evil.pkl"
    crafted.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_scorer(f"gold:{crafted}")
    gold = _gold()
    path = save_gold(gold, tmp_path)
    assert load_scorer(f"gold:{path}")(["A "], ["great film"]) == gold(["A "], ["great film"])
    # world:NAME checks the gold file against the world's manifest
    from w2s_eval.world.build import world_dir

    monkeypatch.setenv("W2S_EVAL_HOME", str(tmp_path / "home"))
    world = world_dir("imdb-mini")
    (world / "gold").mkdir(parents=True)
    (world / "gold" / "gold.pkl").write_bytes(pickle.dumps(_Boom()))
    (world / "manifest.json").write_text(
        json.dumps({"paths": {"gold": "gold/gold.pkl"}, "steps": {"gold": {"files": {"gold.pkl": "0" * 64}}}})
    )
    with pytest.raises(ValueError, match="does not match the sha256"):
        load_scorer("world:imdb-mini")
    (world / "manifest.json").write_text(json.dumps({"paths": {"gold": "gold/gold.pkl"}, "steps": {}}))
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_scorer("world:imdb-mini")
