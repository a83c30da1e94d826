"""The strong model behind an OpenAI-compatible server, against a fake server on loopback (fast, no vLLM)."""

import json

import pytest
import torch
from _endpoint_fakes import EOS_P, FakeOpenAIServer, fake_logprob, fake_tokens, recording_policy  # noqa: F401

from w2s_eval.config import SamplingConfig, SearchConfig, parse_method
from w2s_eval.endpoint import EndpointError, EndpointPolicy, endpoint_loglikelihoods, request_seed
from w2s_eval.engine import Engine, build_engine
from w2s_eval.search import chunk_beam_search

PROMPTS = ["The movie was", "I think", "Plot:"]


def char_scorer(prompts, responses, finished):
    """A deterministic guide: how often 'o' occurs, ties broken by length."""
    return torch.tensor([r.count("o") + len(r) / 1000 for r in responses], dtype=torch.float64)


@pytest.fixture
def fake():
    with FakeOpenAIServer() as srv:
        yield srv


def policy(srv, **kw):
    kw.setdefault("backoff", 0.01)
    kw.setdefault("max_retries", 3)
    return EndpointPolicy(srv.url, "fake", **kw)


def test_extend_contract_and_request_bodies(fake):
    pol = policy(fake)
    cfg = SamplingConfig(temperature=0.7, top_k=5, top_p=0.9, max_new_tokens=6, stop=("XYZ",), seed=1)
    s = pol.start(PROMPTS[:2], cfg, [11, 22])
    kids = s.extend([0, 1], 3, 4)
    assert [c.prompt_index for c in kids] == [0, 0, 0, 1, 1, 1]
    first = fake.bodies[-2:]
    assert sorted(b["prompt"] for b in first) == sorted(PROMPTS[:2])
    for b in first:
        seed = 11 if b["prompt"] == PROMPTS[0] else 22
        assert (b["n"], b["max_tokens"], b["temperature"], b["top_p"], b["top_k"], b["stop"]) == (
            3,
            4,
            0.7,
            0.9,
            5,
            ["XYZ"],
        )
        assert b["seed"] == request_seed(seed, 1, 0)
    for c in kids:
        assert c.n_tokens <= 4 and c.done == (c.ended or c.n_tokens >= 6)
    live = [i for i, c in enumerate(kids) if not c.done][:3]
    live = sorted(live, key=lambda i: kids[i].prompt_index)
    n_before = len(fake.bodies)
    kids2 = s.extend(live, 2, 4)
    bodies = fake.bodies[n_before:]
    assert len(bodies) == len(live)
    # children of parents[0] first; each child continues its parent's text
    for j, p in enumerate(live):
        for c in kids2[2 * j : 2 * j + 2]:
            assert c.prompt_index == kids[p].prompt_index and c.text.startswith(kids[p].text)
            assert c.n_tokens <= 6 and c.n_tokens >= kids[p].n_tokens
    by_prompt = {b["prompt"]: b for b in bodies}
    for j, p in enumerate(live):
        b = by_prompt[PROMPTS[kids[p].prompt_index] + kids[p].text]
        assert b["max_tokens"] == min(4, 6 - kids[p].n_tokens)  # never past max_new_tokens
        place = [q for q in live if kids[q].prompt_index == kids[p].prompt_index].index(p)
        assert b["seed"] == request_seed([11, 22][kids[p].prompt_index], 2, place)
    with pytest.raises(ValueError, match="grouped by prompt"):
        pol.start(PROMPTS[:2], cfg, [1, 2]).extend([1, 0], 1, 2)


def test_token_ids_are_sent_back_when_the_server_returns_them():
    """exact_tokens='auto': round 1 sends text, later rounds the prompt's + response's token ids;
    the search result equals the text-mode result (the fake tokenizes text consistently)."""
    cfg = SamplingConfig(max_new_tokens=10, stop=(" XY",), seed=6)
    with FakeOpenAIServer(token_ids=True) as srv:
        pol = policy(srv)
        exact = chunk_beam_search(PROMPTS, pol, char_scorer, SearchConfig(2, 2, 3), cfg)
        assert pol.server_ids is True
        assert isinstance(srv.bodies[0]["prompt"], str) and any(isinstance(b["prompt"], list) for b in srv.bodies)
        assert all("logprobs" not in b for b in srv.bodies[len(PROMPTS) :])  # lengths come from the ids
        text = chunk_beam_search(PROMPTS, policy(srv, exact_tokens=False), char_scorer, SearchConfig(2, 2, 3), cfg)
    assert [[(x.text, x.ended) for x in r.beams] for r in exact] == [[(x.text, x.ended) for x in r.beams] for r in text]
    for r, t in zip(exact, text):  # with ids, a stop string's token counts (as in the local engine)
        assert all(0 <= x.n_tokens - y.n_tokens <= int(x.ended) for x, y in zip(r.beams, t.beams))
    assert [r.stats["strong_tokens"] for r in exact] == [r.stats["strong_tokens"] for r in text]
    with FakeOpenAIServer() as srv:  # a server without token ids
        with pytest.raises(EndpointError, match="no token ids"):
            policy(srv, exact_tokens=True).start(["x"], cfg, [0]).extend([0], 1, 2)


