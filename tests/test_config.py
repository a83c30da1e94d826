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


@pytest.mark.parametrize(
    "spec,needle",
    [
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
    ],
)
def test_bad_specs_name_the_field(spec, needle):
    with pytest.raises(ValueError, match=needle):
        parse_method(spec)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"top_p": 0.0}, "top_p must be in"),
        ({"top_p": 1.5}, "top_p must be in"),
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"top_k": -3}, "top_k must be"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer"),
        ({"stop": "\n"}, "stop must be a list"),
        ({"stop": [""]}, "stop must be a list"),
        ({"truncation": "right"}, "truncation must be"),
    ],
)
def test_bad_sampling_config(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SamplingConfig(**kwargs)


def test_context_error_is_one_wording_for_every_front_end():
    """The engine, compare, alpaca-eval generate and serve word a prompt that does not fit the same way (only the
    setting's name differs); truncation is named only where the caller has it and it can help."""
    from w2s_eval.config import context_error

    assert context_error(12, 500, 512) is None and context_error(12, 10**6, None) is None
    head = "prompt of 12 tokens + --max-new-tokens=600 exceeds the strong model's context of 512; "
    assert context_error(12, 600, 512, "--max-new-tokens") == head + (
        "--max-new-tokens=600 leaves no room for the prompt: lower --max-new-tokens below 512 "
        "(at most 500 keeps this whole prompt)"
    )
    assert context_error(500, 20, 512, "max_tokens").endswith(
        "; shorten the prompt or lower max_tokens (at most 12 fits this prompt)"
    )
    assert context_error(500, 20, 512, model="'strong'", truncation=True) == (
        "prompt of 500 tokens + max_new_tokens=20 exceeds 'strong''s context of 512; shorten the prompt, lower "
        "max_new_tokens, or set truncation='left'"
    )
    assert context_error(600, 512, 512).endswith("lower max_new_tokens below 512 and shorten the prompt")
    assert context_error(600, 512, 512, truncation=True).endswith("lower max_new_tokens below 512")
    assert context_error(600, 8, 512).endswith(
        "shorten the prompt or lower max_new_tokens (at most 0 fits this prompt)"
    )
