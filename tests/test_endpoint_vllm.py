"""The endpoint engine against a real vLLM server on loopback (one server per test session).

vLLM lives in its own environment (scripts/setup_vllm.sh DIR; W2S_VLLM_PYTHON=DIR/bin/python).
Without it these tests skip locally and FAIL in CI (CI=true). The server runs a tiny random
Llama saved by the fixture (ASCII tokenizer, head_dim 64), float32, --enforce-eager.
"""

import json
import os

import pytest
import torch
from _endpoint_fakes import FaultProxy, recording_policy

from devtools.vllm_server import save_test_model, start_vllm, vllm_python
from w2s_eval.config import SamplingConfig, SearchConfig
from w2s_eval.endpoint import EndpointError, EndpointPolicy, endpoint_loglikelihoods
from w2s_eval.engine import Engine, build_engine
from w2s_eval.search import chunk_beam_search

pytestmark = pytest.mark.slow  # processes, servers or training: deselect with -m 'not slow'

PROMPTS = ["The movie was", "I loved it", "Here is a movie review from imdb: ", "Hello, world!"]


def char_scorer(prompts, responses, finished):
    """A deterministic guide: how often 'e' occurs, ties broken by length."""
    return torch.tensor([r.count("e") + len(r) / 1000 for r in responses], dtype=torch.float64)


class _Served:
    """The session's server; a test that kills it leaves it dead, and the next user restarts it."""

    def __init__(self, root, python):
        self.root, self.python = root, python
        self.model = save_test_model(str(root / "model"))
        self.server = None
        self.starts = 0

    def get(self):
        if self.server is None or not self.server.alive():
            self.starts += 1
            self.server = start_vllm(
                self.model,
                "toy",
                python=self.python,
                max_model_len=512,
                kv_cache_gib=1,
                cache_root=str(self.root / "cache"),
                log_path=str(self.root / f"vllm{self.starts}.log"),
                ready_timeout=420,
                threads=2,
            )
        return self.server


@pytest.fixture(scope="session")
def vllm(tmp_path_factory):
    python = vllm_python()
    if python is None:
        msg = (
            "vLLM is not installed: run scripts/setup_vllm.sh DIR and set W2S_VLLM_PYTHON=DIR/bin/python "
            "(in CI .ci/run does this)"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    served = _Served(tmp_path_factory.mktemp("vllm"), python)
    served.get()
    yield served
    if served.server is not None:
        served.server.stop()


@pytest.fixture(scope="session")
def local(vllm):
    return build_engine(vllm.model, dtype="float32", device="cpu")


def endpoint(vllm, **kw):
    return EndpointPolicy(vllm.get().base_url, "toy", max_retries=kw.pop("max_retries", 2), backoff=0.05, **kw)


def beams(results):
    return [[(b.text, b.ended, b.n_tokens) for b in r.beams] for r in results]


def test_methods_over_vllm_return_valid_reproducible_beams(vllm):
    eng = Engine(endpoint(vllm), char_scorer)
    cfg = SamplingConfig(temperature=1.0, top_k=50, max_new_tokens=16, seed=1)
    for method, w, samples in (("base", 1, 1), ("bon:n=4", 1, 4), ("cbs:w=2,k=2,l=4", 2, None)):
        res = eng.generate(PROMPTS, method, cfg)
        assert beams(res) == beams(eng.generate(PROMPTS, method, cfg, batch_size=1))  # seeded, batch-free
        for r in res:
            assert len(r.beams) == w and r.text == r.beams[0].text and r.stats["strong_tokens"] > 0
            assert all(b.n_tokens <= 16 and (b.ended or b.n_tokens == 16) for b in r.beams)
            if samples:
                assert r.stats["samples"] == samples
            if method != "base":
                assert r.score == pytest.approx(char_scorer(None, [r.text], None).item())
    other = eng.generate(PROMPTS, "bon:n=4", SamplingConfig(temperature=1.0, top_k=50, max_new_tokens=16, seed=2))
    assert beams(other) != beams(eng.generate(PROMPTS, "bon:n=4", cfg))  # the seed matters


@pytest.mark.parametrize("method", ["base", "cbs:w=1,k=1,l=4", "cbs:w=2,k=2,l=3"])
def test_greedy_search_equals_the_local_transformers_engine(vllm, local, method):
    """Greedy candidates are the same on both engines, so the search keeps the same beams."""
    cfg = SamplingConfig(temperature=0, max_new_tokens=20)
    scorer = char_scorer if method.endswith("w=2,k=2,l=3") else None
    want = Engine(local.policy, scorer).generate(PROMPTS, method, cfg)
    for tokenizer in (None, local.policy.lm.tokenizer):
        got = Engine(endpoint(vllm, tokenizer=tokenizer), scorer).generate(PROMPTS, method, cfg)
        assert beams(got) == beams(want)
        assert [r.score for r in got] == [r.score for r in want]


@pytest.mark.parametrize("engine", ["endpoint", "local"])
def test_sampled_cbs_extends_the_top_w_candidates(vllm, local, engine):
    """Same rule on both engines: each round's parents are the top W candidates of their prompt."""
    policy = endpoint(vllm) if engine == "endpoint" else local.policy
    rounds = []
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=12, seed=3)
    res = chunk_beam_search(PROMPTS, recording_policy(policy, rounds), char_scorer, SearchConfig(2, 3, 3), cfg)
    assert len(rounds) >= 2 and all(len(r.beams) == 2 for r in res)
    for (_, kids), (next_parents, next_kids) in zip(rounds, rounds[1:]):
        for b in {kids[p].prompt_index for p in next_parents}:
            mine = [i for i, c in enumerate(kids) if c.prompt_index == b]
            scores = char_scorer(None, [kids[i].text for i in mine], None).tolist()
            cutoff = sorted(scores, reverse=True)[1]
            assert all(scores[mine.index(p)] >= cutoff - 1e-12 for p in next_parents if kids[p].prompt_index == b)
        for j, p in enumerate(next_parents):  # children of parents[j] come j-th, K each, and continue it
            assert not kids[p].done
            assert all(
                c.text.startswith(kids[p].text) and c.prompt_index == kids[p].prompt_index
                for c in next_kids[3 * j : 3 * j + 3]
            )