def test_greedy_asks_one_choice_and_copies_it(fake):
    s = policy(fake).start(["Hi there"], SamplingConfig(temperature=0, max_new_tokens=5), [1])
    kids = s.extend([0], 3, 2)
    assert [b["n"] for b in fake.bodies] == [1] and len({(c.text, c.n_tokens) for c in kids}) == 1 and len(kids) == 3


def test_finished_rows_and_bad_parents_are_refused(fake):
    s = policy(fake).start(["Hi"], SamplingConfig(max_new_tokens=1, seed=0), [5])
    kids = s.extend([0], 2, None)
    assert all(c.done for c in kids)
    with pytest.raises(ValueError, match="finished row"):
        s.extend([0], 1, None)
    with pytest.raises(ValueError, match="does not exist"):
        s.extend([7], 1, None)


def test_token_counts_follow_usage_and_logprobs(fake):
    cfg = SamplingConfig(max_new_tokens=30, stop=(" XY",), seed=3)
    s = policy(fake).start(PROMPTS, cfg, [1, 2, 3])
    kids = s.extend([0, 1, 2], 8, None)
    for c in kids:
        # one fake token per word; EOS and the stop word are not response tokens
        assert c.n_tokens == len(fake_tokens(c.text))
        assert (" XY" not in c.text) and (c.ended or c.n_tokens == 30)
    usage = [0, 0, 0]
    for b in fake.bodies:
        i = PROMPTS.index(b["prompt"])
        usage[i] += len(fake_tokens(b["prompt"]))
    gen = {i: 0 for i in range(3)}
    for c in kids:
        gen[c.prompt_index] += c.n_tokens + 1 if (c.ended or c.n_tokens < 30) else c.n_tokens
    assert s.strong_tokens == [usage[i] + gen[i] for i in range(3)]
    assert [t["prompt"] for t in s.token_counts] == usage


def test_stop_string_across_chunks_ends_the_beam(fake):
    """A stop string of two words spans two one-token chunks: the server never sees it whole."""
    stop = " ok fun"
    pol = policy(fake)
    hits = 0
    for seed in range(15):
        res = chunk_beam_search(
            ["Go"], pol, None, SearchConfig(1, 1, 1), SamplingConfig(max_new_tokens=40, stop=(stop,)), [seed]
        )[0]
        free = chunk_beam_search(["Go"], pol, None, SearchConfig(1, 1, 1), SamplingConfig(max_new_tokens=40), [seed])[0]
        assert stop not in res.text
        if stop in free.text:
            hits += 1
            assert res.beams[0].ended and res.text == free.text[: free.text.index(stop)]
        else:
            assert res.text == free.text
    assert hits > 0


def test_search_methods_over_the_endpoint_are_valid_and_reproducible(fake):
    eng = Engine(policy(fake), char_scorer)
    cfg = SamplingConfig(max_new_tokens=12, seed=4)
    for method, w, samples in (("base", 1, 1), ("bon:n=4", 1, 4), ("cbs:w=2,k=2,l=3", 2, None)):
        a = eng.generate(PROMPTS, method, cfg, batch_size=3)
        b = eng.generate(PROMPTS, method, cfg, batch_size=1)
        assert [(r.text, r.score, r.stats["strong_tokens"]) for r in a] == [
            (r.text, r.score, r.stats["strong_tokens"]) for r in b
        ]
        for r in a:
            assert len(r.beams) == w and r.text == r.beams[0].text
            assert all(x.n_tokens <= 12 and (x.ended or x.n_tokens == 12) for x in r.beams)
            if samples:
                assert r.stats["samples"] == samples
            if r.score is not None:
                assert (
                    r.score == max(x.score for x in r.beams) == pytest.approx(char_scorer(None, [r.text], None).item())
                )
            assert r.stats["strong_tokens"] > 0
    other = eng.generate(PROMPTS, "bon:n=4", SamplingConfig(max_new_tokens=12, seed=5))
    assert [r.text for r in other] != [r.text for r in eng.generate(PROMPTS, "bon:n=4", cfg)]


