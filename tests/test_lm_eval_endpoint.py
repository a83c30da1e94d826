"""The lm-eval backend with the strong model behind an OpenAI-compatible server (a fake one on loopback):
loglikelihood comes from the server's prompt log-probs plus the guides' tilt."""

import pytest
from _endpoint_fakes import FakeOpenAIServer, fake_logprob
from lm_eval.api.instance import Instance
from test_lm_eval_helpers import f32_approx

from w2s_eval.lm_eval_backend.backend import W2SLM


def instances(pairs):
    return [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]


def test_endpoint_loglikelihood_is_strong_logprob_plus_tilt(toy_dirs):
    pairs = [("The movie", " was good"), ("A", " b")]
    with FakeOpenAIServer() as srv:
        plain = W2SLM(strong_endpoint=srv.url, strong_model="fake", method="base")
        got = plain.loglikelihood(instances(pairs), disable_tqdm=True)
        assert got[0] == (pytest.approx(fake_logprob(" was") + fake_logprob(" good")), False)
        assert got[1] == (pytest.approx(fake_logprob(" b")), True)

        tilted = W2SLM(
            strong_endpoint=srv.url,
            strong_model="fake",
            tuned=toy_dirs["tuned"],
            untuned=toy_dirs["untuned"],
            method="cbs",
            beta=0.5,
            dtype="float32",
            device="cpu",
        )
        both = tilted.loglikelihood(instances(pairs), disable_tqdm=True)
        scorer = tilted.engine.scorer  # the same guide that steers the search, without its cache
        for (ctx, cont), (lp, greedy), (base_lp, base_greedy) in zip(pairs, both, got):
            guide = scorer([ctx], [cont], [False]).item()
            assert lp == f32_approx(base_lp + guide, base_lp, guide, rel=1e-5) and greedy == base_greedy

        with pytest.raises(ValueError, match="non-empty context"):
            plain.loglikelihood(instances([("", "hello")]), disable_tqdm=True)
