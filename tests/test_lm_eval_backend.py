"""W2SLM in-process on the tiny models: the tilted loglikelihood against independent references
(lm-eval's HFLM, the core GuideLM, a hand-written EFT), generate_until with CBS, the request
cache after a crash, and the bad inputs of the issue (all raise before any generation)."""

from __future__ import annotations

import json

import pytest
import torch
from lm_eval.api.instance import Instance
from test_lm_eval_helpers import f32_approx

from w2s_eval.lm_eval_backend.backend import W2SLM


def _ll(ctx, cont, i=0):
    return Instance("loglikelihood", {}, (ctx, cont), i)


def _gen(ctx, kw, i=0, task="t"):
    return Instance("generate_until", {}, (ctx, kw), i, metadata=(task, i, 1))


PAIRS = [("The movie was", " great"), ("I loved the ", "film and the music"), ("Hello, world!", " It's 42 degrees.")]


@pytest.fixture(scope="module")
def base(toy_dirs):
    return W2SLM(strong=toy_dirs["strong"], method="base", device="cpu", dtype="float32", batch_size=2)


@pytest.fixture(scope="module")
def cbs(toy_dirs, tmp_path_factory):
    return W2SLM(
        strong=toy_dirs["strong"],
        tuned=toy_dirs["tuned_b"],
        untuned=toy_dirs["untuned_b"],
        reward_model=toy_dirs["rm"],
        rm_weight=0.5,
        beta=0.7,
        method="cbs",
        w=2,
        k=2,
        l=3,
        temperature=0.8,
        device="cpu",
        dtype="float32",
        batch_size=2,
        max_gen_toks=8,
        stats_path=str(tmp_path_factory.mktemp("stats")),
    )


def test_base_equals_hflm_loglikelihood_and_rolling(base, toy_dirs):
    from lm_eval.models.huggingface import HFLM

    hf = HFLM(pretrained=toy_dirs["strong"], device="cpu", dtype="float32", batch_size=2)
    reqs = [_ll(c, y, i) for i, (c, y) in enumerate(PAIRS + [("", " the movie")])]
    for (a, ga), (b, gb) in zip(base.loglikelihood(reqs), hf.loglikelihood(reqs)):
        assert a == f32_approx(b) and ga == gb
    long_text = " ".join(["the movie was great and the plot was good"] * 60)  # > 512 tokens: several windows
    rolling = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(["A short review.", long_text])]
    assert len(base.tok_encode(long_text)) > base.max_length
    assert base.loglikelihood_rolling(rolling) == f32_approx(hf.loglikelihood_rolling(rolling))


def test_cbs_loglikelihood_is_strong_plus_guide_tilt(base, cbs, toy_dirs):
    """log p_strong + beta (log p_tuned - log p_untuned) + rm_weight * RM, each guide on its own
    tokenizer (tok_b) -- the reference is the core GuideLM without its cache."""
    from w2s_eval.engine import load_classifier
    from w2s_eval.guide import GuideLM
    from w2s_eval.scorers import RewardModelScorer
    from w2s_eval.tilt import split_space

    reqs = [_ll(c, y, i) for i, (c, y) in enumerate(PAIRS)]
    strong = base.loglikelihood(reqs)
    got = cbs.loglikelihood(reqs)
    tuned = GuideLM(cbs.engine.tuned[0], incremental=False)
    untuned = GuideLM(cbs.engine.untuned, incremental=False)
    split = [split_space(c, y) for c, y in PAIRS]
    xs, ys = [c for c, _ in split], [y for _, y in split]
    lt, _ = tuned.logprob_sums(xs, ys, [False] * len(xs))
    lu, _ = untuned.logprob_sums(xs, ys, [False] * len(xs))
    model, tok = load_classifier(toy_dirs["rm"], dtype="float32", device="cpu")
    rm = RewardModelScorer(model, tok)(xs, ys, [False] * len(xs))
    for (s, sg), (g, gg), a, b, r in zip(strong, got, lt.tolist(), lu.tolist(), rm.tolist()):
        assert g == f32_approx(s + 0.7 * (a - b) + 0.5 * r, s, 0.7 * a, 0.7 * b, 0.5 * r, rel=1e-5)
        assert gg == sg  # is_greedy comes from the strong model
    assert any(abs(g - s) > 1e-2 for (s, _), (g, _) in zip(strong, got))


