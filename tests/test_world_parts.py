"""Pieces of the imdb-mini builder: data splits, gold reward, pair labelling, guide init, sha256 checks."""

import math
from pathlib import Path

import pytest
import torch

from w2s_eval.world.data import TEMPLATE, Review, clean, load_imdb, make_splits


def _reviews(n=40):
    return [
        Review(f"imdb-{i}", f"word{i} " + ("great fun film " if i % 2 else "awful dull film ") * 3, i % 2)
        for i in range(n)
    ]


def test_splits_are_disjoint_deterministic_and_make_prompts():
    reviews = _reviews()
    a = make_splits(reviews, seed=3, n_train=25, n_heldout=12, n_prompts=5, prompt_words=(2, 4))
    b = make_splits(reviews, seed=3, n_train=25, n_heldout=12, n_prompts=5, prompt_words=(2, 4))
    c = make_splits(reviews, seed=4, n_train=25, n_heldout=12, n_prompts=5, prompt_words=(2, 4))
    assert a == b and a.train != c.train
    train, held = {r.id for r in a.train}, {r.id for r in a.heldout}
    assert len(train) == 25 and len(held) == 12 and not train & held
    assert [p["id"] for p in a.prompts] == [r.id for r in a.heldout[:5]]
    assert a.pair_heldout == a.heldout[5:]
    for p, r in zip(a.prompts, a.heldout):
        assert p["text"] == TEMPLATE + p["prefix"] and r.text.startswith(p["prefix"])
        assert 2 <= len(p["prefix"].split()) <= 4
    with pytest.raises(ValueError, match="n_train"):
        make_splits(reviews, 0, 30, 20, 5, (2, 4))
    with pytest.raises(ValueError, match="n_prompts"):
        make_splits(reviews, 0, 10, 5, 6, (2, 4))


def test_load_imdb_keeps_imdb_rows_and_reads_huge_fields(tmp_path):
    path = tmp_path / "r.csv"
    huge = "good " * 50_000  # 250 kB, over the csv module's default limit
    path.write_text(
        f'text,label,source\n"A<br /><br />fine  film",1,imdb\nshort,0,rotten_tomatoes\n"{huge}",0,imdb\n',
        encoding="utf-8",
    )
    rows = load_imdb(path)
    assert [r.id for r in rows] == ["imdb-0", "imdb-2"] and rows[0].text == "A fine film" and rows[0].label == 1
    assert len(rows[1].text) > 200_000
    bad = tmp_path / "bad.csv"
    bad.write_text("review,score\nx,1\n")
    with pytest.raises(ValueError, match="lacks columns"):
        load_imdb(bad)
    assert clean("a <br/>b  <i>c</i>") == "a b c"


def test_gold_is_the_log_odds_of_prompt_plus_response():
    from w2s_eval.world.gold import train_gold, vader_judge

    texts = ["great wonderful film loved it", "awful boring film hated it"] * 20
    labels = [1, 0] * 20
    gold, info = train_gold(texts, labels, C=4.0, max_features=1000)
    assert info["train_reviews"] == 40 and gold.accuracy(texts, labels) == 1.0
    r = gold(["A review: ", "A review: "], ["great wonderful", "awful boring"])
    p = gold.classifier.predict_proba(
        gold.vectorizer.transform(["A review: great wonderful", "A review: awful boring"])
    )
    assert r == pytest.approx([math.log(p[0, 1]) - math.log(p[0, 0]), math.log(p[1, 1]) - math.log(p[1, 0])])
    assert r[0] > 0 > r[1]
    j = vader_judge(["", ""], ["I loved this wonderful film", "terrible, awful, I hated it"])
    assert -1 <= j[1] < 0 < j[0] <= 1
    with pytest.raises(ValueError, match="one each"):
        gold(["a"], [])


def test_gold_pickle_checked_by_sha256(tmp_path):
    from w2s_eval.world.gold import load_gold, save_gold, train_gold

    gold, _ = train_gold(["good", "bad"] * 5, [1, 0] * 5, max_features=10)
    save_gold(gold, tmp_path / "gold.pkl")
    from w2s_eval.assets import sha256_file

    assert load_gold(tmp_path / "gold.pkl", sha256_file(tmp_path / "gold.pkl")).texts(["good"])[0] > 0
    with pytest.raises(ValueError, match="corrupted"):
        load_gold(tmp_path / "gold.pkl", "0" * 64)
    with pytest.raises(FileNotFoundError, match="world build"):
        load_gold(tmp_path / "none.pkl")


