"""Architecture conformance: tiny from_config models of each family (llama, qwen2, gemma3 text
with sliding and global layers, mistral with a sliding window, gpt2), as strong model and as guide.

Windows are 6 tokens, shorter than prompt + response, so a wrong window shows."""

import pytest
import torch
from transformers import AutoTokenizer

from w2s_eval import EFTPolicy, SamplingConfig, SearchConfig, TransformersPolicy, chunk_beam_search
from w2s_eval.guide import GuideLM
from w2s_eval.lm import CausalLM, KVRows, left_pad
from w2s_eval.toy import FAMILIES, tiny_causal_lm

PROMPTS = ["The movie was", "I loved this film because it was a wonderful story and the", "Bad"]
SEEDS = [5, 6, 7]
NEW = 14


@pytest.fixture(scope="module")
def fam(toy_dirs):
    tok = AutoTokenizer.from_pretrained(toy_dirs["tok_a"])
    return {f: CausalLM(tiny_causal_lm(f, tok, seed=i), tok, f) for i, f in enumerate(FAMILIES)}


def scratch_logits(lm, ids):
    """Next-token logits [V] of one unpadded sequence, no cache."""
    with torch.no_grad():
        return lm.model(input_ids=torch.tensor([ids], device=lm.device)).logits[0, -1].float()


@pytest.mark.parametrize("family", FAMILIES)
def test_cbs_w1_k1_equals_generate_for_every_chunk_length(fam, family):
    lm = fam[family]
    refs = []
    for prompt, seed in zip(PROMPTS, SEEDS):
        ids = lm.tokenizer(prompt, return_tensors="pt")
        torch.manual_seed(seed)
        out = lm.model.generate(**ids, do_sample=True, max_new_tokens=NEW, temperature=1.0, top_k=0, top_p=1.0,
                                pad_token_id=lm.pad_id)
        refs.append(lm.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
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
        logits = kv.feed(toks[:, t:t + 1], torch.ones_like(toks[:, t:t + 1]))
    for r, row in enumerate(toks.tolist()):
        rows_ids[r].extend(row)
    return logits[:, -1]


@pytest.mark.parametrize("rewindable", [False, True], ids=["strong", "guide"])
@pytest.mark.parametrize("family", FAMILIES)
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
