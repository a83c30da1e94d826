"""Tiny, offline stand-ins for real models: byte-level BPE tokenizers trained on a
built-in corpus and randomly initialised Llama models (``from_config``), saved to
local directories. Tests and benchmarks use them; they download nothing.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

__all__ = [
    "CORPUS",
    "FAMILIES",
    "build_tokenizer",
    "build_causal_lm",
    "build_strong_and_guides",
    "build_classifier",
    "tiny_causal_lm",
]

_WORDS = (
    "the movie was great good bad awful wonderful boring plot actor acting story film scene music "
    "i loved hated it this that and but not very really so a an of to in is was were love hate best worst "
    "review funny sad dark bright happy end beginning character director camera we they you"
).split()

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(n_lines):
        n = int(torch.randint(4, 14, (1,), generator=g))
        idx = torch.randint(0, len(_WORDS), (n,), generator=g).tolist()
        lines.append(" ".join(_WORDS[i] for i in idx).capitalize() + ".")
    lines += ["Hello, world! It's 42 degrees.", "Here is a movie review from imdb: ", "0123456789 ,.!?'\n\n"]
    return lines


CORPUS = _corpus()


def build_tokenizer(
    path: str, vocab_size: int = 700, seed: int = 0, chat_template: bool = True, all_bytes: bool = True
) -> str:
    """Train a byte-level BPE tokenizer on the toy corpus and save it to ``path``. ``all_bytes``: every byte is
    a token (any text encodes); False: only the corpus's characters (ASCII), so every token is whole characters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if all_bytes else [],
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed=seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>", bos_token="<|endoftext|>"
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    os.makedirs(path, exist_ok=True)
    fast.save_pretrained(path)
    return path


def _llama_config(tokenizer, hidden: int, layers: int, pad_rows: int = 0, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer) + pad_rows,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 16),
        num_key_value_heads=max(1, hidden // 32),
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **extra,
    )


FAMILIES = ("llama", "qwen2", "gemma3", "mistral", "gpt2")


def tiny_causal_lm(
    family: str,
    tokenizer,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 4,
    window: int = 6,
    init_std: Optional[float] = None,
):
    """A random tiny causal LM of one architecture family (``FAMILIES``), built with ``from_config``,
    in eval mode. Mistral's layers all use a sliding window of ``window`` tokens; Gemma-3's
    (text model) alternate: every layer but the last slides, the last attends globally. ``init_std``
    (default 0.5, 0.2 for Gemma-3, which scales its embeddings up) keeps distributions far from uniform."""
    import transformers as tf

    common = dict(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=init_std or (0.2 if family == "gemma3" else 0.5),
    )
    heads = dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 16),
        num_key_value_heads=1,
        max_position_embeddings=512,
        **common,
    )
    if family == "llama":
        cls, cfg = tf.LlamaForCausalLM, tf.LlamaConfig(**heads)
    elif family in ("qwen2", "qwen2-sliding"):  # qwen2-sliding: the upper half of the layers slide
        sliding = dict(use_sliding_window=True, sliding_window=window, max_window_layers=layers // 2)
        cls, cfg = tf.Qwen2ForCausalLM, tf.Qwen2Config(**heads, **(sliding if family == "qwen2-sliding" else {}))
    elif family == "mistral":
        cls, cfg = tf.MistralForCausalLM, tf.MistralConfig(sliding_window=window, head_dim=16, **heads)
    elif family == "gemma3":
        types = ["sliding_attention"] * (layers - 1) + ["full_attention"]
        cls, cfg = (
            tf.Gemma3ForCausalLM,
            tf.Gemma3TextConfig(
                sliding_window=window, layer_types=types, head_dim=16, query_pre_attn_scalar=16, **heads
            ),
        )
    elif family == "gpt2":
        cls, cfg = (
            tf.GPT2LMHeadModel,
            tf.GPT2Config(n_embd=hidden, n_layer=layers, n_head=max(1, hidden // 16), n_positions=512, **common),
        )
    else:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}, qwen2-sliding")
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_causal_lm(
    path: str,
    tokenizer_dir: str,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
    init_std: float = 0.5,
    pad_rows: int = 0,
) -> str:
    """A random tiny Llama causal LM with the tokenizer of ``tokenizer_dir``, saved to ``path``.

    ``init_std`` is large so the random model's distributions are far from uniform. ``pad_rows``: embedding
    (and logit) rows beyond the tokenizer's vocabulary, as real models pad theirs (Qwen2.5: 271 rows).
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_llama_config(tok, hidden, layers, pad_rows, initializer_range=init_std))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_strong_and_guides(root: str, hidden: int = 256, layers: int = 4, init_std: float = 0.05) -> dict:
    """Paths of a strong Llama (``hidden`` x ``layers``, seed 0) and two guides, ``tuned`` and ``untuned``
    (64 x 2, seeds 1 and 2), sharing one toy tokenizer, saved under ``root`` (the benchmarks' models)."""
    tok = build_tokenizer(os.path.join(root, "tok"))
    shapes = {"strong": (hidden, layers), "tuned": (64, 2), "untuned": (64, 2)}
    return {
        name: build_causal_lm(os.path.join(root, name), tok, hidden=h, layers=n, seed=seed, init_std=init_std)
        for seed, (name, (h, n)) in enumerate(shapes.items())
    }


def build_classifier(
    path: str,
    tokenizer_dir: str,
    num_labels: int = 2,
    hidden: int = 32,
    layers: int = 1,
    seed: int = 0,
    id2label: Optional[dict] = None,
) -> str:
    """A random tiny Llama sequence classifier (``num_labels=1``: a reward model), saved to ``path``."""
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    labels = id2label or (
        {0: "NEGATIVE", 1: "POSITIVE"} if num_labels == 2 else {i: f"LABEL_{i}" for i in range(num_labels)}
    )
    cfg = _llama_config(
        tok,
        hidden,
        layers,
        num_labels=num_labels,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        initializer_range=0.5,
    )
    LlamaForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def train_causal_lm(
    path: str, steps: int, lr: float = 3e-3, batch: int = 16, seq: int = 32, seed: int = 0, device: str = "cpu"
) -> float:
    """Train the tiny causal LM in ``path`` for ``steps`` steps on the toy corpus (next-token loss),
    so it writes word-like text as a real LM does; saves it back and returns the last loss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).to(device)
    ids = torch.tensor(tok.encode(" ".join(CORPUS * 3)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    loss = torch.tensor(float("nan"))
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=g)
        x = torch.stack([ids[int(i) : int(i) + seq + 1] for i in starts]).to(device)
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(path)
    return float(loss.detach())
