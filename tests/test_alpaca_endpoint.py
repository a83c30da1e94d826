"""`w2s-eval alpaca-eval generate` with the strong model behind an OpenAI-compatible server
(the fake server of ``_endpoint_fakes``, loopback, fast) and the toy guides local."""

import json
import logging

import pytest
import yaml
from _alpaca_fixtures import INSTRUCTIONS, write_instructions
from _endpoint_fakes import WORDS, FakeOpenAIServer

from w2s_eval.alpaca.decoder import GenerationConfig, w2s_completions
from w2s_eval.alpaca.generate import OUTPUTS_FILE, RUN_CONFIG_FILE, STATS_FILE
from w2s_eval.cli import main
from w2s_eval.engine import load_tokenizer


@pytest.fixture
def fake():
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def ins_file(tmp_path):
    return write_instructions(tmp_path)


def _generate(out, ins_file, *strong, method="cbs:w=2,k=2,l=3", guides=None, extra=()):
    guides = ["--tuned", guides["tuned"], "--untuned", guides["untuned"]] if guides else []
    return main(
        [
            "alpaca-eval",
            "generate",
            *strong,
            *guides,
            "--method",
            method,
            "--instructions",
            str(ins_file),
            "--out",
            str(out),
            "--max-new-tokens",
            "6",
            "--temperature",
            "1.0",
            "--top-k",
            "0",
            "--dtype",
            "float32",
            "--device",
            "cpu",
            "--batch-size",
            "2",
            "--no-progress",
            *extra,
        ]
    )


def _fake_text(text: str) -> bool:
    """Made only of the fake server's words (so it came from the endpoint, not from a local model)."""
    rest = " " + text
    while rest.strip():
        word = next((w for w in WORDS if rest.startswith(w)), None)
        if word is None:
            return False
        rest = rest[len(word) :]
    return True


def test_generate_over_an_endpoint_with_the_chat_template(fake, toy_dirs, ins_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        _generate(
            out, ins_file, "--strong-endpoint", fake.url, "--strong-tokenizer", toy_dirs["strong"], guides=toy_dirs
        )
        == 0
    )
    host = f"127.0.0.1-{fake.port}-v1"
    generator = f"fake+{host}__cbs-w2-k2-l3"  # the served model's name was asked from the server
    assert f"3 outputs of {generator}" in capsys.readouterr().out
    rows = json.loads((out / OUTPUTS_FILE).read_text())
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in INSTRUCTIONS]
    assert {r["generator"] for r in rows} == {generator}
    assert all(_fake_text(r["output"]) for r in rows)
    # the strong model saw each instruction through its chat template; CBS round 1 asks n=W*K
    tok = load_tokenizer(toy_dirs["strong"])
    templated = {
        tok.apply_chat_template(
            [{"role": "user", "content": r["instruction"]}], tokenize=False, add_generation_prompt=True
        )
        for r in INSTRUCTIONS
    }
    first = [b for b in fake.bodies if b["prompt"] in templated]
    assert {b["prompt"] for b in first} == templated and all(b["n"] == 4 and b["max_tokens"] == 3 for b in first)
    assert all(b["prompt"].startswith("<|user|>") for b in fake.bodies)
    later = [b for b in fake.bodies if b["prompt"] not in templated]
    assert later and all(b["n"] == 2 for b in later)  # later rounds: n=K per kept beam
    for row in rows:  # each output continues a prefix the server generated from the templated instruction
        p = tok.apply_chat_template(
            [{"role": "user", "content": row["instruction"]}], tokenize=False, add_generation_prompt=True
        )
        assert any(b["prompt"].startswith(p) for b in fake.bodies)
    stats = json.loads((out / STATS_FILE).read_text())
    assert len(stats) == 3 and all(s["strong_tokens"] > 0 and s["guide_tokens"] > 0 for s in stats)
    identity = json.loads((out / RUN_CONFIG_FILE).read_text())["identity"]
    assert (identity["strong"], identity["strong_endpoint"], identity["strong_model"]) == (None, fake.url, "fake")
    assert identity["generator"] == generator and identity["strong_tokenizer"] == toy_dirs["strong"]
    entry = yaml.safe_load((out / "configs.yaml").read_text())[generator]
    kwargs = entry["completions_kwargs"]
    assert "model_name" not in kwargs and (kwargs["strong_endpoint"], kwargs["strong_model"]) == (fake.url, "fake")
    # the decoder with the configs.yaml settings gives the same outputs (the fake server is seeded)
    settings = {k: v for k, v in kwargs.items() if k not in ("device", "batch_size")}
    made = w2s_completions([r["instruction"] for r in INSTRUCTIONS], device="cpu", batch_size=2, **settings)
    assert [c.strip() for c in made["completions"]] == [r["output"] for r in rows]
    # a rerun resumes: nothing left, nothing sent
    n_sent = len(fake.bodies)
    assert (
        _generate(
            out,
            ins_file,
            "--strong-endpoint",
            fake.url,
            "--strong-model",
            "fake",
            "--strong-tokenizer",
            toy_dirs["strong"],
            guides=toy_dirs,
        )
        == 0
    )
    assert len(fake.bodies) == n_sent and json.loads((out / OUTPUTS_FILE).read_text()) == rows


