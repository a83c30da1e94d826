"""Units of ``w2s-eval serve`` without a server: the batcher with a recording engine, method choice."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

from w2s_eval.config import SamplingConfig, parse_method
from w2s_eval.serve.batcher import Batcher, Job
from w2s_eval.serve.protocol import APIError, CompletionRequest, resolve_method


class RecordingEngine:
    """Answers each prompt with text naming its seed and guide prompt; records every generate call."""

    def __init__(self, fail_on: str = ""):
        self.calls, self.fail_on = [], fail_on

    def generate(self, prompts, method, sampling, seeds=None, batch_size=8, guide_prompts=None):
        self.calls.append(
            {
                "prompts": list(prompts),
                "method": method.spec,
                "sampling": sampling,
                "seeds": list(seeds),
                "batch_size": batch_size,
                "guide_prompts": list(guide_prompts),
            }
        )
        if self.fail_on and self.fail_on in prompts:
            raise ValueError(f"bad prompt {self.fail_on!r}")
        return [SimpleNamespace(text=f"{p}|{s}|{g}") for p, s, g in zip(prompts, seeds, guide_prompts)]


CBS, BASE = parse_method("cbs:w=2,k=2,l=4"), parse_method("base")
CFG = SamplingConfig(max_new_tokens=8)


def job(i, method=CBS, sampling=CFG):
    return Job(f"p{i}", f"g{i}", 100 + i, method, sampling)


def hold(batcher):
    """Keep the worker busy until the returned event is set (jobs submitted meanwhile wait together)."""
    gate = threading.Event()
    batcher.call(lambda: gate.wait(10))
    return gate


def test_jobs_in_flight_together_become_one_engine_call_per_method_and_sampling():
    engine = RecordingEngine()
    batcher = Batcher(engine, max_batch_prompts=32, max_wait_ms=5)
    try:
        gate = hold(batcher)
        jobs = [job(i) for i in range(6)] + [job(6, BASE), job(7, CBS, SamplingConfig(max_new_tokens=9))]
        futures = batcher.submit(jobs)
        gate.set()
        texts = [f.result(10).text for f in futures]
    finally:
        batcher.close()
    assert texts == [f"p{i}|{100 + i}|g{i}" for i in range(8)]  # each job its own seed and guide prompt
    assert [c["prompts"] for c in engine.calls] == [[f"p{i}" for i in range(6)], ["p6"], ["p7"]]
    assert engine.calls[0]["batch_size"] == 6 and engine.calls[0]["seeds"] == [100, 101, 102, 103, 104, 105]
    assert engine.calls[0]["guide_prompts"] == [f"g{i}" for i in range(6)]
    assert batcher.stats["largest_batch"] == 6 and batcher.stats["prompts"] == 8


def test_max_batch_prompts_bounds_a_batch():
    engine = RecordingEngine()
    batcher = Batcher(engine, max_batch_prompts=3, max_wait_ms=5)
    try:
        gate = hold(batcher)
        futures = batcher.submit([job(i) for i in range(7)])
        gate.set()
        [f.result(10) for f in futures]
    finally:
        batcher.close()
    assert [len(c["prompts"]) for c in engine.calls] == [3, 3, 1]


def test_a_failing_group_fails_only_its_jobs_and_cancelled_jobs_are_skipped():
    engine = RecordingEngine(fail_on="p1")
    batcher = Batcher(engine, max_wait_ms=5)
    try:
        gate = hold(batcher)
        bad, good, gone = batcher.submit([job(1), job(2, BASE), job(3, BASE)])
        assert gone.cancel()  # its client went away before the batch started
        gate.set()
        with pytest.raises(ValueError, match="bad prompt 'p1'"):
            bad.result(10)
        assert good.result(10).text == "p2|102|g2"
        assert batcher.call(lambda: "between batches").result(10) == "between batches"
    finally:
        batcher.close()
    assert [c["prompts"] for c in engine.calls] == [["p1"], ["p2"]]


@pytest.mark.parametrize(
    "model,method,want",
    [
        ("w2s", None, "cbs:w=4,k=4,l=5"),
        ("bon:n=3", None, "bon:n=3"),
        ("base", None, "base"),
        ("w2s", "eft:beta=0.5", "eft:beta=0.5"),
        ("anything", "cbs:w=1,k=2,l=inf", "cbs:w=1,k=2,l=inf"),
    ],
)
def test_the_method_comes_from_the_body_field_else_the_model_name(model, method, want):
    req = CompletionRequest(model=model, prompt="x", method=method)
    assert resolve_method(req, "w2s", parse_method("cbs:w=4,k=4,l=5")).spec == want


@pytest.mark.parametrize(
    "model,status,message",
    [
        ("gpt-4", 404, "model 'gpt-4' is not served here"),
        ("cbs:w=0", 400, "model: w must be a positive integer"),
        ("beam:w=2", 400, "unknown method 'beam'"),
        ("bon:m=2", 400, "unknown parameter 'm'"),
    ],
)
def test_bad_method_names(model, status, message):
    with pytest.raises(APIError, match=message) as e:
        resolve_method(CompletionRequest(model=model, prompt="x"), "w2s", parse_method("base"))
    assert e.value.status == status


# ----------------------------------------------------------------------------- logprobs of generated tokens

BYTE_PROMPTS = ["The movie was", "Ein Film über 😀", "I loved the", "Bad", "Hello, world!", "😀😀 the plot"]


@pytest.fixture(scope="module")
def byte_engine(toy_dirs):
    """The toy strong model: a byte-level BPE tokenizer over all 256 bytes, so a sampled token can be part of a
    character (its text re-encodes to other tokens)."""
    from w2s_eval.engine import build_engine

    return build_engine(toy_dirs["strong"], dtype="float32", device="cpu")


def _served(engine):
    from w2s_eval.serve.app import ServeConfig, Server

    return Server(engine, ServeConfig(), BASE)


def _complete(server, **body) -> dict:
    import asyncio

    from w2s_eval.serve.app import completions

    return asyncio.run(completions(server, CompletionRequest(model="base", **body)))


def _logp(lm, prompt_ids, ids) -> list[float]:
    """log p_strong of each of ``ids`` after ``prompt_ids`` (one forward, float64 log-softmax)."""
    seq = torch.tensor([prompt_ids + ids])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(seq).logits[0].double(), -1)
    return [logp[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(ids)]


def test_completion_logprobs_are_those_of_the_generated_tokens(byte_engine):
    """Issue 13 follow-up: the completion's logprobs are one per token the strong model generated (its own ids,
    not the text re-encoded, which differs where a token is part of a character), with its log-probability."""
    from w2s_eval.policy import choice_seed

    server = _served(byte_engine)
    try:
        out = _complete(server, prompt=BYTE_PROMPTS, max_tokens=10, temperature=1.0, seed=3, logprobs=1)
    finally:
        server.batcher.close()
    lm = byte_engine.policy.lm
    tok = lm.tokenizer
    want = byte_engine.generate(
        BYTE_PROMPTS,
        "base",
        SamplingConfig(temperature=1.0, max_new_tokens=10),
        seeds=[choice_seed(3, p, 0) for p in BYTE_PROMPTS],
    )
    partial = 0
    for choice, r, prompt in zip(out["choices"], want, BYTE_PROMPTS):
        beam = r.beams[0]
        ids = beam.token_ids + ([tok.eos_token_id] if beam.eos else [])
        lp = choice["logprobs"]
        assert choice["text"] == r.text and lp["tokens"] == [tok.decode([t]) for t in ids]
        assert lp["token_logprobs"] == pytest.approx(_logp(lm, tok.encode(prompt), ids), rel=1e-5, abs=1e-4)
        partial += len(tok.encode(r.text, add_special_tokens=False)) != len(ids)
    assert partial  # re-encoding the text would have given another token count
    assert out["usage"]["completion_tokens"] == sum(r.beams[0].n_tokens for r in want)


def _lm_eval_loglikelihood(server, prompts: list[str]) -> list[dict]:
    """What lm-eval's local-completions sends for loglikelihood requests: echo, one new token, greedy."""
    out = _complete(server, prompt=prompts, max_tokens=1, echo=True, logprobs=1, temperature=0, seed=1)
    return [c["logprobs"] for c in out["choices"]]


