"""FLOP counts (w2s_eval.flops) against hand computations on tiny models, and the counters that carry them."""

from w2s_eval import (
    GuideLM,
    ImplicitValueScorer,
    SamplingConfig,
    SearchConfig,
    TransformersPolicy,
    chunk_beam_search,
)
from w2s_eval.flops import (
    Cost,
    ModelShape,
    attended,
    shape_from_config,
    shape_of,
    total_flops,
)

PROMPTS = ["the film was", "a long and quiet story about the sea"]


def _toy_strong_by_hand(vocab: int) -> dict:
    """The toy strong model (devtools/toy.py: Llama, hidden 64, 2 layers, 4 heads of 16, 2 KV heads, MLP 128, tied)."""
    h, kv, mlp = 64, 2 * 16, 128
    layer = h * h + 2 * h * kv + h * h + 3 * h * mlp + 2 * h  # q, k, v, o, gate/up/down, two norms
    body = 2 * layer + h  # + the final norm
    return {"params": body + vocab * h, "N": body + vocab * h, "layers": 2, "d_attn": 64}


def test_shape_of_toy_by_hand(toy):
    lm = toy["strong"]
    vocab = lm.model.config.vocab_size
    hand = _toy_strong_by_hand(vocab)
    shape = shape_of(lm.model)
    # tied: the embedding table is no arithmetic, the output head is (the same matrix): N = all parameters
    assert shape == ModelShape(hand["params"], hand["N"], 2, hand["d_attn"])
    assert lm.shape == shape
    assert shape_from_config(lm.model.config) == shape  # from the config alone (meta device)


def test_untied_head_counts_once():
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    shape = shape_from_config(cfg)
    assert shape.params - shape.matmul_params == 100 * 32  # the input table left out, the head kept


def test_flops_formula_by_hand():
    shape = ModelShape(params=10, matmul_params=7, layers=2, attention_width=3, sliding_layers=1, window=4)
    # 3 tokens after 2 positions: contexts 3, 4, 5; the sliding layer sees 3, 4, 4
    assert shape.flops(3, 2) == 2 * 7 * 3 + 4 * 3 * (2 * (3 + 4 + 5) + 1 * (3 + 4 + 4))
    for n in range(0, 9):
        for before in range(0, 9):
            by_token = sum(2 * 7 + 4 * 3 * (2 * c + min(c, 4)) for c in range(before + 1, before + n + 1))
            assert shape.flops(n, before) == by_token
    assert attended(5, 0) == 15 and attended(5, 0, 2) == 1 + 2 + 2 + 2 + 2


def test_sliding_window_layout(toy_dirs):
    from transformers import AutoTokenizer

    from devtools.toy import tiny_causal_lm

    tok = AutoTokenizer.from_pretrained(toy_dirs["tok_a"])
    gemma = shape_of(tiny_causal_lm("gemma3", tok, layers=4, window=6))
    assert (gemma.layers, gemma.sliding_layers, gemma.window, gemma.attention_width) == (1, 3, 6, 2 * 16)
    mistral = shape_of(tiny_causal_lm("mistral", tok, layers=2, window=6))
    assert (mistral.layers, mistral.sliding_layers, mistral.window) == (0, 2, 6)
    llama = shape_of(tiny_causal_lm("llama", tok, layers=2))
    assert (llama.layers, llama.sliding_layers, llama.window) == (2, 0, None)


def test_base_sampling_flops_by_hand(toy):
    """Base sampling of one prompt: the prompt but its last token prefilled (contexts 1..P-1), then one token
    per step (contexts P..P-1+n): 2N per token plus 4 d_attn per attended position and layer."""
    lm = toy["strong"]
    hand = _toy_strong_by_hand(lm.model.config.vocab_size)
    cfg = SamplingConfig(temperature=1.0, top_k=0, max_new_tokens=7, seed=0)
    (r,) = chunk_beam_search(PROMPTS[1:], TransformersPolicy(lm), None, SearchConfig(1, 1, None), cfg)
    P = len(lm.tokenizer.encode(PROMPTS[1]))
    cost = r.stats["compute"]["strong"]
    n = r.stats["strong_tokens"] - (P - 1)
    assert cost["prefill_tokens"] == P - 1 and cost["forward_tokens"] == n
    assert cost["prefill_flops"] == 2 * hand["N"] * (P - 1) + 4 * 64 * 2 * sum(range(1, P))
    assert cost["forward_flops"] == 2 * hand["N"] * n + 4 * 64 * 2 * sum(range(P, P + n))
    assert r.stats["flops"] == cost["prefill_flops"] + cost["forward_flops"]


