"""Guide scorers: incremental implicit value == full re-score, cross-tokenizer guides,
reward model and classifier scorers, bad guides."""

import pytest
import torch
from test_lm_eval_helpers import F32_REL, f32_approx

from w2s_eval import (
    ClassifierScorer,
    GuideLM,
    ImplicitValueScorer,
    RewardModelScorer,
    SamplingConfig,
    SearchConfig,
    TransformersPolicy,
    WeightedSum,
    chunk_beam_search,
    load_classifier,
)

PROMPTS = ["The movie was", "I loved this film because it was a wonderful story and", "Bad acting"]


def implicit_scale(scorer, prompts, responses, finished):
    """The summed magnitude behind each implicit value [N]: |beta| (|sum log p_tuned| + |sum log p_untuned|)
    (float32 log-probs agree to a few ulps of this, whatever the CPU; never compare them absolutely)."""
    lt, _ = scorer.tuned.logprob_sums(prompts, responses, finished)
    lu, _ = scorer.untuned.logprob_sums(prompts, responses, finished)
    return abs(scorer.beta) * (lt.abs() + lu.abs())


def f32_rel_diff(a, b, scale) -> float:
    """max |a - b| relative to the summed magnitude (floor 1, as f32_approx)."""
    return float(((a - b).abs() / scale.clamp(min=1.0)).max())


class Twin:
    """Scores with an incremental and a full-re-score scorer side by side, checks they agree
    (``max_rel``: the largest difference relative to the summed magnitude)."""

    def __init__(self, inc, full):
        self.inc, self.full, self.calls, self.max_rel = inc, full, 0, 0.0

    def score(self, prompts, responses, finished):
        a, b = self.inc.score(prompts, responses, finished), self.full.score(prompts, responses, finished)
        self.calls += 1
        scale = implicit_scale(self.full, prompts, responses, finished)
        self.max_rel = max(self.max_rel, f32_rel_diff(a.values, b.values, scale))
        self.inc_tokens = getattr(self, "inc_tokens", 0) + sum(a.tokens)
        self.full_tokens = getattr(self, "full_tokens", 0) + sum(b.tokens)
        return a

    def __call__(self, *args):
        return self.score(*args).values


def implicit(toy, tuned, untuned, incremental, template="{prompt}"):
    return ImplicitValueScorer(GuideLM(toy[tuned], template, incremental), GuideLM(toy[untuned], template, incremental))


@pytest.mark.parametrize(
    "tuned,untuned,L", [("tuned", "untuned", 3), ("tuned_b", "untuned_b", 4), ("tuned", "untuned_b", 1)]
)
def test_incremental_equals_full_rescore_in_cbs(toy, tuned, untuned, L):
    twin = Twin(implicit(toy, tuned, untuned, True), implicit(toy, tuned, untuned, False))
    cfg = SamplingConfig(max_new_tokens=14, seed=5, stop=["\n\n"])
    res = chunk_beam_search(PROMPTS, TransformersPolicy(toy["strong"]), twin, SearchConfig(2, 3, L), cfg)
    assert twin.calls >= 3
    assert twin.max_rel < F32_REL
    assert twin.inc_tokens < twin.full_tokens  # only new tokens were fed
    for r in res:
        assert r.stats["guide_tokens"] > 0


def test_incremental_survives_retokenisation_and_unrelated_calls(toy):
    """Text whose earlier tokens re-merge, prompts seen for the first time, a chat template."""
    for template in ("{prompt}", "chat", "Review: {prompt}\n"):
        inc = implicit(toy, "tuned", "untuned", True, template)
        full = implicit(toy, "tuned", "untuned", False, template)
        seqs = [
            (["The movie was"] * 3, [" gre", " grea", " x"], [False, False, False]),
            (["The movie was"] * 3, [" great", " great film", " xyz"], [False, True, False]),
            (["Other prompt", "The movie was"], [" hello", " great film and"], [False, False]),
            (["The movie was"], [""], [True]),
        ]
        for prompts, responses, fin in seqs:
            a = inc(prompts, responses, fin)
            b = full(prompts, responses, fin)
            scale = implicit_scale(full, prompts, responses, fin)
            assert f32_rel_diff(a, b, scale) < F32_REL, (template, responses, a, b)


