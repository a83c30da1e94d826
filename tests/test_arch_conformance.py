"""Architecture conformance: tiny from_config models of each family (llama, qwen2, gemma3 text
with sliding and global layers, mistral with a sliding window, gpt2), as strong model and as guide.

Windows are 6 tokens, shorter than prompt + response, so a wrong window shows."""

import os

import pytest
import torch
from transformers import AutoTokenizer

from devtools.toy import FAMILIES, tiny_causal_lm
from w2s_eval import EFTPolicy, SamplingConfig, SearchConfig, TransformersPolicy, chunk_beam_search
from w2s_eval.guide import GuideLM
from w2s_eval.lm import CausalLM, KVRows, left_pad

PROMPTS = ["The movie was", "I loved this film because it was a wonderful story and the", "Bad"]
SEEDS = [5, 6, 7]
NEW = 14
EXTRA = ("qwen2-sliding",)  # Qwen2 with use_sliding_window: full and sliding layers, masks by layer type


@pytest.fixture(scope="module")
def fam(toy_dirs):
    tok = AutoTokenizer.from_pretrained(toy_dirs["tok_a"])
    device = os.environ.get("W2S_TEST_DEVICE", "cpu")
    return {f: CausalLM(tiny_causal_lm(f, tok, seed=i).to(device), tok, f) for i, f in enumerate(FAMILIES + EXTRA)}


def scratch_logits(lm, ids):
    """Next-token logits [V] of one unpadded sequence, no cache."""
    with torch.no_grad():
        return lm.model(input_ids=torch.tensor([ids], device=lm.device)).logits[0, -1].float()