def test_cbs_counts_per_guide(toy):
    """CBS with the implicit value: each guide's forward tokens are half the guide_tokens counter (the two read
    the same tokens), its prefill is each prompt's templated text less its last token, once; the counters'
    values are unchanged; the strong model's tokens are strong_tokens."""
    tuned, untuned = GuideLM(toy["tuned"]), GuideLM(toy["untuned"])
    scorer = ImplicitValueScorer(tuned, untuned)
    cfg = SamplingConfig(temperature=1.0, top_k=0, max_new_tokens=9, seed=0)
    results = chunk_beam_search(PROMPTS, TransformersPolicy(toy["strong"]), scorer, SearchConfig(2, 2, 3), cfg)
    for prompt, r in zip(PROMPTS, results):
        c = r.stats["compute"]
        assert set(c) == {"strong", "tuned", "untuned"}
        assert c["strong"]["prefill_tokens"] + c["strong"]["forward_tokens"] == r.stats["strong_tokens"]
        assert c["tuned"]["forward_tokens"] == c["untuned"]["forward_tokens"] == r.stats["guide_tokens"] // 2
        assert c["tuned"]["prefill_tokens"] == len(tuned.prefix_ids(prompt)) - 1
        # the guides share one shape here, so their FLOPs are equal too
        assert c["tuned"]["forward_flops"] == c["untuned"]["forward_flops"]
        assert r.stats["flops"] == total_flops(c.values())
        guide_shape = toy["tuned"].shape
        # every response position attended at least 1 and at most prompt + response positions
        lo = guide_shape.flops(1) * c["tuned"]["forward_tokens"]
        assert lo <= c["tuned"]["forward_flops"] <= guide_shape.flops(1, 80) * c["tuned"]["forward_tokens"]


def test_incremental_guide_costs_equal_full_rescoring_of_new_tokens(toy):
    """A guide's incremental cost: the prompt once as prefill, then per round only the positions it added, attending
    to what its row keeps."""
    guide = GuideLM(toy["tuned"])
    shape = toy["tuned"].shape
    p = PROMPTS[0]
    prefix = guide.prefix_ids(p)
    first = guide.encode_responses([" good"])[0]
    _, n1, (c1,) = guide.logprob_sums_costed([p], [" good"], [False])
    assert c1.prefill_tokens == len(prefix) - 1 and c1.prefill_flops == shape.flops(len(prefix) - 1)
    assert c1.forward_tokens == n1[0] == len(first) and c1.forward_flops == shape.flops(len(first), len(prefix) - 1)
    second = guide.encode_responses([" good fun"])[0]
    assert second[: len(first)] == first  # the toy tokenizer keeps the first word's tokens
    _, n2, (c2,) = guide.logprob_sums_costed([p], [" good fun"], [False])
    before = len(prefix) + len(first) - 1  # the row holds prefix + first response but its last token
    assert c2.prefill_tokens == 0 and n2[0] == c2.forward_tokens == len(second) - len(first)
    assert c2.forward_flops == shape.flops(c2.forward_tokens, before)


def test_cost_adds_and_unknown_flops():
    a = Cost(2, 10, 3, 30)
    a += Cost(1, 5, 1, None)
    assert (a.prefill_tokens, a.prefill_flops, a.forward_tokens, a.forward_flops) == (3, 15, 4, None)
    assert a.tokens == 7 and a.flops is None
    assert total_flops([Cost(1, 2, 3, 4), {"prefill_flops": 1, "forward_flops": 1}]) == 8
    assert total_flops([a]) is None


def test_engine_names_roles(toy_dirs):
    from w2s_eval import build_engine

    engine = build_engine(
        toy_dirs["strong"],
        tuned=toy_dirs["tuned"],
        untuned=toy_dirs["untuned"],
        reward_model=toy_dirs["rm"],
        dtype="float32",
        device="cpu",
    )
    cfg = SamplingConfig(temperature=1.0, top_k=0, max_new_tokens=6, seed=0)
    (r,) = engine.generate(PROMPTS[:1], "bon:n=2", cfg)
    assert list(r.stats["compute"]) == ["reward_model", "strong", "tuned", "untuned"]
    rm = r.stats["compute"]["reward_model"]
    assert rm["prefill_tokens"] == 0 and rm["forward_tokens"] > 0 and rm["forward_flops"] > 0
    (e,) = engine.generate(PROMPTS[:1], "eft:beta=1", cfg)  # EFT's guides run inside the policy
    c = e.stats["compute"]
    assert c["tuned"]["forward_tokens"] == c["strong"]["forward_tokens"] == c["untuned"]["forward_tokens"]
    assert (
        e.stats["guide_tokens"]
        == c["tuned"]["prefill_tokens"]
        + c["tuned"]["forward_tokens"]
        + c["untuned"]["prefill_tokens"]
        + c["untuned"]["forward_tokens"]
    )
