"""`w2s-eval compare` with the strong model behind an OpenAI-compatible server (the fake server of
``_endpoint_fakes``, loopback, fast) on the toy world, whose guides stay local."""

import json

import pytest
from _endpoint_fakes import WORDS, FakeOpenAIServer
from harness_toyworld import PROMPTS, gold_e_count, judge_space_count, make_world, write_home

from w2s_eval.cli import main
from w2s_eval.harness.compare import run_compare
from w2s_eval.harness.plan import make_run_config
from w2s_eval.harness.records import CONFIG_FILE, RECORDS_FILE, RunConfig, read_records

METHODS = "base,bon:n=2,cbs:w=1,k=2,l=3"


@pytest.fixture
def fake():
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def toy_home(tmp_path, toy_dirs, monkeypatch):
    monkeypatch.setenv("W2S_EVAL_WORLD_MODULES", "harness_toyworld")
    return write_home(tmp_path / "home", toy_dirs)


def _compare(home, out, *extra, methods=METHODS, prompts="2"):
    return main(
        [
            "compare",
            "--world",
            "toy",
            "--world-home",
            str(home),
            "--methods",
            methods,
            "--prompts",
            prompts,
            "--seeds",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--max-new-tokens",
            "5",
            "--no-progress",
            *extra,
        ]
    )


def _fake_text(text: str) -> bool:
    """Made only of the fake server's words (so it came from the endpoint, not from the world's strong model)."""
    rest = text
    while rest:
        word = next((w for w in WORDS if rest.startswith(w)), None)
        if word is None:
            return False
        rest = rest[len(word) :]
    return True


def test_compare_over_an_endpoint_records_it_and_resumes(fake, toy_home, tmp_path, capsys):
    out = tmp_path / "run"
    assert _compare(toy_home, out, "--strong-endpoint", fake.url) == 0  # no --strong-model: the server's only one
    records, tail = read_records(out / RECORDS_FILE)
    assert tail is None and len(records) == 2 * 3
    assert sorted({r["method"] for r in records}) == sorted(METHODS.split(",")[:2] + ["cbs:w=1,k=2,l=3"])
    for r in records:
        assert (r["config"]["strong_endpoint"], r["config"]["strong_model"]) == (fake.url, "fake")
        assert r["strong_engine"]["base_url"] == fake.url and r["strong_engine"]["model"] == "fake"
        assert _fake_text(r["response"]) and r["strong_tokens"] > 0
        assert r["gold"] == gold_e_count([r["prompt"]], [r["response"]])[0]
        assert r["judge"] == judge_space_count([r["prompt"]], [r["response"]])[0]
        assert r["guide_score"] is not None
    identity = json.loads((out / CONFIG_FILE).read_text())["identity"]
    assert (identity["strong_endpoint"], identity["strong_model"]) == (fake.url, "fake")
    # what was asked of the server: base n=1, BoN(2) n=2, CBS(1,2,3) n=2 chunks of 3 tokens
    texts = set(PROMPTS[:2])
    first = [b for b in fake.bodies if b["prompt"] in texts]
    assert sorted((b["n"], b["max_tokens"]) for b in first) == sorted([(1, 5)] * 2 + [(2, 5)] * 2 + [(2, 3)] * 2)
    assert "report.md" in capsys.readouterr().out and (out / "report.md").exists()
    assert "served by an endpoint" in (out / "report.md").read_text()  # its token counts are not local ones
    # a rerun resumes: nothing new, nothing sent
    n_sent = len(fake.bodies)
    assert _compare(toy_home, out, "--strong-endpoint", fake.url, "--strong-model", "fake") == 0
    assert "0 new" in capsys.readouterr().out and len(fake.bodies) == n_sent