def test_beta_zero_and_eft(toy_dirs, base):
    reqs = [_ll(c, y, i) for i, (c, y) in enumerate(PAIRS)]
    ref = base.loglikelihood(reqs)
    zero = W2SLM(
        strong=toy_dirs["strong"],
        tuned=toy_dirs["tuned"],
        untuned=toy_dirs["untuned"],
        method="cbs",
        beta=0.0,
        device="cpu",
        dtype="float32",
    )
    assert [a for a, _ in zero.loglikelihood(reqs)] == f32_approx([a for a, _ in ref])
    eft = W2SLM(
        strong=toy_dirs["strong"],
        tuned=toy_dirs["tuned"],
        untuned=toy_dirs["untuned"],
        method="eft",
        beta=1.5,
        device="cpu",
        dtype="float32",
    )
    got = [a for a, _ in eft.loglikelihood(reqs)]
    # by hand: per token, log_softmax(strong) + 1.5 (log_softmax(tuned) - log_softmax(untuned)), renormalised
    lms = [eft.engine.policy.lm, eft.engine.tuned[0], eft.engine.untuned]
    for (ctx, cont), value in zip(PAIRS, got):
        c_ids, y_ids = eft._encode_pair(ctx, cont)
        ids = torch.tensor([c_ids + y_ids])
        with torch.no_grad():
            lp = [torch.log_softmax(m.model(ids).logits.float()[0], -1) for m in lms]
        mix = torch.log_softmax(lp[0] + 1.5 * (lp[1] - lp[2]), -1)
        expected = sum(float(mix[len(c_ids) - 1 + t, y]) for t, y in enumerate(y_ids))
        assert value == f32_approx(expected, rel=1e-5)
    assert any(abs(a - b) > 1e-2 for a, (b, _) in zip(got, ref))


def test_eft_loglikelihood_is_the_samplers_over_padded_embeddings(toy_dirs, tmp_path):
    """Models whose embeddings have more rows than their tokenizer (Qwen pads 271): the lm-eval EFT
    loglikelihood and serve's EFT token logprobs are the sums of the sampler's own normalised per-token
    log-probs (one shared vocabulary: the tokenizer's, :func:`w2s_eval.policy.shared_vocab`)."""
    from devtools.toy import build_causal_lm
    from w2s_eval.config import SamplingConfig, parse_method
    from w2s_eval.policy import LocalSession
    from w2s_eval.serve.scoring import score_sequences

    dirs = {
        name: build_causal_lm(str(tmp_path / name), toy_dirs["tok_a"], seed=seed, pad_rows=pad)
        for name, seed, pad in (("strong", 0, 9), ("tuned", 1, 5), ("untuned", 2, 7))
    }
    eft = W2SLM(
        strong=dirs["strong"],
        tuned=dirs["tuned"],
        untuned=dirs["untuned"],
        method="eft",
        beta=1.5,
        device="cpu",
        dtype="float32",
    )
    n = len(eft.tokenizer)
    with torch.no_grad():  # rows no token uses, likely under each model (tied embeddings: output rows only)
        for lm in (eft.engine.policy.lm, *eft.engine.tuned, eft.engine.untuned):
            lm.model.get_output_embeddings().weight[n:] *= 8
    assert eft.engine.policy.lm.model.config.vocab_size == n + 9
    got = [a for a, _ in eft.loglikelihood([_ll(c, y, i) for i, (c, y) in enumerate(PAIRS)])]
    method = parse_method("eft:beta=1.5")
    run = eft.engine.prepare(method)
    for (ctx, cont), value in zip(PAIRS, got):
        c_ids, y_ids = eft._encode_pair(ctx, cont)
        # the sampler's per-token log-probs: its session fed the continuation token by token
        lms, combine = run.policy._sources()
        session = LocalSession(lms, combine, [c_ids], SamplingConfig(max_new_tokens=len(y_ids)), [0])
        want = 0.0
        for y in y_ids:
            with torch.no_grad():
                logits = session._next_logits(torch.ones(1, dtype=torch.bool))
            want += float(torch.log_softmax(logits.double(), -1)[0, y])
            session.pending = torch.tensor([y])
        assert value == pytest.approx(want, rel=1e-5)
        [served] = score_sequences(eft.engine, method, [c_ids + y_ids], [len(c_ids)], 1)
        assert sum(served.token_logprobs) == pytest.approx(want, rel=1e-5)