def test_a_one_token_completion_has_one_entry_for_lm_eval_to_drop(byte_engine, toy_dirs):
    """lm-eval sums ``token_logprobs[ctxlen:-1]`` of an echo request with max_tokens=1: the completion must add
    exactly one entry, also where the new token is part of a character or the end-of-sequence token."""
    from w2s_eval.engine import build_engine, load_causal_lm

    lm = byte_engine.policy.lm
    tok = lm.tokenizer
    server = _served(byte_engine)
    try:
        got = _lm_eval_loglikelihood(server, BYTE_PROMPTS)
    finally:
        server.batcher.close()
    for prompt, lp in zip(BYTE_PROMPTS, got):
        ids = tok.encode(prompt)
        assert len(lp["token_logprobs"]) == len(ids) + 1
        assert sum(lp["token_logprobs"][2:-1]) == pytest.approx(sum(_logp(lm, ids[:2], ids[2:])), rel=1e-5, abs=1e-4)
    assert any("\ufffd" in lp["tokens"][-1] for lp in got)  # a new token that is part of a character
    # a model that ends every response on its first token: the entry is that end-of-sequence token
    with torch.no_grad():
        first = lm.model(torch.tensor([tok.encode(BYTE_PROMPTS[0])])).logits[0, -1].argmax().item()
    eos_lm = load_causal_lm(toy_dirs["strong"], dtype="float32", device="cpu", name="strong")
    eos_lm.model.generation_config.eos_token_id = first
    server = _served(build_engine(eos_lm))
    try:
        got = _lm_eval_loglikelihood(server, BYTE_PROMPTS[:1])
    finally:
        server.batcher.close()
    ids = tok.encode(BYTE_PROMPTS[0])
    assert len(got[0]["token_logprobs"]) == len(ids) + 1 and got[0]["tokens"][-1] == tok.decode([first])
    assert got[0]["token_logprobs"][-1] == pytest.approx(_logp(lm, ids, [first])[0], rel=1e-5, abs=1e-4)