def test_implicit_value_is_tuned_minus_untuned_logprob(toy):
    """Golden check against a direct computation with the raw models."""
    tuned, untuned = toy["tuned"], toy["untuned"]
    prompt, resp = "The movie was", " great fun"

    def logp(lm, finished):
        tok = lm.tokenizer
        p_ids, r_ids = tok.encode(prompt), tok.encode(resp, add_special_tokens=False)
        ids = p_ids + r_ids + ([lm.eos_ids[0]] if finished else [])
        with torch.no_grad():
            lp = torch.log_softmax(lm.model(torch.tensor([ids], device=lm.device)).logits[0].double(), -1)
        return sum(lp[i - 1, ids[i]].item() for i in range(len(p_ids), len(ids)))  # float64

    scorer = ImplicitValueScorer(GuideLM(tuned), GuideLM(untuned), beta=0.5)
    for fin in (False, True):
        got = scorer([prompt], [resp], [fin]).item()
        lt, lu = logp(tuned, fin), logp(untuned, fin)
        assert got == f32_approx(0.5 * (lt - lu), 0.5 * lt, 0.5 * lu)


def test_reward_model_and_classifier_scorers(toy_dirs):
    rm_model, rm_tok = load_classifier(toy_dirs["rm"], dtype="float32", device="cpu")
    rm = RewardModelScorer(rm_model, rm_tok)
    prompts, responses = ["The movie was", "Bad"], [" great", " awful and boring"]
    values = rm(prompts, responses, [True, True])
    texts = rm.texts(prompts, responses)
    assert "<|user|>The movie was" in texts[0]  # the chat template was applied
    with torch.no_grad():
        one = rm_model(**rm_tok(texts[1], return_tensors="pt")).logits[0, 0].item()
    assert values[1].item() == f32_approx(one, rel=1e-4)  # batched (padded) == alone: another kernel shape

    clf_model, clf_tok = load_classifier(toy_dirs["clf"], dtype="float32", device="cpu")
    clf = ClassifierScorer(clf_model, clf_tok, label="POSITIVE")
    v = clf(prompts, responses, [True, True])
    with torch.no_grad():
        logits = clf_model(**clf_tok(prompts[0] + responses[0], return_tensors="pt")).logits[0]
    l1, l0 = logits[1].item(), logits[0].item()
    assert v[0].item() == f32_approx(l1 - l0, l1, l0, rel=1e-4)

    both = WeightedSum([(2.0, rm), (-1.0, clf)])
    s = both.score(prompts, responses, [True, True])
    assert torch.allclose(s.values, 2 * values - v, atol=1e-6) and all(t > 0 for t in s.tokens)

    with pytest.raises(ValueError, match="exactly one"):
        RewardModelScorer(clf_model, clf_tok)
    with pytest.raises(ValueError, match="needs >= 2"):
        ClassifierScorer(rm_model, rm_tok)
    with pytest.raises(ValueError, match="not in"):
        ClassifierScorer(clf_model, clf_tok, label="neutral")


def test_bad_guides(toy):
    with pytest.raises(ValueError, match="must contain"):
        GuideLM(toy["tuned"], template="no placeholder")
    with pytest.raises(ValueError, match="empty prompt"):
        ImplicitValueScorer(GuideLM(toy["tuned"]), GuideLM(toy["untuned"]))([""], ["x"], [False])
    with pytest.raises(ValueError, match="beta must be a number"):
        ImplicitValueScorer(GuideLM(toy["tuned"]), GuideLM(toy["untuned"]), beta="high")


def test_guide_whose_tokenizer_cannot_decode_is_refused(toy_dirs, tmp_path):
    """A word-level tokenizer that maps unseen words to [UNK] cannot read strong-model text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from w2s_eval.lm import CausalLM

    word = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "</s>": 2}, unk_token="[UNK]"))
    word.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=word, unk_token="[UNK]", eos_token="</s>", pad_token="</s>")
    lm = CausalLM(model=None, tokenizer=tok, name="wordlevel-guide")
    with pytest.raises(ValueError, match="wordlevel-guide.*cannot decode"):
        GuideLM(lm)


def test_a_causal_lm_given_as_reward_model_is_named_as_such(toy_dirs):
    """issue 12 item 9: not "has 2 outputs" but what it is."""
    from w2s_eval.engine import load_classifier

    model, tok = load_classifier(toy_dirs["strong"], dtype="float32", device="cpu")
    with pytest.raises(
        ValueError,
        match=r"'strong' is not a sequence-classification model \(its config names "
        r"LlamaForCausalLM\)",
    ):
        RewardModelScorer(model, tok, name="strong")