def test_pairs_argmax_and_bradley_terry_labels():
    from w2s_eval.world.pairs import label_pairs

    def gold(prompts, responses):
        return [float(len(r)) for r in responses]

    prompts = ["p"] * 4000
    pairs = [("aa", "a")] * 4000  # gold gap 1: BT prefers "aa" with probability sigmoid(1)
    hard = label_pairs(prompts, pairs, gold, "argmax", seed=0)
    assert all(r["chosen"] == "aa" and r["r_chosen"] == 2.0 and r["r_rejected"] == 1.0 for r in hard)
    soft = label_pairs(prompts, pairs, gold, "bradley-terry", seed=0)
    share = sum(r["chosen"] == "aa" for r in soft) / len(soft)
    assert abs(share - 1 / (1 + math.exp(-1))) < 0.03
    assert soft == label_pairs(prompts, pairs, gold, "bradley-terry", seed=0)
    flipped = next(r for r in soft if r["chosen"] == "a")
    assert flipped["r_chosen"] == 1.0 and flipped["p_chosen"] == pytest.approx(1 - 1 / (1 + math.exp(-1)))
    with pytest.raises(ValueError, match="labels"):
        label_pairs(prompts[:1], pairs[:1], gold, "coin", 0)


def test_extreme_pairs_take_the_gold_best_and_worst_of_each_prefix():
    from w2s_eval.world.build import WorldConfig
    from w2s_eval.world.pairs import extreme_pairs

    def gold(prompts, responses):
        return [float(len(r)) + (0.5 if p == "q" else 0.0) for p, r in zip(prompts, responses)]

    assert extreme_pairs(["p", "q"], [["aa", "aaaa", "a"], ["b", "bbb", "bb"]], gold) == [("aaaa", "a"), ("bbb", "b")]
    assert extreme_pairs(["p"], [["a", "aaa"]], gold) == [("a", "aaa")]  # two samples stay as drawn (labels come later)
    with pytest.raises(ValueError, match="pair_samples"):
        WorldConfig(pair_samples=1)


def test_guide_embeddings_start_from_a_pca_of_the_strong_model(toy_dirs):
    from transformers import AutoTokenizer

    from w2s_eval.world.strong import input_embeddings
    from w2s_eval.world.train import GuideShape, init_guide

    tok = AutoTokenizer.from_pretrained(toy_dirs["tok_a"])
    E = input_embeddings(Path(toy_dirs["strong"]))
    g = init_guide(tok, E, GuideShape(layers=1, hidden=8, heads=2, intermediate=16), seed=0)
    W = g.get_input_embeddings().weight.detach()
    assert W.shape == (len(tok), 8) and W.std().item() == pytest.approx(0.02, rel=1e-3)
    assert g.get_output_embeddings().weight.data_ptr() == W.data_ptr()  # tied
    # the first column is the top principal direction: it explains more variance of E than a random direction
    Ec = E - E.mean(0)
    top = torch.corrcoef(torch.stack([W[:, 0], Ec @ torch.linalg.svd(Ec, full_matrices=False).Vh[0]]))[0, 1]
    assert abs(top.item()) > 0.99
    with pytest.raises(ValueError, match="tokenizer"):
        init_guide(tok, E[:10], GuideShape(layers=1, hidden=8, heads=2, intermediate=16), seed=0)
    with pytest.raises(ValueError, match="multiple of heads"):
        GuideShape(hidden=10, heads=4)


def test_corrupted_strong_model_file_is_deleted(tmp_path, monkeypatch):
    from w2s_eval.world import strong

    bad = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bad.write_bytes(b"not the model")
    monkeypatch.setattr(strong, "fetch_asset", lambda name, cache=None: bad)  # strong imported it at module top
    with pytest.raises(ValueError, match="sha256 mismatch.*deleted.*again"):
        strong.save_strong(strong.GGUF_SOURCE, tmp_path / "out", tmp_path)
    assert not bad.exists()


def test_world_config_validates():
    from w2s_eval.world.build import WorldConfig
    from w2s_eval.world.train import TrainSettings

    with pytest.raises(ValueError, match="pair_labels"):
        WorldConfig(pair_labels="coin")
    with pytest.raises(ValueError, match="n_train"):
        WorldConfig(n_train=0)
    with pytest.raises(ValueError, match="validate_prompts"):
        WorldConfig(n_prompts=4, validate_prompts=8)
    with pytest.raises(ValueError, match="lr"):
        TrainSettings(lr=0)
    assert WorldConfig().sft_reviews == WorldConfig().sft.steps * WorldConfig().sft.batch_size


