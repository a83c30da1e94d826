"""``--strong`` / ``strong=`` means the same in every front end: a registered name (made once into the cache), a
local directory or a hub id, read by one function (``w2s_eval.world.strong.resolve_strong``)."""

import argparse

import pytest
from harness_toyworld import load_toy, write_home

import w2s_eval.world.strong as strong_models
from w2s_eval.world.strong import STRONG_MODELS, resolve_strong

NAME = "smollm2-135m"


@pytest.fixture
def registered(monkeypatch, toy_dirs):
    """Registered names resolve to the toy strong model's directory (no wheels fetched); the calls are recorded."""
    calls = []

    def fake(name, cache_dir=None, wheel_dir=None):
        calls.append(name)
        return toy_dirs["strong"]

    monkeypatch.setattr(strong_models, "resolve_strong_model", fake)
    return calls


def test_resolve_strong_reads_names_paths_and_hub_ids(registered, toy_dirs, tmp_path):
    assert resolve_strong(NAME) == str(toy_dirs["strong"])
    assert resolve_strong(STRONG_MODELS[NAME].hub_id) == str(toy_dirs["strong"])  # its hub id: the same model
    assert resolve_strong(str(tmp_path)) == str(tmp_path)  # a local directory
    assert resolve_strong("someone/another-model") == "someone/another-model"  # any other hub id
    assert resolve_strong(None) is None
    assert registered == [NAME, STRONG_MODELS[NAME].hub_id]


def test_every_front_end_reads_a_registered_name_the_same_way(registered, toy_dirs, tmp_path):
    from w2s_eval.alpaca.decoder import build_alpaca_engine
    from w2s_eval.alpaca.genconfig import GenerationConfig
    from w2s_eval.harness.plan import make_run_config
    from w2s_eval.lm_eval_backend.backend import W2SLM
    from w2s_eval.serve.cli import add_commands

    want = str(toy_dirs["strong"])
    lm = W2SLM(strong=NAME, method="base", dtype="float32", device="cpu")
    assert lm.engine.policy.lm.model.name_or_path == want
    alpaca = build_alpaca_engine(GenerationConfig(strong=NAME, method="base", dtype="float32"), device="cpu")
    assert alpaca.engine.policy.lm.model.name_or_path == want
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    from w2s_eval.serve.cli import build_server

    app = build_server(
        parser.parse_args(["serve", "--strong", NAME, "--method", "base", "--dtype", "float32", "--device", "cpu"])
    )
    assert app.app.state.server.engine.policy.lm.model.name_or_path == want  # the Guard wraps the FastAPI app
    world = load_toy(write_home(tmp_path / "home", toy_dirs))
    assert make_run_config(world, "base", strong=NAME, home=tmp_path / "home").engine.strong == want
    assert registered == [NAME] * 4