def test_cbs_keeps_the_top_w_of_each_round(fake):
    """The beams the search extends are the top W candidates by the guide (recorded per round)."""
    pol = policy(fake)
    rounds = []
    cfg = SamplingConfig(max_new_tokens=15, seed=2)
    res = chunk_beam_search(PROMPTS, recording_policy(pol, rounds), char_scorer, SearchConfig(2, 3, 3), cfg)
    assert len(rounds) >= 2
    for (_, kids), (next_parents, _) in zip(rounds, rounds[1:]):
        for b in {kids[p].prompt_index for p in next_parents}:
            mine = [i for i, c in enumerate(kids) if c.prompt_index == b]
            scores = char_scorer(None, [kids[i].text for i in mine], None).tolist()
            chosen = [p for p in next_parents if kids[p].prompt_index == b]
            best = sorted(scores, reverse=True)[:2]
            assert all(scores[mine.index(p)] >= best[-1] - 1e-12 for p in chosen)
    assert all(len(r.beams) == 2 for r in res)


def test_build_engine_with_an_endpoint_and_toy_guides(fake, toy_dirs):
    eng = build_engine(
        strong_endpoint=fake.url,
        strong_model="fake",
        tuned=toy_dirs["tuned"],
        untuned=toy_dirs["untuned"],
        dtype="float32",
        device="cpu",
    )
    assert isinstance(eng.policy, EndpointPolicy)
    res = eng.generate(PROMPTS[:2], "cbs:w=2,k=2,l=4", SamplingConfig(max_new_tokens=8, seed=0))
    assert all(r.score is not None and r.stats["guide_tokens"] > 0 for r in res)
    with pytest.raises(ValueError, match="EFT needs full next-token distributions.*endpoint"):
        eng.check(parse_method("eft:beta=1"))
    with pytest.raises(ValueError, match="EFT needs full next-token distributions"):
        eng.generate(PROMPTS[:1], "eft:beta=1", SamplingConfig(max_new_tokens=4))
    # the served model's name is asked from the server when none is given
    assert build_engine(strong_endpoint=fake.url).policy.model == "fake"


def test_retries_on_500_429_and_dropped_connections(fake):
    pol = policy(fake)
    cfg = SamplingConfig(max_new_tokens=6, seed=9)
    want = [r.text for r in Engine(pol, char_scorer).generate(PROMPTS[:1], "bon:n=3", cfg)]
    fake.faults = [500, 429, "drop"]
    got = [r.text for r in Engine(pol, char_scorer).generate(PROMPTS[:1], "bon:n=3", cfg)]
    assert got == want
    assert pol.client.stats.retries == 3 and not fake.faults


def test_retries_run_out_with_a_clear_error(fake):
    pol = policy(fake, max_retries=2)
    fake.faults = [500, 502, 503]
    with pytest.raises(EndpointError, match=f"{fake.url}.*failed after 3 attempts"):
        pol.start(["x"], SamplingConfig(max_new_tokens=3), [0]).extend([0], 2, None)
    assert fake.seen == 3


def test_client_errors_are_not_retried(fake):
    fake.faults = [400]
    with pytest.raises(ValueError, match="HTTP 400.*max-model-len"):
        policy(fake).start(["x"], SamplingConfig(max_new_tokens=3), [0]).extend([0], 1, None)
    assert fake.seen == 1
    with pytest.raises(ValueError, match="HTTP 404.*strong_model"):
        EndpointPolicy(fake.url, "nope").start(["x"], SamplingConfig(max_new_tokens=3), [0]).extend([0], 1, None)


def test_fewer_choices_than_n_is_an_error(fake):
    fake.faults = ["short"]
    with pytest.raises(EndpointError, match="returned 3 choices for n=4"):
        policy(fake).start(["x"], SamplingConfig(max_new_tokens=3), [0]).extend([0], 4, None)


def test_dead_server_names_the_endpoint():
    srv = FakeOpenAIServer().start()
    url = srv.url
    srv.stop()
    pol = EndpointPolicy(url, "fake", max_retries=1, backoff=0.01)
    with pytest.raises(EndpointError, match=f"endpoint {url} failed after 2 attempts.*Is the server running"):
        Engine(pol).generate(["x"], "base", SamplingConfig(max_new_tokens=3))