def test_a_split_whose_continuation_is_only_eos_has_no_tilt(toy_dirs):
    """T(j) of a suffix without text (the end-of-sequence token a completion ends on) is 0, as T(n); the other
    splits get the tilt of their texts."""
    from w2s_eval.engine import build_engine
    from w2s_eval.serve.scoring import _tilts
    from w2s_eval.tilt import Tilt, terms_for

    engine = build_engine(
        toy_dirs["strong"], tuned=toy_dirs["tuned"], untuned=toy_dirs["untuned"], dtype="float32", device="cpu"
    )
    tilt, tok = Tilt(terms_for(engine, CBS), 4), engine.policy.lm.tokenizer
    seq = tok.encode("The movie was great") + [tok.eos_token_id]
    got = _tilts(tilt, tok, seq, 1)
    want = [
        tilt([(tok.decode(seq[:j], skip_special_tokens=True), tok.decode(seq[j:-1]))])[0]
        for j in range(1, len(seq) - 1)
    ]
    assert got[:-2] == pytest.approx(want, rel=1e-5, abs=1e-5) and got[-2:] == [0.0, 0.0]
    assert any(abs(t) > 1e-3 for t in want)


def _answer(server, route, request):
    """The route's JSON response to ``request`` in-process (status, body), errors as the app returns them."""
    import asyncio
    import json

    from w2s_eval.serve import app

    resp = asyncio.run(app._answer(route(server, request)))
    return resp.status_code, json.loads(resp.body)