@pytest.mark.parametrize("family", FAMILIES + EXTRA)
def test_cbs_w1_k1_equals_generate_for_every_chunk_length(fam, family):
    lm = fam[family]
    refs = []
    for prompt, seed in zip(PROMPTS, SEEDS):
        ids = lm.tokenizer(prompt, return_tensors="pt").to(lm.device)
        torch.manual_seed(seed)
        out = lm.model.generate(
            **ids, do_sample=True, max_new_tokens=NEW, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=lm.pad_id
        )
        refs.append(lm.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    cfg = SamplingConfig(max_new_tokens=NEW)
    for chunk in (1, 3, None):
        res = chunk_beam_search(PROMPTS, TransformersPolicy(lm), None, SearchConfig(1, 1, chunk), cfg, seeds=SEEDS)
        assert [r.text for r in res] == refs, (family, chunk)


def _grow(kv, lm, rows_ids, steps, gen):
    """Feed ``steps`` random tokens to every row (the first two in one pass, then one a pass),
    append them to rows_ids; return the logits [R, V] after the last one."""
    toks = torch.randint(3, len(lm.tokenizer), (kv.n_rows, steps), generator=gen)
    logits = kv.feed(toks[:, :2], torch.ones_like(toks[:, :2]))
    for t in range(2, steps):
        logits = kv.feed(toks[:, t : t + 1], torch.ones_like(toks[:, t : t + 1]))
    for r, row in enumerate(toks.tolist()):
        rows_ids[r].extend(row)
    return logits[:, -1]


@pytest.mark.parametrize("rewindable", [False, True], ids=["strong", "guide"])
@pytest.mark.parametrize("family", FAMILIES + EXTRA)
def test_reordered_cache_equals_recompute(fam, family, rewindable):
    """Rows reordered and duplicated (beam selection), then continued: the next-token logits equal
    those of the kept prefixes recomputed from scratch (the guide's rows also get holes)."""
    lm, gen = fam[family], torch.Generator().manual_seed(0)
    seqs = [lm.tokenizer.encode(p) for p in PROMPTS]
    kv = KVRows(lm, len(seqs), rewindable=rewindable)
    kv.feed(*left_pad(seqs, lm.pad_id, lm.device))
    rows_ids = [list(s) for s in seqs]
    _grow(kv, lm, rows_ids, 4, gen)
    keep = [2, 0, 0, 1, 2]
    kv.select(torch.tensor(keep))
    rows_ids = [list(rows_ids[k]) for k in keep]
    if rewindable:  # forget the last 3 tokens of two rows; other tokens follow there
        cut = [len(r) - 3 if i in (1, 3) else len(r) for i, r in enumerate(rows_ids)]
        kv.forget_after(torch.tensor(cut))
        rows_ids = [r[:c] for r, c in zip(rows_ids, cut)]
    last = _grow(kv, lm, rows_ids, 5, gen)
    for r, ids in enumerate(rows_ids):
        assert (last[r] - scratch_logits(lm, ids)).abs().max() <= 1e-4, (family, r)


ROUNDS = [  # responses of two rows per prompt over three calls: growing, re-tokenized, finished
    ["great", "bad", " so", " and the plot", "It", "x"],
    ["great fun and the acting was", "bad plot, boring", " so very good and", " and the plot was dark", "It was", "xy"],
    [
        "great fun and the acting was wonderful and sad",
        "bad plot, boring music and a sad end",
        " so very good and bright",
        " and the plot was dark and funny",
        "It was the worst",
        "xyz end",
    ],
]


@pytest.mark.parametrize("family", FAMILIES + EXTRA)
def test_incremental_guide_equals_full_rescoring(fam, family):
    """Past the window (6 tokens) by the response length: incremental == full == each sequence alone."""
    lm = fam[family]
    prompts = [p for p in PROMPTS for _ in range(2)]
    inc, full = GuideLM(lm, incremental=True), GuideLM(lm, incremental=False)
    for i, responses in enumerate(ROUNDS):
        finished = [i == 2 and j % 2 == 0 for j in range(len(responses))]
        a, _ = inc.logprob_sums(prompts, responses, finished)
        b, _ = full.logprob_sums(prompts, responses, finished)
        alone = torch.cat([full.logprob_sums([p], [r], [f])[0] for p, r, f in zip(prompts, responses, finished)])
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-4)
        torch.testing.assert_close(b, alone, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_eft_beta_zero_is_the_strong_model_as_strong_and_as_guide(fam, family):
    """EFT with beta=0 samples what the strong model alone samples (one vocabulary): the family as
    the strong model with the next family's guides, and as the guides of the previous family."""
    nxt = FAMILIES[(FAMILIES.index(family) + 1) % len(FAMILIES)]
    prv = FAMILIES[FAMILIES.index(family) - 1]
    cfg = SamplingConfig(max_new_tokens=NEW, temperature=0.8)
    for strong, guide in ((fam[family], fam[nxt]), (fam[prv], fam[family])):
        base = chunk_beam_search(PROMPTS, TransformersPolicy(strong), None, SearchConfig(1, 1, 4), cfg, seeds=SEEDS)
        eft = chunk_beam_search(
            PROMPTS, EFTPolicy(strong, [guide], guide, [0.0]), None, SearchConfig(1, 1, 4), cfg, seeds=SEEDS
        )
        assert [r.text for r in eft] == [r.text for r in base]
        assert all(r.stats["guide_tokens"] == 2 * r.stats["strong_tokens"] for r in eft)


@pytest.mark.parametrize("family", FAMILIES)
def test_eft_greedy_equals_recomputed_combination(fam, family):
    """EFT (beta=1) greedy decoding from the cached rows equals the argmax of the combination
    recomputed from scratch each token: the guides' caches are right for every family."""
    strong, tuned, untuned = fam[family], fam[FAMILIES[FAMILIES.index(family) - 1]], fam["llama"]
    cfg = SamplingConfig(max_new_tokens=10, temperature=0)
    res = chunk_beam_search(
        PROMPTS, EFTPolicy(strong, [tuned], untuned, [1.0]), None, SearchConfig(1, 1, 3), cfg, seeds=SEEDS
    )
    for prompt, r in zip(PROMPTS, res):
        ids = strong.tokenizer.encode(prompt)
        out = []
        for _ in range(10):
            lp = [torch.log_softmax(scratch_logits(m, ids + out), -1) for m in (strong, tuned, untuned)]
            nxt = int((lp[0] + lp[1] - lp[2]).argmax())
            if nxt == strong.tokenizer.eos_token_id:
                break
            out.append(nxt)
        assert r.text == strong.tokenizer.decode(out, skip_special_tokens=True)


def test_unsupported_attention_for_a_rewound_sliding_cache_is_refused(fam, monkeypatch):
    lm = fam["mistral"]
    monkeypatch.setattr(lm.model.config, "_attn_implementation", "flash_attention_2", raising=False)
    with pytest.raises(ValueError, match=r"'mistral' \(mistral\) has sliding-window layers.*incremental=False"):
        GuideLM(lm)  # refused when the guide is made, before any generation
    GuideLM(lm, incremental=False)  # without a cache, nothing rewinds: accepted


@pytest.mark.parametrize("family", FAMILIES)
def test_cbs_with_incremental_guides_equals_full_rescoring(fam, family):
    """CBS(2,2,3) steered by guides of the family: incremental guides pick what full re-scoring picks."""
    from w2s_eval.guide import ImplicitValueScorer

    strong, other = fam[FAMILIES[FAMILIES.index(family) - 1]], fam[FAMILIES[(FAMILIES.index(family) + 2) % 5]]
    cfg = SamplingConfig(max_new_tokens=12, seed=4)
    runs = []
    for incremental in (True, False):
        scorer = ImplicitValueScorer(
            GuideLM(fam[family], incremental=incremental), GuideLM(other, incremental=incremental), beta=1.0
        )
        runs.append(chunk_beam_search(PROMPTS, TransformersPolicy(strong), scorer, SearchConfig(2, 2, 3), cfg))
    assert [r.text for r in runs[0]] == [r.text for r in runs[1]]
    torch.testing.assert_close([r.score for r in runs[0]], [r.score for r in runs[1]], rtol=1e-6, atol=1e-4)
