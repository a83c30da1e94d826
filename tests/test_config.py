import pytest

from w2s_eval.config import BaseMethod, BoNMethod, CBSMethod, EFTMethod, SamplingConfig, SearchConfig, parse_method


def test_specs_parse_to_configs_with_budgets():
    assert parse_method("base") == BaseMethod()
    assert parse_method("bon:n=16") == BoNMethod(16)
    assert parse_method("cbs:w=4,k=4,l=5") == CBSMethod(4, 4, 5)
    assert parse_method("cbs:w=2,k=3,l=inf").search == SearchConfig(2, 3, None)
    assert parse_method("eft:beta=1.0") == EFTMethod(1.0)
    assert parse_method("eft:beta=0.5/1").betas == (0.5, 1.0)
    assert parse_method("bon:n=16").budget == parse_method("cbs:w=4,k=4,l=5").budget == 16
    assert parse_method("bon:n=8").search == SearchConfig(1, 8, None)
    assert parse_method("base").search == SearchConfig(1, 1, None)
    for spec in ("base", "bon:n=16", "cbs:w=4,k=4,l=5", "cbs:w=1,k=2,l=inf", "eft:beta=1"):
        assert parse_method(parse_method(spec).spec) == parse_method(spec)


@pytest.mark.parametrize("spec,needle", [
    ("cbs:w=0,k=4,l=5", "w must be a positive integer"),
    ("cbs:w=4,k=-1,l=5", "k must be a positive integer"),
    ("cbs:w=4,k=4,l=0", "l must be a positive integer"),
    ("bon:n=0", "n must be a positive integer"),
    ("eft:beta=abc", "beta must be a number"),
    ("eft:beta=nan", "beta must be a finite number"),
    ("beam:w=2", "unknown method 'beam'"),
    ("cbs:w=4,q=2", "unknown parameter 'q'"),
    ("cbs:w=x", "w must be an integer"),
    ("cbs:w=2,w=3", "w is given twice"),
    ("eft:beta=1,beta=2", "beta is given twice"),
    ("", "non-empty"),
])
def test_bad_specs_name_the_field(spec, needle):
    with pytest.raises(ValueError, match=needle):
        parse_method(spec)


@pytest.mark.parametrize("kwargs,needle", [
    ({"top_p": 0.0}, "top_p must be in"),
    ({"top_p": 1.5}, "top_p must be in"),
    ({"temperature": -1}, "temperature must be >= 0"),
    ({"top_k": -3}, "top_k must be"),
    ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer"),
    ({"stop": "\n"}, "stop must be a list"),
    ({"stop": [""]}, "stop must be a list"),
    ({"truncation": "right"}, "truncation must be"),
])
def test_bad_sampling_config(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SamplingConfig(**kwargs)