def test_generate_until_cbs_honours_request_and_records_stats(cbs):
    reqs = [
        _gen("The movie was", {"until": ["e"], "max_gen_toks": 6, "do_sample": True, "temperature": 0.9}, 0),
        _gen("I loved the", {"until": "zz", "max_gen_toks": 8}, 1),
        _gen("I loved the", {"until": "zz", "max_gen_toks": 8}, 2),
    ]  # a repeat of request 1
    texts = cbs.generate_until(reqs)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert "e" not in texts[0]
    rows = [json.loads(x) for x in open(cbs.stats.path, encoding="utf-8")][1:]
    assert len(rows) == 3
    by_doc = {r["doc_id"]: r for r in rows}
    assert by_doc[0]["sampling"] == {
        "temperature": 0.9,
        "top_k": 0,
        "top_p": 1.0,
        "max_new_tokens": 6,
        "stop": ["e"],
        "seed": 0,
    }
    assert by_doc[1]["sampling"]["temperature"] == 0.8  # the task left it open: the model arg
    assert all(r["samples"] >= 4 and r["guide_tokens"] > 0 and r["strong_tokens"] > 0 for r in rows)
    assert all(max(r["beam_tokens"]) <= r["sampling"]["max_new_tokens"] for r in rows)
    assert by_doc[1]["seed"] != by_doc[2]["seed"]  # repeats are distinct samples
    assert by_doc[0]["method"] == "cbs:w=2,k=2,l=3"


def test_crash_keeps_finished_requests_in_the_cache(toy_dirs, tmp_path, monkeypatch):
    from lm_eval.api.model import CachingLM

    lm = W2SLM(strong=toy_dirs["strong"], method="base", device="cpu", dtype="float32", batch_size=2)
    reqs = [
        _gen(p, {"until": ["."], "max_gen_toks": 5, "do_sample": False}, i)
        for i, p in enumerate(["The movie was", "I loved the", "This film is a", "We hated it but"])
    ]
    real, calls = lm.engine.generate, []

    def crashing(prompts, *a, **k):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real(prompts, *a, **k)

    monkeypatch.setattr(lm.engine, "generate", crashing)
    with pytest.raises(RuntimeError):
        CachingLM(lm, str(tmp_path / "cache.db")).generate_until(reqs)
    calls.clear()
    monkeypatch.setattr(
        lm.engine, "generate", lambda prompts, *a, **k: calls.append(len(prompts)) or real(prompts, *a, **k)
    )
    again = CachingLM(lm, str(tmp_path / "cache.db")).generate_until(reqs)
    assert calls == [2]  # the first batch came from the cache
    assert again == W2SLM.generate_until(lm, reqs)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"until": [1, "x"]}, "until"),
        ({"until": {"a": 1}}, "until"),
        ({"until": ["x"], "max_gen_toks": 0}, "max_new_tokens"),
        ({"until": ["x"], "temperature": -1}, "temperature"),
    ],
)
def test_bad_generation_kwargs_fail_before_generation(base, monkeypatch, kw, match):
    monkeypatch.setattr(base.engine, "generate", lambda *a, **k: pytest.fail("generated before checking"))
    reqs = [_gen("The movie was", {"until": ["."]}, 0), _gen("I loved", kw, 1)]
    with pytest.raises(ValueError, match=match):
        base.generate_until(reqs)


