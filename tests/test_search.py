"""CBS invariants on tiny models: equals HF sampling at W=K=1, BoN picks the argmax,
batched == one at a time, stop strings, exhaustive optimality on a toy tree."""

from dataclasses import replace

import pytest
import torch

from w2s_eval import SamplingConfig, SearchConfig, TransformersPolicy, chunk_beam_search
from w2s_eval.policy import Continuation, prompt_seed

PROMPTS = ["The movie was", "I loved this film because it was a wonderful story and", "Bad"]


class CountScorer:
    """Deterministic toy guide: how often a character occurs; records every call."""

    def __init__(self, char="e"):
        self.char, self.calls = char, []

    def __call__(self, prompts, responses, finished):
        self.calls.append((list(prompts), list(responses), list(finished)))
        return torch.tensor([float(r.count(self.char)) for r in responses])


def hf_generate(lm, prompt, seed, **gen) -> list[int]:
    """The token ids transformers' generate draws after ``prompt`` (EOS included when it came)."""
    ids = lm.tokenizer(prompt, return_tensors="pt").to(lm.device)
    torch.manual_seed(seed)
    out = lm.model.generate(**ids, do_sample=gen.pop("do_sample", True), pad_token_id=lm.pad_id, **gen)
    return out[0, ids["input_ids"].shape[1] :].tolist()


def hf_sample(lm, prompt, seed, **gen):
    return lm.tokenizer.decode(hf_generate(lm, prompt, seed, **gen), skip_special_tokens=True)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 20, 1.0), (1.3, 0, 0.8)])
def test_base_equals_hf_sampling_with_seed(toy, temperature, top_k, top_p):
    lm = toy["strong"]
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=24)
    for i, prompt in enumerate(PROMPTS):
        [res] = chunk_beam_search([prompt], TransformersPolicy(lm), None, SearchConfig(1, 1, None), cfg, seeds=[i])
        ref = hf_sample(lm, prompt, i, max_new_tokens=24, temperature=temperature, top_k=top_k, top_p=top_p)
        assert res.text == ref
        assert res.stats["samples"] == 1 and res.stats["rounds"] == 1


def test_cbs_w1_k1_any_l_equals_sampling(toy):
    cfg = SamplingConfig(max_new_tokens=20, seed=3)
    pol = TransformersPolicy(toy["strong"])
    base = chunk_beam_search(PROMPTS, pol, None, SearchConfig(1, 1, None), cfg)
    chunked = chunk_beam_search(PROMPTS, pol, None, SearchConfig(1, 1, 3), cfg)
    assert [r.text for r in chunked] == [r.text for r in base]
    assert chunked[0].stats["rounds"] == 7  # ceil(20 / 3) unless EOS came first
    assert [r.stats["strong_tokens"] for r in chunked] == [r.stats["strong_tokens"] for r in base]


def test_greedy_base_equals_hf_greedy(toy):
    lm = toy["strong"]
    cfg = SamplingConfig(temperature=0, max_new_tokens=16)
    res = chunk_beam_search(PROMPTS, TransformersPolicy(lm), None, SearchConfig(1, 1, None), cfg)
    for r, p in zip(res, PROMPTS):
        assert r.text == hf_sample(lm, p, 0, do_sample=False, max_new_tokens=16)


def test_bon_returns_argmax_of_exactly_n_samples(toy):
    scorer = CountScorer("e")
    cfg = SamplingConfig(max_new_tokens=20, seed=1)
    res = chunk_beam_search(PROMPTS, TransformersPolicy(toy["strong"]), scorer, SearchConfig(1, 6, None), cfg)
    assert len(scorer.calls) == 1
    prompts, responses, _ = scorer.calls[0]
    for b, r in enumerate(res):
        cands = [resp for p, resp in zip(prompts, responses) if p == PROMPTS[b]]
        assert len(cands) == 6
        assert r.score == max(c.count("e") for c in cands)
        assert r.text == max(cands, key=lambda c: c.count("e"))  # first argmax wins ties
        assert r.stats["samples"] == 6