def test_requests_run_concurrently_and_bounded(fake):
    fake.delay = 0.05
    cfg = SamplingConfig(max_new_tokens=4, seed=0)
    prompts = [f"p{i}" for i in range(8)]
    chunk_beam_search(prompts, policy(fake, max_concurrency=3), None, SearchConfig(1, 1, None), cfg)
    assert fake.max_inflight == 3
    fake.httpd.max_inflight = 0
    chunk_beam_search(prompts, policy(fake, max_concurrency=1), None, SearchConfig(1, 1, None), cfg)
    assert fake.max_inflight == 1


def _run_with_records(eng, prompts, path, cfg):
    """What the adapters do: one record per finished prompt; a rerun skips finished prompts."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            done[rec["prompt"]] = rec
    with path.open("a") as f:
        for p in prompts:
            if p in done:
                continue
            r = eng.generate([p], "cbs:w=2,k=2,l=3", cfg)[0]
            done[p] = {"prompt": p, "text": r.text, "score": r.score}
            f.write(json.dumps(done[p]) + "\n")
            f.flush()
    return [done[p] for p in prompts]


def test_server_dying_mid_run_errors_and_a_rerun_resumes(tmp_path):
    cfg = SamplingConfig(max_new_tokens=9, seed=7)
    prompts = [f"Prompt {i}" for i in range(5)]
    with FakeOpenAIServer() as ref:
        want = _run_with_records(Engine(policy(ref), char_scorer), prompts, tmp_path / "ref.jsonl", cfg)
    srv = FakeOpenAIServer(kill_after=8).start()
    records = tmp_path / "run.jsonl"
    eng = Engine(policy(srv, max_retries=1), char_scorer)
    with pytest.raises(EndpointError, match=srv.url):
        _run_with_records(eng, prompts, records, cfg)
    kept = records.read_text().splitlines()
    assert 0 < len(kept) < len(prompts)
    srv.kill_after = None
    srv.start()  # the server is back on the same port
    try:
        got = _run_with_records(eng, prompts, records, cfg)
    finally:
        srv.stop()
    assert got == want


def test_loglikelihoods_from_prompt_logprobs(fake):
    pol = policy(fake)
    ctx = ["The movie", "A", "Plot is"]
    cont = [" was good", " b", ""]
    out = endpoint_loglikelihoods(pol, ctx, cont)
    assert out[0] == (pytest.approx(fake_logprob(" was") + fake_logprob(" good")), False)  # " good": -0.8 < -0.5
    assert out[1] == (pytest.approx(fake_logprob(" b")), True)
    assert out[2] == (0.0, True)
    # a token straddling the boundary ("Plo" + "t is") counts for the continuation
    assert endpoint_loglikelihoods(pol, ["Go Plo"], ["t is"]) == [
        (pytest.approx(fake_logprob(" Plot") + fake_logprob(" is")), False)
    ]
    with pytest.raises(ValueError, match="non-empty context"):
        endpoint_loglikelihoods(pol, [""], ["hello"])


def test_a_started_server_that_dies_or_never_answers_is_named_with_its_log(tmp_path):
    """endpoint.server.wait_for (how vLLM and ``w2s-eval serve`` are awaited): a server that exits first is named
    with its exit code and log tail; one that never answers is stopped (its process group) after the timeout."""
    import os
    import sys

    from devtools.vllm_server import ServerProcess, launch, wait_for

    log = str(tmp_path / "server.log")
    dead = ServerProcess(
        launch([sys.executable, "-c", "print('no model here'); raise SystemExit(3)"], dict(os.environ), log), log
    )
    with pytest.raises(RuntimeError, match=r"toy server exited with code 3 before it was ready; log .*\nno model here"):
        wait_for(dead, lambda: None, 60, "toy server", poll=0.05)
    hung = ServerProcess(launch([sys.executable, "-c", "import time; time.sleep(120)"], dict(os.environ), log), log)
    with pytest.raises(TimeoutError, match="toy server was not ready after 0 s"):
        wait_for(hung, lambda: None, 0.3, "toy server", poll=0.05)
    assert not hung.alive()
    answers = iter([None, ConnectionError("not yet"), {"ready": 1}])

    def probe():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    alive = ServerProcess(launch([sys.executable, "-c", "import time; time.sleep(120)"], dict(os.environ), log), log)
    try:
        assert wait_for(alive, probe, 60, "toy server", poll=0.01) == {"ready": 1}
    finally:
        alive.stop()
    assert not alive.alive()