def test_max_tokens_that_fill_the_context_name_the_request_field(byte_engine, monkeypatch):
    """Issue 13 follow-up: the request's max_tokens (not the engine's max_new_tokens) is named, with a 400 and
    OpenAI's error JSON, before any generation; chat names the field it was given."""
    from w2s_eval.serve.app import chat_completions, completions
    from w2s_eval.serve.protocol import ChatRequest

    server = _served(byte_engine)
    limit = byte_engine.policy.lm.max_length
    n = len(byte_engine.policy.lm.tokenizer.encode("The movie was"))

    def generate(*args, **kwargs):
        raise AssertionError("generated before checking")  # an Exception: the batcher hands it to the request

    monkeypatch.setattr(byte_engine, "generate", generate)
    try:
        status, out = _answer(
            server, completions, CompletionRequest(model="base", prompt="The movie was", max_tokens=limit)
        )
        assert status == 400 and set(out["error"]) == {"message", "type", "param", "code"}
        msg = out["error"]["message"]
        assert msg == (
            f"prompt of {n} tokens + max_tokens={limit} exceeds the strong model's context of {limit}; "
            f"max_tokens={limit} leaves no room for the prompt: lower max_tokens below {limit} "
            f"(at most {limit - n} keeps this whole prompt)"
        )
        assert out["error"]["param"] == "max_tokens" and "max_new_tokens" not in msg
        long = " ".join(["the movie was great"] * 200)
        status, out = _answer(server, completions, CompletionRequest(model="base", prompt=["ok", long], max_tokens=64))
        assert status == 400 and "lower max_tokens (at most" in out["error"]["message"]
        assert "truncation" not in out["error"]["message"]
        chat = ChatRequest(model="base", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=limit)
        status, out = _answer(server, chat_completions, chat)
        assert status == 400 and f"max_completion_tokens={limit} leaves no room" in out["error"]["message"]
        assert out["error"]["param"] == "max_completion_tokens"
    finally:
        server.batcher.close()


def test_a_chat_prompt_that_starts_with_bos_counts_it_once(toy_dirs):
    """A chat template that writes the BOS text (as Llama's): the usage counts and the context check see the
    tokens the strong model reads (:func:`w2s_eval.policy.encode_prompt`: one BOS), not the tokenizer's second."""
    import asyncio

    from tokenizers.processors import TemplateProcessing

    from devtools.toy import CHAT_TEMPLATE
    from w2s_eval.engine import build_engine, load_causal_lm
    from w2s_eval.serve.app import chat_completions
    from w2s_eval.serve.protocol import ChatRequest

    lm = load_causal_lm(toy_dirs["strong"], dtype="float32", device="cpu", name="strong")
    tok, bos = lm.tokenizer, lm.tokenizer.bos_token_id
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, bos)]
    )
    tok.chat_template = "{{ bos_token }}" + CHAT_TEMPLATE
    messages = [{"role": "user", "content": "The movie was"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith(tok.bos_token) and tok.encode(prompt)[:2] == [bos, bos]  # the tokenizer adds one
    engine = build_engine(lm)
    read = engine.policy.encode(prompt, SamplingConfig(max_new_tokens=2))
    assert read.count(bos) == 1
    server = _served(engine)
    try:
        out = asyncio.run(chat_completions(server, ChatRequest(model="base", messages=messages, max_tokens=2)))
        assert out["usage"]["prompt_tokens"] == len(read)
        server.check_context([server.encode(prompt)], lm.max_length - len(read))  # fits exactly: no error
    finally:
        server.batcher.close()


def test_server_flags_are_the_config_fields(capsys):
    """Every server setting and limit is a flag made from its config field: one default (the field's), one check
    (the config's), whose message names the flag; a bad value fails before any model is loaded."""
    import argparse

    from w2s_eval.checks import SpecError
    from w2s_eval.cli import main
    from w2s_eval.flags import spec_from_namespace
    from w2s_eval.serve.cli import add_commands
    from w2s_eval.serve.protocol import Limits, ServeConfig

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())

    def config(*flags):
        args = parser.parse_args(["serve", "--strong", "s", *flags])
        return spec_from_namespace(args, cls=ServeConfig, limits=spec_from_namespace(args, cls=Limits))

    assert config() == ServeConfig()
    assert config("--max-n", "3", "--served-model-name", "m", "--max-wait-ms", "0") == ServeConfig(
        served_model_name="m", max_wait_ms=0.0, limits=Limits(max_n=3)
    )
    with pytest.raises(SpecError, match=r"^--max-n must be a positive integer, got 0; set --max-n>=1$"):
        config("--max-n", "0")
    with pytest.raises(SpecError, match=r"^--max-wait-ms must be >= 0, got -1\.0$"):
        config("--max-wait-ms", "-1")
    with pytest.raises(
        SpecError, match=r"^max_batch_prompts must be a positive integer, got 0; set max_batch_prompts>=1$"
    ):
        ServeConfig(max_batch_prompts=0)
    assert main(["serve", "--strong", "/nonexistent/model", "--max-tokens", "0"]) == 2
    assert "error: --max-tokens must be a positive integer, got 0; set --max-tokens>=1" in capsys.readouterr().err