def test_local_and_endpoint_results_are_not_mixed(fake, toy_home, tmp_path, capsys):
    local, extra = tmp_path / "local", "--no-report"
    assert _compare(toy_home, local, extra, methods="base", prompts="1") == 0
    before = (local / RECORDS_FILE).read_text()
    assert _compare(toy_home, local, "--strong-endpoint", fake.url, extra, methods="base", prompts="1") == 2
    err = capsys.readouterr().err
    assert f"strong_endpoint is '<missing>' there but {fake.url!r} now" in err
    assert (local / RECORDS_FILE).read_text() == before and not fake.bodies
    served = tmp_path / "served"
    assert _compare(toy_home, served, "--strong-endpoint", fake.url, extra, methods="base", prompts="1") == 0
    assert _compare(toy_home, served, extra, methods="base", prompts="1") == 2
    assert f"strong_endpoint is {fake.url!r} there but '<missing>' now" in capsys.readouterr().err


def test_eft_over_an_endpoint_fails_before_anything_runs(fake, toy_home, tmp_path, capsys):
    out = tmp_path / "run"
    for methods in ("base,eft:beta=1", "base,bon:n=16,eft:beta=1.0,cbs:w=4,k=4,l=5"):  # the default methods too
        assert _compare(toy_home, out, "--strong-endpoint", fake.url, "--strong-model", "fake", methods=methods) == 2
        err = capsys.readouterr().err
        assert "EFT needs full next-token distributions of the strong model" in err and fake.url in err
    assert not out.exists() and not fake.bodies


def test_bad_endpoint_settings_are_clear(fake, toy_home, tmp_path, capsys):
    assert _compare(toy_home, tmp_path / "a", "--strong-model", "fake") == 2
    assert "--strong-model names a served model; give it with --strong-endpoint" in capsys.readouterr().err
    assert _compare(toy_home, tmp_path / "b", "--strong-endpoint", "localhost:8000") == 2
    assert "--strong-endpoint must be an http(s) URL" in capsys.readouterr().err  # the command line spells its flag
    assert (
        _compare(toy_home, tmp_path / "c", "--strong-endpoint", fake.url, "--strong-model", "nope", methods="base") == 2
    )
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "c" / RECORDS_FILE).exists() or not (tmp_path / "c" / RECORDS_FILE).read_text()


def test_run_config_and_api_with_an_endpoint(fake, toy_dirs, tmp_path):
    world = make_world(toy_dirs)
    cfg = make_run_config(world, "base,bon:n=2", 1, 1, strong_endpoint=fake.url, max_new_tokens=4)
    assert cfg.strong_model == "fake" and cfg.identity()["strong_endpoint"] == fake.url
    local = make_run_config(world, "base", 1, 1)
    assert "strong_endpoint" not in local.identity() and local.config_hash != cfg.config_hash
    with pytest.raises(ValueError, match="strong_model='fake' names a served model"):
        RunConfig(
            world="w",
            world_fingerprint="f",
            methods=("base",),
            n_prompts=1,
            seeds=(0,),
            sampling=local.sampling,
            engine=local.engine.engine_spec(strong_model="fake"),
        )
    outcome = run_compare(world, cfg, tmp_path / "run", progress=False)
    assert outcome.n_new == 2 and all(
        _fake_text(r["response"]) for r in read_records(tmp_path / "run" / RECORDS_FILE)[0]
    )


def test_demo_over_an_endpoint_leaves_eft_out(fake, toy_home, tmp_path, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--world",
        "toy",
        "--world-home",
        str(toy_home),
        "--prompts",
        "1",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--strong-endpoint",
        fake.url,
    ]
    assert main(argv) == 0
    records, _ = read_records(out / RECORDS_FILE)
    assert sorted(r["method"] for r in records) == sorted(["base", "bon:n=16", "cbs:w=4,k=4,l=5"])
    assert all(_fake_text(r["response"]) and r["strong_engine"]["base_url"] == fake.url for r in records)
    assert "eft needs the strong model's full logits" in capsys.readouterr().err