def test_cbs_keeps_top_w_each_round(toy):
    scorer = CountScorer("a")
    cfg = SamplingConfig(max_new_tokens=12, seed=2)
    W, K = 2, 3
    res = chunk_beam_search(PROMPTS[:2], TransformersPolicy(toy["strong"]), scorer, SearchConfig(W, K, 4), cfg)
    # round 1 draws W*K per prompt; later rounds K per unfinished kept beam
    first = scorer.calls[0][0]
    assert [first.count(p) for p in PROMPTS[:2]] == [W * K, W * K]
    for r in res:
        assert len(r.beams) == W
        assert r.score == max(b.score for b in r.beams) == r.beams[0].score
        assert r.stats["samples"] <= W * K * 3


def test_batched_equals_one_at_a_time(toy):
    scorer = CountScorer("o")
    cfg = SamplingConfig(max_new_tokens=15, seed=7, temperature=0.9)
    pol = TransformersPolicy(toy["strong"])
    search = SearchConfig(2, 2, 4)
    batched = chunk_beam_search(PROMPTS, pol, scorer, search, cfg)
    single = [chunk_beam_search([p], pol, scorer, search, cfg)[0] for p in PROMPTS]
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.score for r in batched] == [r.score for r in single]
    assert [r.stats["strong_tokens"] for r in batched] == [r.stats["strong_tokens"] for r in single]
    assert batched[0].stats["seed"] == prompt_seed(7, PROMPTS[0])


def test_stop_strings_cut_text_and_finish(toy):
    pol = TransformersPolicy(toy["strong"])
    free = chunk_beam_search(PROMPTS, pol, None, SearchConfig(1, 1, None), SamplingConfig(max_new_tokens=30, seed=4))
    stops = ["e", "a"]
    cut = chunk_beam_search(
        PROMPTS, pol, None, SearchConfig(1, 1, None), SamplingConfig(max_new_tokens=30, seed=4, stop=stops)
    )
    hit = 0
    for f, c in zip(free, cut):
        idx = [f.text.find(s) for s in stops if s in f.text]
        if idx:
            hit += 1
            assert c.text == f.text[: min(idx)] and c.beams[0].ended
            assert c.stats["strong_tokens"] < f.stats["strong_tokens"] or f.beams[0].ended
        else:
            assert c.text == f.text
        assert not any(s in c.text for s in stops)
    assert hit >= 2


def test_prompt_whose_beams_finished_stops_costing(toy):
    """A prompt whose beams are done is not extended: max_new_tokens bounds every prompt's tokens."""
    cfg = SamplingConfig(max_new_tokens=8, seed=0)
    res = chunk_beam_search(PROMPTS, TransformersPolicy(toy["strong"]), CountScorer(), SearchConfig(2, 2, 3), cfg)
    for r, p in zip(res, PROMPTS):
        n_prompt = len(toy["strong"].tokenizer.encode(p))
        # prefill + at most max_new_tokens per sample drawn
        assert r.stats["strong_tokens"] <= (n_prompt - 1) + r.stats["samples"] * 3 + 4 * 8
        assert all(b.n_tokens <= 8 for b in r.beams)


class TreePolicy:
    """A fake strong engine over the alphabet {a, b, c}: the K children of a beam are its
    K one-letter extensions, in order. With K=3 and enough beams CBS enumerates all strings."""

    name = "tree"

    def start(self, prompts, cfg, seeds):
        class S:
            rows = [(b, "") for b in range(len(prompts))]
            strong_tokens = [0] * len(prompts)
            guide_tokens = [0] * len(prompts)

            def extend(self, parents, k, max_tokens):
                kids = []
                for p in parents:
                    b, text = self.rows[p]
                    for ch in "abc"[:k]:
                        kids.append((b, text + ch))
                self.rows = kids
                return [Continuation(b, t, False, len(t) >= cfg.max_new_tokens, len(t)) for b, t in kids]

        return S()


def test_cbs_finds_exhaustive_optimum_on_small_tree():
    table = {"a": 0.0, "b": 2.0, "c": 1.0}

    def value(s):  # non-monotone: the best string starts with the worst first letter
        return sum(table[c] for c in s) + (10.0 if s.startswith("aa") and s.endswith("c") else 0.0)

    def scorer(prompts, responses, finished):
        return torch.tensor([value(r) for r in responses])

    import itertools

    best = max(("".join(t) for t in itertools.product("abc", repeat=3)), key=value)
    assert best == "aac"
    cfg = SamplingConfig(max_new_tokens=3)
    [wide] = chunk_beam_search(["x"], TreePolicy(), scorer, SearchConfig(w=9, k=3, l=1), cfg)
    assert wide.text == best and wide.score == value(best)
    [greedy] = chunk_beam_search(["x"], TreePolicy(), scorer, SearchConfig(w=1, k=3, l=1), cfg)
    assert greedy.text == "bbb"  # a single beam is myopic here


