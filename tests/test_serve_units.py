"""Units of ``w2s-eval serve`` without a server: the batcher with a recording engine, method choice."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from w2s_eval.config import SamplingConfig, parse_method
from w2s_eval.serve.batcher import Batcher, Job
from w2s_eval.serve.protocol import APIError, CompletionRequest, resolve_method


class RecordingEngine:
    """Answers each prompt with text naming its seed and guide prompt; records every generate call."""

    def __init__(self, fail_on: str = ""):
        self.calls, self.fail_on = [], fail_on

    def generate(self, prompts, method, sampling, seeds=None, batch_size=8, guide_prompts=None):
        self.calls.append({"prompts": list(prompts), "method": method.spec, "sampling": sampling,
                           "seeds": list(seeds), "batch_size": batch_size, "guide_prompts": list(guide_prompts)})
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


@pytest.mark.parametrize("model,method,want", [
    ("w2s", None, "cbs:w=4,k=4,l=5"),
    ("bon:n=3", None, "bon:n=3"),
    ("base", None, "base"),
    ("w2s", "eft:beta=0.5", "eft:beta=0.5"),
    ("anything", "cbs:w=1,k=2,l=inf", "cbs:w=1,k=2,l=inf"),
])
def test_the_method_comes_from_the_body_field_else_the_model_name(model, method, want):
    req = CompletionRequest(model=model, prompt="x", method=method)
    assert resolve_method(req, "w2s", parse_method("cbs:w=4,k=4,l=5")).spec == want


@pytest.mark.parametrize("model,status,message", [
    ("gpt-4", 404, "model 'gpt-4' is not served here"),
    ("cbs:w=0", 400, "model: w must be a positive integer"),
    ("beam:w=2", 400, "unknown method 'beam'"),
    ("bon:m=2", 400, "unknown parameter 'm'"),
])
def test_bad_method_names(model, status, message):
    with pytest.raises(APIError, match=message) as e:
        resolve_method(CompletionRequest(model=model, prompt="x"), "w2s", parse_method("base"))
    assert e.value.status == status
