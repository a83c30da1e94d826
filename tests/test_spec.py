"""EngineSpec: the one description of an engine, its validation, and the front ends made from it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from dataclasses import fields

import pytest

from w2s_eval.checks import SpecError, spelled
from w2s_eval.config import parse_method
from w2s_eval.flags import add_spec_arguments, command_line, spec_from_namespace
from w2s_eval.lm_eval_backend.values import spec_from_mapping
from w2s_eval.spec import EngineSpec


def test_every_field_has_help_and_one_default():
    for f in fields(EngineSpec):
        assert f.metadata.get("help"), f"{f.name} has no help"
    spec = EngineSpec(strong="s")
    assert spec.tuned == () and spec.beta == 1.0 and spec.rm_weight == 1.0 and spec.dtype == "auto"
    assert spec.device is None and spec.tuned_template == "{prompt}" and spec.load_in_4bit is False


def test_normalises_and_round_trips():
    spec = EngineSpec(strong="s", tuned="t", untuned="u", device="auto")
    assert spec.tuned == ("t",) and spec.device is None
    d = spec.to_dict()
    assert d["tuned"] == ["t"] and json.loads(json.dumps(d)) == d
    assert EngineSpec.from_dict(d) == spec
    assert "device" not in spec.identity() and "dtype" in spec.identity()
    with pytest.raises(SpecError, match="unknown setting.*bogus"):
        EngineSpec.from_dict({**d, "bogus": 1})


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({}, "no strong model"),
        ({"strong": "s", "strong_endpoint": "http://h:1/v1"}, "not both"),
        ({"strong_endpoint": "127.0.0.1:8000/v1"}, "must be an http"),
        ({"strong": "s", "strong_model": "m"}, "strong_model='m' names a served model"),
        ({"strong": "s", "tuned": "t"}, "both tuned and untuned"),
        ({"strong": "s", "untuned": "u"}, "both tuned and untuned"),
        ({"strong": "s", "beta": math.inf}, "beta must be a finite number"),
        ({"strong": "s", "beta": math.nan}, "beta must be a finite number"),
        ({"strong": "s", "rm_weight": math.nan}, "rm_weight must be a finite number"),
        ({"strong": "s", "beta": "high"}, "beta must be a number"),
        ({"strong": "s", "dtype": "float8"}, "dtype='float8' is unknown"),
        ({"strong": "s", "device": "gpu0"}, "device='gpu0' is not a device"),
        ({"strong": "s", "tuned_template": "no placeholder"}, "tuned_template must be"),
        ({"strong": "s", "tuned_template": "x {prompt} {"}, "tuned_template='x {prompt} {' is not a valid format"),
        ({"strong": "s", "untuned_template": "{prompt} {other}"}, "untuned_template=.* is not a valid format"),
    ],
)
def test_bad_settings_name_the_field(kwargs, needle):
    with pytest.raises(SpecError, match=needle):
        EngineSpec(**kwargs)


def test_check_method_without_io():
    local, served = EngineSpec(strong="s"), EngineSpec(strong_endpoint="http://h:1/v1")
    local.check_method(parse_method("base"))
    with pytest.raises(SpecError, match="needs a guide"):
        local.check_method(parse_method("cbs:w=2,k=2,l=3"))
    with pytest.raises(SpecError, match="eft needs a tuned and an untuned"):
        EngineSpec(strong="s", reward_model="rm").check_method(parse_method("eft:beta=1"))
    with pytest.raises(
        SpecError, match="EFT needs full next-token distributions of the strong model, which an endpoint"
    ):
        EngineSpec(strong_endpoint="http://h:1/v1", tuned="t", untuned="u").check_method(parse_method("eft:beta=1"))
    served.check_method(parse_method("base"))
    EngineSpec(strong="s", tuned="t", untuned="u", beta=0).check_method(parse_method("bon:n=2"))


def test_from_mapping_coerces_lm_eval_values():
    spec = spec_from_mapping(
        {
            "strong": "s",
            "tuned": "a|b",
            "untuned": "u",
            "beta": "0.5",
            "rm_weight": 2,
            "load_in_4bit": "true",
            "device_map": True,
            "dtype": None,
        }
    )
    assert spec.tuned == ("a", "b") and spec.beta == 0.5 and spec.rm_weight == 2.0 and spec.load_in_4bit is True
    assert spec.device_map == "auto" and spec.dtype == "auto"
    with pytest.raises(SpecError, match="model_args: strong is given twice"):
        spec_from_mapping([("strong", "a"), ("strong", "b")])
    with pytest.raises(SpecError, match=r"unknown model_args key\(s\) bogus; valid keys: beta, device"):
        spec_from_mapping({"strong": "s", "bogus": 1})
    with pytest.raises(SpecError, match="beta must be a finite number"):
        spec_from_mapping({"strong": "s", "beta": "inf"})
    with pytest.raises(SpecError, match="beta must be a number, got 'x'"):
        spec_from_mapping({"strong": "s", "beta": "x"})
    with pytest.raises(SpecError, match="load_in_4bit must be true or false"):
        spec_from_mapping({"strong": "s", "load_in_4bit": "maybe"})


def _parser(**kw):
    p = argparse.ArgumentParser()
    add_spec_arguments(p, **kw)
    return p


def test_flags_come_from_the_fields():
    p = _parser()
    ns = p.parse_args(
        [
            "--strong",
            "s",
            "--tuned",
            "a",
            "--tuned",
            "b",
            "--untuned",
            "u",
            "--beta",
            "0.5",
            "--load-in-4bit",
            "--device",
            "cpu",
        ]
    )
    spec = spec_from_namespace(ns)
    assert spec == EngineSpec(strong="s", tuned=("a", "b"), untuned="u", beta=0.5, load_in_4bit=True, device="cpu")
    assert spec_from_namespace(p.parse_args(["--strong", "s"])) == EngineSpec(strong="s")
    flags = {a.dest for a in p._actions}
    assert {f.name for f in fields(EngineSpec)} <= flags
    p2 = _parser(exclude=("strong", "device"), defaults={"tuned_template": "auto"}, require_strong=False)
    ns = p2.parse_args([])
    assert not hasattr(ns, "strong") and ns.tuned_template == "auto"
    assert spec_from_namespace(ns, strong="w").tuned_template == "auto"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (
            ["--strong", "s", "--tuned-template", "x {prompt} {"],
            "--tuned-template 'x {prompt} {' is not a valid format",
        ),
        (["--strong", "s", "--beta", "nan"], "beta must be a finite number"),
        (["--strong", "s", "--strong-model", "m"], "--strong-model goes with --strong-endpoint URL"),
        (["--strong", "s", "--tuned", "t"], "give both tuned and untuned guide models"),
        (["--strong-endpoint", "h:1"], "--strong-endpoint must be an http"),
    ],
)
def test_cli_messages_name_the_flag(argv, needle):
    with pytest.raises(SpecError) as e:
        spec_from_namespace(_parser().parse_args(argv))
    assert needle in str(e.value)


def test_messages_spell_settings_as_the_front_end_does():
    """A message is made with the front end's spelling (no rewriting): Python and lm-eval ``name=value``, a command
    line ``--flag value`` for its own flags; a name that is not one of its flags keeps the Python spelling."""
    with pytest.raises(SpecError) as python:
        EngineSpec(strong="s", strong_endpoint="http://h:1/v1")
    assert "strong='s' (local) or as strong_endpoint='http://h:1/v1'" in str(python.value)
    assert str(python.value).endswith("name the served model with strong_model=")
    with command_line(["strong", "strong_endpoint", "strong_model"]), pytest.raises(SpecError) as cli:
        EngineSpec(strong="s", strong_endpoint="http://h:1/v1")
    assert "--strong 's' (local) or as --strong-endpoint 'http://h:1/v1'" in str(cli.value)
    assert str(cli.value).endswith("name the served model with --strong-model")
    with command_line(["tuned"]), pytest.raises(SpecError, match="set both --tuned and untuned=$"):
        EngineSpec(strong="s", tuned=("t",))
    assert spelled("tuned", "") == "tuned="  # outside the block: Python's spelling again


# ----------------------------------------------------------------------------- build_engine(spec) and guide data


def test_build_engine_from_a_spec_holds_its_guides_as_data(toy_dirs, toy):
    import torch

    from w2s_eval.config import SamplingConfig
    from w2s_eval.engine import Engine, build_engine
    from w2s_eval.guide import GuideLM, ImplicitValueScorer

    spec = EngineSpec(
        strong=toy_dirs["strong"],
        tuned=(toy_dirs["tuned"],),
        untuned=toy_dirs["untuned"],
        beta=0.7,
        reward_model=toy_dirs["rm"],
        rm_weight=0.5,
        dtype="float32",
        device="cpu",
    )
    eng = build_engine(spec)
    assert eng.spec == spec and [(w, kind) for w, kind, _ in eng.guides] == [(0.7, "implicit"), (0.5, "reward_model")]
    implicit = eng.guides[0].scorer
    assert implicit.tuned.lm.name.startswith("tuned:") and implicit.untuned.lm.name.startswith("untuned:")
    # the guide is the weighted sum of its terms; the implicit term equals the paper's beta * (tuned - untuned)
    prompts, responses, done = ["the film", "a story"], [" was good", " ends"], [True, False]
    want = ImplicitValueScorer(GuideLM(toy["tuned"]), GuideLM(toy["untuned"]), 0.7)(prompts, responses, done)
    rm = eng.guides[1].scorer(prompts, responses, done)
    got = eng.scorer(prompts, responses, done)
    assert torch.allclose(got, want + 0.5 * rm, rtol=1e-9, atol=0)
    # the keyword form builds the same spec
    kw = build_engine(
        toy_dirs["strong"],
        tuned=toy_dirs["tuned"],
        untuned=toy_dirs["untuned"],
        beta=0.7,
        reward_model=toy_dirs["rm"],
        rm_weight=0.5,
        dtype="float32",
        device="cpu",
    )
    assert kw.spec == spec
    # beta=0 beside a reward model: the pair serves EFT only; every term of weight 0: all scores 0
    rm_spec = build_engine(dataclasses.replace(spec, beta=0.0, rm_weight=1.0))
    assert [(w, kind) for w, kind, _ in rm_spec.guides] == [(1.0, "reward_model")] and rm_spec.tuned
    zero = build_engine(dataclasses.replace(spec, beta=0.0, reward_model=None))
    assert [w for w, _, _ in zero.guides] == [0.0] and not zero.scorer(prompts, responses, done).any()
    # a guide built by hand from the same parts: only the reward model ranks candidates
    rm_only = Engine(
        eng.policy, guides=[(1.0, "reward_model", eng.guides[1].scorer)], tuned=eng.tuned, untuned=eng.untuned
    )
    assert rm_only.scorer is eng.guides[1].scorer and rm_only.guides[0].kind == "reward_model"
    sampling = SamplingConfig(max_new_tokens=3, seed=1)
    assert len(rm_only.generate(["x"], "eft:beta=1", sampling)) == 1
    no_guide = Engine(eng.policy, tuned=eng.tuned, untuned=eng.untuned)
    with pytest.raises(ValueError, match="needs a guide"):
        no_guide.generate(["x"], "bon:n=2", sampling)
    with pytest.raises(ValueError, match="guide kind 'judge' is unknown"):
        Engine(eng.policy, guides=[(1.0, "judge", eng.scorer)])
    with pytest.raises(ValueError, match="guide weight must be a finite number"):
        Engine(eng.policy, guides=[(math.nan, "custom", eng.scorer)])


def test_guide_prompts_are_what_the_guides_read(toy_dirs):
    from w2s_eval.config import SamplingConfig
    from w2s_eval.engine import Engine, build_engine

    seen = []

    def scorer(prompts, responses, finished):
        seen.extend(prompts)
        return [float(len(r)) for r in responses]

    strong = build_engine(EngineSpec(strong=toy_dirs["strong"], dtype="float32", device="cpu")).policy
    eng = Engine(strong, scorer)
    cfg = SamplingConfig(max_new_tokens=3, seed=0)
    plain = eng.generate(["<t>a</t>", "<t>b</t>"], "bon:n=2", cfg)
    assert set(seen) == {"<t>a</t>", "<t>b</t>"}
    seen.clear()
    guided = eng.generate(["<t>a</t>", "<t>b</t>"], "bon:n=2", cfg, guide_prompts=["a", "b"])
    assert set(seen) == {"a", "b"} and [r.text for r in guided] == [r.text for r in plain]
    assert [r.prompt for r in guided] == ["<t>a</t>", "<t>b</t>"]
    with pytest.raises(ValueError, match="got 1 guide_prompts for 2 prompts"):
        eng.generate(["a", "b"], "bon:n=2", cfg, guide_prompts=["a"])


def test_a_bare_string_is_not_a_list_of_prompts(toy_dirs):
    from w2s_eval.config import SamplingConfig
    from w2s_eval.engine import build_engine

    eng = build_engine(EngineSpec(strong=toy_dirs["strong"], dtype="float32", device="cpu"))
    with pytest.raises(TypeError, match=r"prompts must be a list of strings, got one string \('the film'\)"):
        eng.generate("the film", "base", SamplingConfig(max_new_tokens=2))


def test_context_hint_is_the_fix_that_applies(toy_dirs):
    """Issue 12 item 5 (API): truncation='left' cannot help when max_new_tokens alone fills the context
    (512 for the toy), so the hint is to lower max_new_tokens, never to set truncation='left'."""
    from w2s_eval.config import SamplingConfig
    from w2s_eval.engine import build_engine

    eng = build_engine(EngineSpec(strong=toy_dirs["strong"], dtype="float32", device="cpu"))
    for truncation, new in (("left", 512), ("left", 600), ("error", 512)):
        with pytest.raises(ValueError, match="context of 512") as e:
            eng.generate(["the film"], "base", SamplingConfig(max_new_tokens=new, truncation=truncation))
        assert f"max_new_tokens={new} leaves no room for the prompt: lower max_new_tokens below 512" in str(e.value)
        n = int(re.match(r"prompt of (\d+) tokens", str(e.value)).group(1))
        assert f"(at most {512 - n} keeps this whole prompt)" in str(e.value) and "truncation" not in str(e.value)
    with pytest.raises(ValueError, match="shorten the prompt, lower max_new_tokens, or set truncation='left'"):
        eng.generate(["the film " * 300], "base", SamplingConfig(max_new_tokens=8, truncation="error"))


def test_a_method_is_prepared_once(toy_dirs):
    from w2s_eval.config import SamplingConfig
    from w2s_eval.engine import build_engine

    a = build_engine(EngineSpec(strong=toy_dirs["strong"], dtype="float32", device="cpu"))
    run = a.prepare("base")
    assert a.prepare(run) is run and run.spec == "base"
    assert len(a.generate(["x", "y"], run, SamplingConfig(max_new_tokens=2))) == 2
    b = build_engine(EngineSpec(strong=toy_dirs["strong"], dtype="float32", device="cpu"))
    with pytest.raises(ValueError, match="prepared by another engine"):
        b.generate(["x"], run, SamplingConfig(max_new_tokens=2))


def test_lm_eval_model_args_refuse_non_finite_weights():
    """issue 12 item 3: at parse time, naming the key (before any model loads)."""
    from w2s_eval.lm_eval_backend.args import parse_model_args

    for key, value in (("beta", "inf"), ("beta", math.nan), ("rm_weight", "nan"), ("rm_weight", -math.inf)):
        with pytest.raises(ValueError, match=f"w2s: {key} must be a finite number"):
            parse_model_args({"strong": "s", "tuned": "t", "untuned": "u", key: value})
    with pytest.raises(ValueError, match="w2s: tuned_template='{prompt} {' is not a valid format string"):
        parse_model_args({"strong": "s", "tuned_template": "{prompt} {"})


def test_build_engine_checks_every_model_path_before_loading(tmp_path):
    from w2s_eval.engine import build_engine

    with pytest.raises(SpecError, match="beta must be a finite number"):
        build_engine("/nope/strong", beta=math.inf)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(SpecError, match=f"untuned='{tmp_path}/nope' does not exist"):
        build_engine(str(model), tuned=str(model), untuned=str(tmp_path / "nope"))
    with pytest.raises(SpecError, match=f"strong='{tmp_path}' is a directory but not a model"):
        build_engine(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="strong='/nope/strong' does not exist"):
        build_engine("/nope/strong")