def test_scorer_required_and_nan_scores_rejected(toy):
    pol = TransformersPolicy(toy["strong"])
    with pytest.raises(ValueError, match="need a scorer"):
        chunk_beam_search(["hi"], pol, None, SearchConfig(2, 2, 2), SamplingConfig(max_new_tokens=4))
    with pytest.raises(FloatingPointError, match="NaN/inf scores"):
        chunk_beam_search(
            ["hi"],
            pol,
            lambda p, r, f: torch.full((len(r),), float("nan")),
            SearchConfig(1, 2, None),
            SamplingConfig(max_new_tokens=4),
        )


def test_beams_keep_the_generated_token_ids(toy):
    """Beam.token_ids are the strong model's sampled tokens (transformers' generate, EOS apart), also where a
    byte-level token is part of a character, so the text re-encodes to other tokens; every kept beam of CBS
    decodes to its text with as many tokens as it counts."""
    lm = toy["strong"]
    tok, eos = lm.tokenizer, set(lm.eos_ids)
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=12)
    partial = 0
    for i, prompt in enumerate(PROMPTS + ["Ein Film über 😀"]):
        [res] = chunk_beam_search([prompt], TransformersPolicy(lm), None, SearchConfig(1, 1, None), cfg, seeds=[i])
        ref = hf_generate(lm, prompt, i, max_new_tokens=12, temperature=1.0, top_k=0)
        ended = ref[-1] in eos
        beam = res.beams[0]
        assert beam.token_ids == (ref[:-1] if ended else ref) and beam.eos == ended
        assert tok.decode(beam.token_ids) == beam.text and len(beam.token_ids) == beam.n_tokens
        partial += len(tok.encode(beam.text, add_special_tokens=False)) != len(beam.token_ids)
    assert partial  # the case that re-encoding the text gets wrong
    res = chunk_beam_search(PROMPTS, TransformersPolicy(lm), CountScorer(), SearchConfig(2, 2, 3), cfg)
    for r in res:
        for beam in r.beams:
            assert tok.decode(beam.token_ids) == beam.text and len(beam.token_ids) == beam.n_tokens
        assert r.text == r.beams[0].text


def test_stop_strings_cut_the_token_ids_with_the_text(toy):
    """Where a stop string cuts the text, the ids are the shortest prefix of the generated ones whose text
    covers it (a token straddling the cut stays); the response did not end on EOS. A stop string of two
    generated tokens drops both."""
    pol = TransformersPolicy(toy["strong"])
    tok = toy["strong"].tokenizer
    cfg = SamplingConfig(max_new_tokens=30, seed=4)
    free = chunk_beam_search(PROMPTS, pol, None, SearchConfig(1, 1, None), cfg)

    def check(f, c):
        ids = c.beams[0].token_ids
        assert ids == f.beams[0].token_ids[: len(ids)]
        assert tok.decode(ids).startswith(c.text)
        assert not ids or not tok.decode(ids[:-1]).startswith(c.text)
        assert c.text == f.text or (c.beams[0].ended and not c.beams[0].eos)
        return len(ids)

    for f, c in zip(
        free, chunk_beam_search(PROMPTS, pol, None, SearchConfig(1, 1, None), replace(cfg, stop=("e", "a")))
    ):
        check(f, c)
    dropped = 0
    for prompt, f in zip(PROMPTS, free):
        ids = f.beams[0].token_ids
        spans = [j for j in range(1, len(ids) - 1) if "\ufffd" not in tok.decode(ids[: j + 2])]
        if spans:
            stop = tok.decode(ids[spans[-1] : spans[-1] + 2])
            [c] = chunk_beam_search([prompt], pol, None, SearchConfig(1, 1, None), replace(cfg, stop=(stop,)))
            assert c.text == f.text[: f.text.index(stop)]
            dropped += c.beams[0].n_tokens - check(f, c) >= 2
    assert dropped
