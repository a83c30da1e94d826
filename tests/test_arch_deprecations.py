"""No deprecation warning from w2s-eval's own calls into its dependencies (issue 12, item 10):
a CBS run with guides, EFT and guide scoring on tiny models of each family record none."""

import inspect
import warnings

import pytest
from transformers import AutoTokenizer

from devtools.toy import FAMILIES, tiny_causal_lm
from w2s_eval import EFTPolicy, SamplingConfig, SearchConfig, TransformersPolicy, chunk_beam_search
from w2s_eval.guide import GuideLM, ImplicitValueScorer
from w2s_eval.lm import CausalLM


@pytest.mark.parametrize("family", FAMILIES)
def test_search_and_guide_scoring_raise_no_deprecation_warning(toy_dirs, family):
    tok = AutoTokenizer.from_pretrained(toy_dirs["tok_a"])
    strong = CausalLM(tiny_causal_lm(family, tok, seed=0), tok, family)
    guide = CausalLM(tiny_causal_lm(family, tok, seed=1, layers=2), tok, "guide")
    cfg = SamplingConfig(max_new_tokens=8, seed=0)
    prompts = ["The movie was", "I loved this film because it"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scorer = ImplicitValueScorer(GuideLM(guide), GuideLM(strong), beta=1.0)
        chunk_beam_search(prompts, TransformersPolicy(strong), scorer, SearchConfig(2, 2, 3), cfg)
        chunk_beam_search(prompts, EFTPolicy(strong, [guide], strong, [1.0]), None, SearchConfig(1, 1, None), cfg)
        GuideLM(guide, incremental=False).logprob_sums(prompts, ["great fun", "bad"], [True, False])
    bad = [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in caught
        if issubclass(w.category, (DeprecationWarning, FutureWarning))
    ]
    assert not bad, "\n".join(bad)


def test_cache_argument_name_follows_the_model_signature():
    """The cache goes in under the name each model's forward takes (``cache`` where transformers has
    renamed it); a ``**kwargs`` wrapper gets the name the installed transformers' Llama takes."""
    import torch
    import transformers as tf

    from w2s_eval.lm import cache_kwarg

    class Wrapper(torch.nn.Module):
        def forward(self, *args, **kwargs):
            return None

    for cls in (tf.LlamaForCausalLM, tf.GPT2LMHeadModel, tf.Gemma3ForCausalLM, tf.MistralForCausalLM):
        assert cache_kwarg(cls) in inspect.signature(cls.forward).parameters
    assert cache_kwarg(Wrapper) == cache_kwarg(tf.LlamaForCausalLM)
