"""EFT invariants, model loading, and the bad inputs of the engine."""

import pytest
import torch

from w2s_eval import (
    EFTPolicy,
    SamplingConfig,
    SearchConfig,
    TransformersPolicy,
    build_engine,
    chunk_beam_search,
    eft_logprobs,
    load_causal_lm,
    resolve_device,
)

PROMPTS = ["The movie was", "I loved this film because it", "Bad"]
BASE = SearchConfig(1, 1, None)


def test_eft_beta_zero_is_the_strong_distribution(toy):
    strong, tuned, untuned = toy["strong"], toy["tuned"], toy["untuned"]
    ids = torch.tensor([strong.tokenizer.encode("The movie was great")], device=strong.device)
    with torch.no_grad():
        logits = [lm.model(ids).logits[0, -1:].float() for lm in (strong, tuned, untuned)]
    assert torch.allclose(eft_logprobs(logits, [0.0]), torch.log_softmax(logits[0], -1), atol=1e-6)
    combo = eft_logprobs(logits, [1.5])
    lp = [torch.log_softmax(x, -1) for x in logits]
    assert torch.allclose(combo, lp[0] + 1.5 * (lp[1] - lp[2]), atol=1e-5)

    cfg = SamplingConfig(max_new_tokens=20, seed=11, temperature=0.8, top_k=30)
    base = chunk_beam_search(PROMPTS, TransformersPolicy(strong), None, BASE, cfg)
    eft0 = chunk_beam_search(PROMPTS, EFTPolicy(strong, [tuned], untuned, [0.0]), None, BASE, cfg)
    assert [r.text for r in eft0] == [r.text for r in base]
    assert [r.stats["strong_tokens"] for r in eft0] == [r.stats["strong_tokens"] for r in base]
    assert all(r.stats["guide_tokens"] == 2 * r.stats["strong_tokens"] for r in eft0)  # two guides read every token


def test_eft_batched_equals_one_at_a_time(toy):
    pol = EFTPolicy(toy["strong"], [toy["tuned"]], toy["untuned"], [1.0])
    cfg = SamplingConfig(max_new_tokens=12, seed=2)
    batched = chunk_beam_search(PROMPTS, pol, None, BASE, cfg)
    single = [chunk_beam_search([p], pol, None, BASE, cfg)[0] for p in PROMPTS]
    assert [r.text for r in batched] == [r.text for r in single]


def test_eft_on_mismatched_vocabularies_raises(toy):
    with pytest.raises(
        ValueError,
        match=r"vocabulary differs: .*tokenizer '[^']*strong' \(\d+ tokens\) differs from the "
        r"guide's tokenizer '[^']*tuned_b'",
    ):
        EFTPolicy(toy["strong"], [toy["tuned_b"]], toy["untuned"], [1.0])


def test_engine_runs_every_method_and_checks_guides(toy_dirs):
    eng = build_engine(toy_dirs["strong"], tuned=toy_dirs["tuned"], untuned=toy_dirs["untuned"], dtype="float32")
    cfg = SamplingConfig(max_new_tokens=10, seed=0)
    for spec, samples in [("base", 1), ("bon:n=3", 3), ("cbs:w=2,k=2,l=4", None), ("eft:beta=1.0", 1)]:
        res = eng.generate(PROMPTS, spec, cfg, batch_size=2)
        assert len(res) == len(PROMPTS)
        if samples:
            assert all(r.stats["samples"] == samples for r in res)
    bare = build_engine(toy_dirs["strong"], dtype="float32")
    with pytest.raises(ValueError, match="needs a guide"):
        bare.generate(PROMPTS, "cbs:w=2,k=2,l=4", cfg)
    with pytest.raises(ValueError, match="eft needs a tuned and an untuned"):
        bare.generate(PROMPTS, "eft:beta=1", cfg)
    with pytest.raises(ValueError, match="both tuned and untuned"):
        build_engine(toy_dirs["strong"], tuned=toy_dirs["tuned"])
    with pytest.raises(ValueError, match="no strong model"):
        build_engine(None)


def test_loading_paths_devices_dtypes(toy_dirs, tmp_path):
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    lm = load_causal_lm(toy_dirs["strong"], dtype="bfloat16", device="cpu")
    assert lm.model.dtype == torch.bfloat16 and lm.device.type == "cpu"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_causal_lm(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="unknown dtype"):
        load_causal_lm(toy_dirs["strong"], dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_causal_lm(toy_dirs["strong"], device="cuda")


def test_empty_and_too_long_prompts(toy, caplog):
    pol = TransformersPolicy(toy["strong"])
    with pytest.raises(ValueError, match="empty prompt"):
        chunk_beam_search(["ok", ""], pol, None, BASE, SamplingConfig(max_new_tokens=4))
    long_prompt = "the movie was great " * 200  # > 512 positions of the toy model
    with pytest.raises(ValueError, match="exceeds 'strong'.s context of 512.*truncation='left'"):
        chunk_beam_search([long_prompt], pol, None, BASE, SamplingConfig(max_new_tokens=4))
    with caplog.at_level("WARNING"):
        [r] = chunk_beam_search([long_prompt], pol, None, BASE, SamplingConfig(max_new_tokens=4, truncation="left"))
    assert "left-truncated" in caplog.text and r.stats["strong_tokens"] <= 512


def test_nan_logits_name_the_model(toy_dirs):
    lm = load_causal_lm(toy_dirs["strong"], dtype="float32", device="cpu", name="broken-strong")
    with torch.no_grad():
        lm.model.model.norm.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="broken-strong.*NaN/inf"):
        chunk_beam_search(["The movie"], TransformersPolicy(lm), None, BASE, SamplingConfig(max_new_tokens=3))