def test_bad_model_args_fail_at_construction(toy_dirs, tmp_path):
    s = toy_dirs["strong"]
    with pytest.raises(ValueError, match=r"unknown model_args key\(s\) bogus; valid keys: .*strong.*tuned"):
        W2SLM.create_from_arg_obj({"strong": s, "bogus": 1}, {"batch_size": 1, "device": "cpu"})
    with pytest.raises(ValueError, match="strong=PATH_OR_ID"):
        W2SLM.create_from_arg_string("method=base", {"device": "cpu"})
    with pytest.raises(ValueError, match="needs a guide"):
        W2SLM(strong=s, method="cbs", device="cpu")
    with pytest.raises(ValueError, match="one vocabulary"):
        W2SLM(strong=s, tuned=toy_dirs["tuned_b"], untuned=toy_dirs["untuned_b"], method="eft", device="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        W2SLM(strong=str(tmp_path / "missing_model"), method="base", device="cpu")
    # --device from lm-eval's CLI defaults to cuda:0; without CUDA the backend uses the CPU
    lm = W2SLM.create_from_arg_obj({"strong": s, "method": "base"}, {"batch_size": "4", "device": "cuda:0"})
    assert lm.device.type == ("cuda" if torch.cuda.is_available() else "cpu") and lm.batch_size == 4


def test_chat_template_hooks(base):
    """--apply_chat_template / --system_instruction go through these lm-eval hooks."""
    chat = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Review the film."}]
    tok = base.engine.policy.lm.tokenizer
    assert base.chat_template(True) == tok.chat_template
    assert base.apply_chat_template(chat) == tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert base.apply_chat_template(chat).endswith("<|assistant|>")
    assert base.tokenizer_name == tok.name_or_path.replace("/", "__")


def test_endpoint_args_are_forwarded(monkeypatch):
    import w2s_eval.lm_eval_backend.backend as backend
    from w2s_eval.engine import Engine

    seen = {}

    class FakePolicy:
        name = "endpoint"

    def fake_build_engine(spec):
        seen.update(spec.to_dict())
        return Engine(FakePolicy())

    monkeypatch.setattr(backend, "build_engine", fake_build_engine)
    lm = W2SLM(strong_endpoint="http://127.0.0.1:9/v1", strong_model="served", method="base")
    assert seen["strong_endpoint"] == "http://127.0.0.1:9/v1" and seen["strong_model"] == "served"
    assert lm.strong is None  # loglikelihood then asks the server: tests/test_lm_eval_endpoint.py


def test_loglikelihood_split_on_oom_equals_unsplit(toy_dirs, caplog, monkeypatch):
    """Issue 15 item 4 on the lm-eval path: a strong forward that runs out of memory above one row is
    rerun on halves (down to single rows) and gives the unsplit numbers, logged once."""
    from test_oom import oom_above

    monkeypatch.setattr("w2s_eval.lm._OOM_WARNED", set())
    lm = W2SLM(strong=toy_dirs["strong"], method="base", device="cpu", dtype="float32", batch_size=4)
    reqs = [_ll(c, y, i) for i, (c, y) in enumerate(PAIRS + [("", " the movie")])]
    ref = lm.loglikelihood(reqs)
    with caplog.at_level("WARNING", logger="w2s_eval.lm"), oom_above(lm.strong, 1) as seen:
        split = lm.loglikelihood(reqs)
    assert max(seen) > 1 and seen.count(1) >= len(reqs)  # a batch failed, then single rows ran
    assert [g for _, g in split] == [g for _, g in ref]
    assert [x for x, _ in split] == f32_approx([x for x, _ in ref])
    assert sum("ran out of memory" in r.message for r in caplog.records) == 1


def test_greedy_warning_gives_the_hint_that_applies(toy_dirs, caplog):
    """Issue 12 item 9: with the model arg temperature already set, the hint names what made the request
    greedy (the task's do_sample=false or temperature=0, or the model arg itself), never 'temperature=0.7' as
    if nothing were set."""
    kw = dict(
        strong=toy_dirs["strong"],
        reward_model=toy_dirs["rm"],
        method="bon",
        n=2,
        device="cpu",
        dtype="float32",
        batch_size=2,
        max_gen_toks=3,
    )
    sampled = W2SLM(temperature=0.7, **kw)
    with caplog.at_level("WARNING", logger="w2s_eval.lm_eval_backend.backend"):
        sampled.generate_until(
            [
                _gen("The movie was", {"until": ["."], "do_sample": False}, 0),
                _gen("I loved the", {"until": ["."], "temperature": 0}, 1),
                _gen("This film is", {"until": ["."]}, 2),
            ]
        )  # samples at 0.7: no warning
    greedy = [r.getMessage() for r in caplog.records if "greedy decoding" in r.getMessage()]
    assert len(greedy) == 2
    assert "task sets do_sample=false (overriding the model arg temperature=0.7)" in greedy[0]
    assert "--gen_kwargs do_sample=true" in greedy[0]
    assert "task sets temperature=0 (overriding the model arg temperature=0.7)" in greedy[1]
    assert all("or the model arg temperature=0.7" not in m for m in greedy)
    caplog.clear()
    with caplog.at_level("WARNING", logger="w2s_eval.lm_eval_backend.backend"):
        W2SLM(temperature=0, **kw).generate_until([_gen("The movie was", {"until": ["."]}, 0)])
    [msg] = [r.getMessage() for r in caplog.records if "greedy decoding" in r.getMessage()]
    assert "the model arg temperature=0.0 asks for it; set temperature=0.7" in msg
    caplog.clear()
    with caplog.at_level("WARNING", logger="w2s_eval.lm_eval_backend.backend"):
        W2SLM(**kw).generate_until([_gen("The movie was", {"until": ["."]}, 0)])
    [msg] = [r.getMessage() for r in caplog.records if "greedy decoding" in r.getMessage()]
    assert msg.endswith("give the task do_sample/temperature or the model arg temperature=0.7")


def test_max_gen_toks_beyond_the_context_says_to_lower_it(base, toy_dirs, monkeypatch):
    """Issue 12 item 5 (lm-eval): truncation='left' is the default there, so max_gen_toks that fill the
    strong model's context (512) get the hint to lower max_gen_toks where it was set, before any generation."""
    monkeypatch.setattr(base.engine, "generate", lambda *a, **k: pytest.fail("generated before checking"))
    reqs = [_gen("The movie was", {"until": ["."]}, 0), _gen("I loved", {"until": ["."], "max_gen_toks": 512}, 1)]
    with pytest.raises(ValueError) as e:
        base.generate_until(reqs)
    msg = str(e.value)
    assert "w2s: max_gen_toks=512 (task t) leaves no room for the prompt in the strong model's context of 512" in msg
    assert "lower it below 512 in the task's generation_kwargs (or --gen_kwargs max_gen_toks=...)" in msg
    assert "truncation" not in msg
    lm = W2SLM(strong=toy_dirs["strong"], method="base", device="cpu", dtype="float32", max_gen_toks=600)
    with pytest.raises(ValueError, match="max_gen_toks=600 .* lower it below 512 in the model arg max_gen_toks"):
        lm.generate_until([_gen("The movie was", {"until": ["."]}, 0)])


def test_tilt_of_pairs_sharing_a_guide_token_sequence_in_one_call(base, cbs):
    """Pairs whose (context, continuation) give a guide the same token sequence split at different points
    (lm-eval's HFLM logits cache groups them by context + continuation[:-1]): in ONE call each gets the tilt
    it gets alone, which is the core GuideLM's (no cache). The strong part stays HFLM's (``--model hf``)."""
    from w2s_eval.guide import GuideLM

    pairs = [("The movie", " was great"), ("The movie was", " great"), ("The", " movie was great")]
    tuned = GuideLM(cbs.engine.tuned[0], incremental=False)
    untuned = GuideLM(cbs.engine.untuned, incremental=False)
    tok = tuned.lm.tokenizer
    seqs = [tuned.prefix_ids(c) + tok.encode(y, add_special_tokens=False) for c, y in pairs]
    assert seqs[0] == seqs[1] == seqs[2]  # one guide token sequence, three split points
    reqs = [_ll(c, y, i) for i, (c, y) in enumerate(pairs)]
    together = [a - s for (a, _), (s, _) in zip(cbs.loglikelihood(reqs), base.loglikelihood(reqs))]
    alone = [cbs.loglikelihood([r])[0][0] - base.loglikelihood([r])[0][0] for r in reqs]
    xs, ys = [c for c, _ in pairs], [y for _, y in pairs]
    lt, _ = tuned.logprob_sums(xs, ys, [False] * len(xs))
    lu, _ = untuned.logprob_sums(xs, ys, [False] * len(xs))
    [rm_term] = [g for g in cbs.engine.guides if g.kind != "implicit"]
    rm = torch.as_tensor(rm_term.scorer(xs, ys, [False] * len(xs))).tolist()
    ref = [0.7 * (a - b) + 0.5 * r for a, b, r in zip(lt.tolist(), lu.tolist(), rm)]
    assert len(set(round(x, 4) for x in ref)) == 3  # the splits really differ
    for t, a, r, a_t, a_u in zip(together, alone, ref, lt.tolist(), lu.tolist()):
        assert t == f32_approx(r, 0.7 * a_t, 0.7 * a_u, r, rel=1e-5)
        assert a == f32_approx(r, 0.7 * a_t, 0.7 * a_u, r, rel=1e-5)