@pytest.mark.parametrize("config", ["SFTConfig", "DPOConfig", "RewardConfig"])
def test_trainer_args_raise_no_deprecation_warning(config, tmp_path):
    """Issue 12 item 10: the TRL configs the world build makes warn about none of w2s-eval's arguments
    (``gradient_checkpointing`` is a deprecated alias in transformers 5) and keep checkpointing off."""
    import warnings

    import trl

    from w2s_eval.world.train import TrainSettings, _common_args

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        args = getattr(trl, config)(**_common_args(TrainSettings(lr=1e-3, steps=2), 0, str(tmp_path), 8, False))
    bad = [str(w.message) for w in seen if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert bad == []
    assert args.gradient_checkpointing is False


def test_pair_sampler_draws_from_the_warped_distribution():
    """The world's sampler (inverse CDF, one uniform per row) draws each token with its softmax probability
    at the temperature, never a banned (end-of-text) id, only among the top k when asked; seeded."""
    from w2s_eval.world.pairs import _draw

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5, 3.0]]).repeat(60_000, 1)
    g = torch.Generator().manual_seed(0)
    draws = _draw(logits.clone(), [5], 2.0, 0, g)
    expect = torch.softmax(torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5, -float("inf")]) / 2.0, -1)
    freq = torch.bincount(draws, minlength=6).double() / len(draws)
    assert freq[5] == 0
    assert torch.allclose(freq, expect.double(), atol=0.01), (freq, expect)
    top = _draw(logits.clone(), [5], 1.0, 2, torch.Generator().manual_seed(1))
    assert set(top.tolist()) == {0, 1}  # the two most likely ids once 5 is banned
    share0 = (top == 0).double().mean().item()
    assert share0 == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.01)
    assert torch.equal(draws, _draw(logits.clone(), [5], 2.0, 0, torch.Generator().manual_seed(0)))


def test_pair_sampler_never_draws_a_banned_first_id_even_at_u_zero(monkeypatch):
    """A uniform of exactly 0 (torch.rand can return it) lands on the first id of positive probability, not on
    id 0 when id 0 is banned."""
    from w2s_eval.world import pairs as pairs_mod

    monkeypatch.setattr(torch, "rand", lambda *shape, generator=None, device=None: torch.zeros(*shape))
    logits = torch.tensor([[5.0, -1.0, 0.0, 2.0]]).repeat(3, 1)
    assert pairs_mod._draw(logits, [0], 1.0, 0, torch.Generator()).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="temperature"):
        pairs_mod.sample_continuations(None, ["a"], 2, 3, seed=0, temperature=0.0)


def test_pair_sampler_gives_n_continuations_of_exactly_the_length(toy):
    """``sample_continuations``: n texts per prompt, each decoded from exactly max_new_tokens drawn ids (none of
    them an end-of-text id), the same for the same seed and batch size."""
    from w2s_eval.world import pairs as pairs_mod

    lm = toy["strong"]
    eos = set(lm.eos_ids)
    drawn = []
    real_draw = pairs_mod._draw

    def spy(*args, **kwargs):
        drawn.append(real_draw(*args, **kwargs))
        return drawn[-1]

    pairs_mod._draw, prompts = spy, ["a b", "c d e", "f"]
    try:
        out = pairs_mod.sample_continuations(lm, prompts, 2, 5, seed=3, batch_size=2, progress=False)
    finally:
        pairs_mod._draw = real_draw
    assert [len(o) for o in out] == [2, 2, 2]
    assert len(drawn) == 2 * 5 and all(not eos & set(d.tolist()) for d in drawn)
    ids = torch.stack(drawn[:5], 1)  # first batch: 2 prompts x 2 continuations, 5 tokens each
    assert out[0][1] == lm.tokenizer.decode(ids[1], skip_special_tokens=True)
    assert out == pairs_mod.sample_continuations(lm, prompts, 2, 5, seed=3, batch_size=2, progress=False)


@pytest.mark.parametrize("labels_from", [0, 3])
def test_plain_lm_head_equals_trls_fused_head(labels_from):
    """On the CPU the world's trainers use a plain LM head in place of TRL's chunked one: the same log-probs,
    loss, metrics and gradients (a tiny Llama; labels -100 before ``labels_from`` as TRL masks prompts)."""
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from w2s_eval.world.train import _plain_lm_head

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    fused = LlamaForCausalLM(cfg)  # float32: TRL's kernel computes in float32
    plain = copy.deepcopy(fused)
    outputs = ("log_probs", "entropy", "mean_logits", "is_top1")
    add_fused_lm_head(fused, outputs=outputs)
    add_fused_lm_head(plain, outputs=outputs)
    _plain_lm_head(plain, metrics=True)
    ids = torch.randint(0, 97, (3, 9))
    mask = torch.ones_like(ids)
    mask[2, :2] = 0  # left padding
    labels = ids.clone()
    labels[:, :labels_from] = -100
    labels[mask == 0] = -100
    a = fused(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    b = plain(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    for name in ("loss", "log_probs", "entropy", "mean_logits"):
        assert torch.allclose(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-5), name
    assert torch.equal(a.is_top1, b.is_top1) and torch.equal(a.label_mask, b.label_mask)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-6), name
    # without fused_lm_head the model is the model: logits as before
    assert torch.equal(fused(input_ids=ids).logits, plain(input_ids=ids).logits)