def test_without_a_tokenizer_the_raw_instruction_is_sent_and_logged(fake, ins_file, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="w2s_eval.alpaca.decoder"):
        assert (
            _generate(
                tmp_path / "run", ins_file, "--strong-endpoint", fake.url, "--strong-model", "fake", method="base"
            )
            == 0
        )
    assert "without its chat template" in caplog.text and fake.url in caplog.text
    assert sorted(b["prompt"] for b in fake.bodies) == sorted(r["instruction"] for r in INSTRUCTIONS)
    assert all(b["n"] == 1 and b["max_tokens"] == 6 for b in fake.bodies)
    rows = json.loads((tmp_path / "run" / OUTPUTS_FILE).read_text())
    assert len(rows) == 3 and all(_fake_text(r["output"]) for r in rows)


def test_a_directory_of_another_strong_model_is_refused(fake, toy_dirs, ins_file, tmp_path, capsys):
    local = tmp_path / "local"
    assert _generate(local, ins_file, "--strong", toy_dirs["strong"], method="base", extra=("--limit", "1")) == 0
    before = (local / OUTPUTS_FILE).read_text()
    assert _generate(local, ins_file, "--strong-endpoint", fake.url, method="base") == 2
    err = capsys.readouterr().err
    assert f"strong is {toy_dirs['strong']!r} there but None now" in err
    assert (local / OUTPUTS_FILE).read_text() == before and not fake.bodies
    served = tmp_path / "served"
    assert _generate(served, ins_file, "--strong-endpoint", fake.url, method="base", extra=("--limit", "1")) == 0
    with FakeOpenAIServer() as other:  # the same model name on another server is another strong model
        assert _generate(served, ins_file, "--strong-endpoint", other.url, method="base") == 2
        assert not other.bodies
    assert f"strong_endpoint is {fake.url!r} there but {other.url!r} now" in capsys.readouterr().err


def test_bad_combinations_are_refused_before_anything_runs(fake, toy_dirs, ins_file, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit):  # argparse: exactly one of --strong / --strong-endpoint
        _generate(out, ins_file, method="base")
    assert "one of the arguments --strong --strong-endpoint is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _generate(out, ins_file, "--strong", toy_dirs["strong"], "--strong-endpoint", fake.url, method="base")
    assert "not allowed with argument" in capsys.readouterr().err
    cases = [
        (
            ("--strong", toy_dirs["strong"], "--strong-model", "fake"),
            "base",
            (),
            "--strong-model goes with --strong-endpoint",
        ),
        (
            ("--strong", toy_dirs["strong"], "--strong-tokenizer", toy_dirs["strong"]),
            "base",
            (),
            "--strong-tokenizer goes with --strong-endpoint",
        ),
        (("--strong-endpoint", "127.0.0.1:8000/v1"), "base", (), "must be an http(s) URL"),
        (
            ("--strong-endpoint", fake.url),
            "eft:beta=1",
            (),
            "needs full next-token distributions of the strong model, which an endpoint",
        ),
        (("--strong-endpoint", fake.url), "base", ("--chat-template", "on"), "needs the served model's tokenizer"),
    ]
    for strong, method, extra, message in cases:
        guides = toy_dirs if method.startswith("eft") else None
        assert _generate(out, ins_file, *strong, method=method, guides=guides, extra=extra) == 2, message
        assert message in capsys.readouterr().err
    assert not out.exists() and not fake.bodies


def test_generation_config_over_an_endpoint():
    with pytest.raises(ValueError, match="not both"):
        GenerationConfig(strong="s", strong_endpoint="http://h:1/v1")
    with pytest.raises(ValueError, match="no strong model"):
        GenerationConfig(method="base")
    with pytest.raises(ValueError, match="strong_tokenizer is for a strong model behind strong_endpoint"):
        GenerationConfig(strong="s", strong_tokenizer="tok")
    cfg = GenerationConfig(
        strong_endpoint="https://gpu-box:8000/v1",
        strong_model="meta-llama/Llama-3-70B",
        method="bon:n=4",
        reward_model="rm",
    )
    assert cfg.generator == "Llama-3-70B+gpu-box-8000-v1__bon-n4"
    assert cfg.strong_label == "meta-llama/Llama-3-70B at https://gpu-box:8000/v1"
    with pytest.raises(ValueError, match="completions_kwargs.strong .*or strong_endpoint"):
        w2s_completions(["x"], method="base")