def test_loglikelihoods_equal_the_local_model(vllm, local):
    lm = local.policy.lm
    ctx = ["The movie", "I loved", "Hello, world", "Here is"]
    cont = [" was good", " it", "! It's 42 degrees.", " a movie review"]
    got = endpoint_loglikelihoods(endpoint(vllm), ctx, cont)
    for c, t, (value, greedy) in zip(ctx, cont, got):
        n, ids = len(lm.tokenizer.encode(c)), lm.tokenizer.encode(c + t)
        with torch.no_grad():
            lp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), -1)
        want = sum(lp[i - 1, ids[i]].item() for i in range(n, len(ids)))
        assert value == pytest.approx(want, rel=1e-4, abs=1e-3)
        assert greedy == all(lp[i - 1].argmax().item() == ids[i] for i in range(n, len(ids)))
    # a greedy continuation is greedy
    text = (
        Engine(endpoint(vllm)).generate(["The movie"], "base", SamplingConfig(temperature=0, max_new_tokens=5))[0].text
    )
    assert endpoint_loglikelihoods(endpoint(vllm), ["The movie"], [text])[0][1] is True


def test_injected_500s_are_retried_through_a_proxy(vllm):
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=10, seed=5)
    want = Engine(endpoint(vllm), char_scorer).generate(PROMPTS, "bon:n=4", cfg)
    with FaultProxy(vllm.get().base_url) as proxy:
        proxy.faults = [500, 503, 500]
        pol = EndpointPolicy(proxy.url, "toy", max_retries=3, backoff=0.05)
        got = Engine(pol, char_scorer).generate(PROMPTS, "bon:n=4", cfg)
        assert pol.client.stats.retries == 3 and not proxy.faults
    assert beams(got) == beams(want)


def test_endpoint_dying_mid_run_errors_then_a_rerun_resumes(vllm, tmp_path):
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=9, seed=7)

    def run(eng, path):
        done = {json.loads(x)["prompt"]: json.loads(x) for x in path.read_text().splitlines()} if path.exists() else {}
        with path.open("a") as f:
            for p in PROMPTS:
                if p not in done:
                    r = eng.generate([p], "cbs:w=2,k=2,l=3", cfg)[0]
                    done[p] = {"prompt": p, "text": r.text}
                    f.write(json.dumps(done[p]) + "\n")
                    f.flush()
        return [done[p] for p in PROMPTS]

    want = run(Engine(endpoint(vllm), char_scorer), tmp_path / "ref.jsonl")
    proxy = FaultProxy(vllm.get().base_url, kill_after=6).start()
    eng = Engine(EndpointPolicy(proxy.url, "toy", max_retries=1, backoff=0.05), char_scorer)
    with pytest.raises(EndpointError, match=proxy.url.replace(".", r"\.")):
        run(eng, tmp_path / "run.jsonl")
    assert 0 < len((tmp_path / "run.jsonl").read_text().splitlines()) < len(PROMPTS)
    proxy.kill_after = None
    proxy.start()
    try:
        assert run(eng, tmp_path / "run.jsonl") == want
    finally:
        proxy.stop()


def test_zz_killed_vllm_server_gives_a_clear_error(vllm):
    """Runs last in this file: it kills the session's server (a later user would restart it)."""
    server = vllm.get()
    pol = EndpointPolicy(server.base_url, "toy", max_retries=1, backoff=0.05)
    Engine(pol).generate(PROMPTS[:1], "base", SamplingConfig(max_new_tokens=4))
    server.stop()
    assert not server.alive()
    with pytest.raises(
        EndpointError, match=f"endpoint {server.base_url} failed after 2 attempts.*Is the server running"
    ):
        Engine(pol).generate(PROMPTS[:1], "base", SamplingConfig(max_new_tokens=4))
