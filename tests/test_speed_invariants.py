"""The engine's speed paths compute exactly what the plain paths compute: the strong cache with room to grow
(kvroom) gives bitwise the logits of transformers' DynamicCache through growth, reorders with repeats, a change of
row count and an OOM-style row split; the guides' blocked log-probs equal one vocabulary-wide pass."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoTokenizer

from devtools.toy import tiny_causal_lm
from w2s_eval.guide import _token_logps
from w2s_eval.lm import CausalLM, KVRows, left_pad

PROMPTS = ["The movie was", "I loved this film because it was a wonderful story and the", "Bad"]


@pytest.fixture(scope="module")
def fam(toy_dirs):
    tok = AutoTokenizer.from_pretrained(toy_dirs["tok_a"])
    device = os.environ.get("W2S_TEST_DEVICE", "cpu")
    return {
        f: CausalLM(tiny_causal_lm(f, tok, seed=i).to(device), tok, f)
        for i, f in enumerate(("llama", "gemma3", "qwen2-sliding"))
    }


def _step(kvs, tokens):
    """Feed one token per row to every KVRows; their last logits [R, V]."""
    ids = tokens.unsqueeze(1)
    return [kv.feed(ids, torch.ones_like(ids))[:, -1] for kv in kvs]


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen2-sliding"])
def test_roomy_cache_equals_dynamic_cache(fam, family):
    lm, gen = fam[family], torch.Generator().manual_seed(0)
    seqs = [lm.tokenizer.encode(p) for p in PROMPTS]
    plain, roomy = KVRows(lm, len(seqs)), KVRows(lm, len(seqs), room=3)  # room 3: growth past it regrows
    assert any(type(layer).__name__ == "_RoomyLayer" for layer in roomy.cache.layers)
    outs = [kv.feed(*left_pad(seqs, lm.pad_id, lm.device))[:, -1] for kv in (plain, roomy)]
    assert torch.equal(outs[0], outs[1])
    n_rows = len(seqs)
    for step, keep in enumerate([None, [2, 0, 0, 1, 2], None, [4, 4, 1, 0, 3], [1, 1, 2], None, None, [0, 2, 1]]):
        if keep is not None:  # a beam selection: repeats, a new row count, then (twice) the same count again
            for kv in (plain, roomy):
                kv.select(torch.tensor(keep))
            n_rows = len(keep)
        tokens = torch.randint(3, len(lm.tokenizer), (n_rows,), generator=gen).to(lm.device)
        a, b = _step((plain, roomy), tokens)
        assert torch.equal(a, b), f"step {step}"
    assert roomy.cache.get_seq_length() == plain.cache.get_seq_length()


def test_roomy_cache_split_on_oom_equals_plain_split(fam):
    """Rows split across passes (as after an out-of-memory error): bitwise the plain cache's split passes, and
    the unsplit pass up to the float rounding of a smaller batch (what tests/test_oom.py allows)."""
    lm, gen = fam["llama"], torch.Generator().manual_seed(1)
    seqs = [lm.tokenizer.encode(p) for p in PROMPTS]
    kvs = [KVRows(lm, 3, room=2), KVRows(lm, 3, room=2), KVRows(lm, 3)]  # whole roomy, split roomy, split plain
    for kv in kvs:
        kv.feed(*left_pad(seqs, lm.pad_id, lm.device))
        kv.select(torch.tensor([1, 1, 0, 2]))
    kvs[1].rows_per_pass = kvs[2].rows_per_pass = 1
    for _ in range(4):
        tokens = torch.randint(3, len(lm.tokenizer), (4,), generator=gen).to(lm.device)
        whole, split, plain = _step(kvs, tokens)
        assert torch.equal(split, plain)
        torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-4)
        for kv in kvs:
            kv.select(torch.tensor([3, 0, 0, 1]))


@pytest.mark.parametrize("vocab", [7, 700, 5000])
def test_blocked_token_logps_equal_one_pass(toy, vocab):
    gen = torch.Generator().manual_seed(vocab)
    logits = 4 * torch.randn(6, 9, vocab, generator=gen)
    targets = torch.randint(0, vocab, (6, 9), generator=gen)
    mask = (torch.rand(6, 9, generator=gen) > 0.3).long()
    whole = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    for block in (1, 3 * vocab, 10**9):  # one position a block, three, everything in one
        assert torch.equal(_token_logps(toy["strong"], logits, targets, mask, block=block), whole)
    logits[0, 0, 0] = float("nan")
    mask[0, 0] = 0
    _token_logps(toy["strong"], logits, targets, mask, block=vocab)  # padding may hold anything
    mask[0, 0] = 1
    with pytest.raises(FloatingPointError, match="NaN"):
        _token_logps(toy["strong"], logits, targets, mask, block=vocab)
