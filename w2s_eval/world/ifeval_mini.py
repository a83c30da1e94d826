"""The offline world ``ifeval-mini``: instruction following scored by lm-eval's own IFEval checker.

Built by the shared world builder (:func:`w2s_eval.world.build.build_world`, this module's :data:`RECIPE`):

- ``strong``: SmolLM2-135M-Instruct from its pinned wheel (as imdb-mini's).
- ``data``: the IFEval prompts whose constraints fit the response budget (:func:`fits_budget`), split by a seed
  into *validation* prompts (used to check and tune the guides) and *evaluation* prompts (never used for
  anything but the comparison); AlpacaEval instructions with their GPT-4 reference answers, split into training
  and held-out sets. Every prompt is stored as the strong model's chat text (a user turn with the generation
  prompt), so the strong model, the guides, EFT and the reward model all read the same string.
- ``untuned``: a small guide of the strong model's vocabulary, SFT on the chat-formatted reference answers.
- ``pairs``: preference pairs that follow or break IFEval-style constraints (:mod:`w2s_eval.world.ifeval_pairs`)
  on the training instructions (and held-out pairs on the held-out ones).
- ``tuned``: DPO of the untuned guide on those pairs; ``reward_model``: TRL's RewardTrainer on the same pairs.
- ``validate``: strong samples on the validation prompts, scored by the implicit value, the reward model, the
  gold reward and the judge (:func:`w2s_eval.world.validate.validate_guidance`).

Gold is the instruction-level loose fraction of lm-eval's IFEval checker
(:func:`w2s_eval.world.ifeval_data.check`); the judge, never used to choose anything, is the prompt-level strict
accuracy.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from transformers import AutoTokenizer

from ..assets import ASSETS
from ..checks import check_positive_int
from ..config import SamplingConfig
from ..engine import load_classifier
from ..lm import user_turn
from ..provenance import atomic_write_json
from ..world_registry import World
from .build import Recipe
from .data import read_jsonl, write_jsonl
from .ifeval_data import ALPACA_ASSET, IFEVAL_ASSET, check, load_alpaca_rows, load_ifeval_prompts, prepare_ifeval
from .ifeval_pairs import PairMaker, fits_budget, make_constraint_pairs
from .loader import built_manifest
from .steps import _files_sha, _lm
from .steps import step_reward_model as _imdb_reward_model
from .steps import step_strong as _imdb_strong
from .steps import step_tuned as _imdb_tuned
from .strong import DEFAULT_STRONG, GGUF_SOURCE, input_embeddings
from .train import GuideShape, TrainSettings, init_guide, train_sft
from .validate import validate_guidance

logger = logging.getLogger(__name__)

__all__ = ["IfevalWorldConfig", "IfevalGold", "RECIPE", "STEP_NAMES", "BUILD_TIME", "load_ifeval_mini"]

NAME = "ifeval-mini"
STEP_NAMES = ("strong", "data", "untuned", "pairs", "tuned", "reward_model", "validate")
# estimated from imdb-mini's measured quiet step times and the token counts (docs/ifeval-mini.md, "Build time")
BUILD_TIME = "about 13 min on 2 quiet CPU cores (estimated)"


@dataclass(frozen=True)
class IfevalWorldConfig:
    """Every setting of the ifeval-mini build (the defaults are the full world)."""

    seed: int = 0
    strong_source: str = "smollm2-gguf"  # or a model directory / hub id
    ifeval_path: Optional[str] = None  # None: the 541 prompts of the pinned wheel (w2s_eval.world.ifeval_data)
    alpaca_path: Optional[str] = None  # None: the 805 AlpacaEval rows of the pinned wheel; else a JSON list of them
    validate_prompts: int = 24  # IFEval prompts set aside to validate the guides (never evaluation prompts)
    n_prompts: int = 256  # evaluation prompts (at most; the rest of the fitting IFEval prompts)
    budget_words: int = 75  # a prompt is kept when its constraints can be met within this many words
    heldout_instructions: int = 64  # AlpacaEval instructions kept out of SFT and training pairs (held-out pairs)
    guide: GuideShape = GuideShape()
    pca_init: bool = True
    sft: TrainSettings = TrainSettings(lr=2e-3, batch_size=8, steps=96, max_length=160)
    pair_count: int = 1024
    heldout_pairs: int = 128
    reference_words: int = 60  # words of a reference answer kept in a pair (whole sentences)
    dpo: TrainSettings = TrainSettings(lr=5e-4, batch_size=16, epochs=1.0, max_length=256, warmup=0.1)
    dpo_beta: float = 0.1
    rm: TrainSettings = TrainSettings(lr=3e-4, batch_size=16, epochs=1.0, max_length=320, warmup=0.1)
    validate_samples: int = 16
    validate_limit: Optional[int] = None  # validate on the first N validation prompts only (None: all of them)
    sampling_tokens: int = 128  # the world's default max_new_tokens
    temperature: float = 0.7
    top_k: int = 50

    def __post_init__(self):
        for name in (
            "validate_prompts",
            "n_prompts",
            "budget_words",
            "heldout_instructions",
            "pair_count",
            "heldout_pairs",
            "reference_words",
            "validate_samples",
            "sampling_tokens",
        ):
            check_positive_int(f"IfevalWorldConfig.{name}", getattr(self, name))
        if self.validate_limit is not None:  # None: every validation prompt
            check_positive_int("IfevalWorldConfig.validate_limit", self.validate_limit)
        if self.validate_samples < 2:
            raise ValueError("IfevalWorldConfig.validate_samples must be >= 2 (best-of-k needs k >= 2)")
        if not self.temperature > 0:
            raise ValueError(f"IfevalWorldConfig.temperature must be > 0, got {self.temperature!r}")

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- gold and judge


class IfevalGold:
    """``gold(prompts, responses)``: lm-eval's IFEval instruction-level loose fraction of each response.

    ``rows``: the world's prompts (``text``: what the models read, ``prompt``: the IFEval prompt, with
    ``key``, ``instruction_id_list``, ``kwargs``); a prompt is found by either text. ``metric`` picks what is
    returned: ``inst_level_loose_frac`` (gold), ``prompt_level_strict_acc`` (the judge) or another key of
    :func:`w2s_eval.world.ifeval_data.check`.
    """

    def __init__(self, rows: Sequence[dict], metric: str = "inst_level_loose_frac"):
        self.metric = metric
        self._rows: dict = {}
        for r in rows:
            doc = {k: r[k] for k in ("key", "prompt", "instruction_id_list", "kwargs")}
            self._rows[r["text"]] = doc
            self._rows[r["prompt"]] = doc

    def scores(self, prompt: str, response: str) -> dict:
        """Every figure of :func:`w2s_eval.world.ifeval_data.check` for one response."""
        doc = self._rows.get(prompt)
        if doc is None:
            raise ValueError(f"the IFEval gold knows no prompt {prompt[:80]!r}...; score this world's prompts")
        return check(doc, response)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"IFEval gold got {len(prompts)} prompts and {len(responses)} responses; pass one each")
        return [float(self.scores(p, r)[self.metric]) for p, r in zip(prompts, responses)]


# ----------------------------------------------------------------------------- steps


def _chat(tok, text: str) -> str:
    return user_turn(tok, text)


def step_strong(ctx, out: Path) -> dict:
    return _imdb_strong(ctx, out)


def _split_alpaca(rows: list, seed: int, n_heldout: int) -> tuple[list, list]:
    order = list(range(len(rows)))
    random.Random(seed + 7).shuffle(order)
    return [rows[i] for i in order[n_heldout:]], [rows[i] for i in order[:n_heldout]]


def step_data(ctx, out: Path) -> dict:
    cfg = ctx.cfg
    tok = AutoTokenizer.from_pretrained(ctx.out("strong"))
    rows = load_ifeval_prompts(cfg.ifeval_path, cache=ctx.cache)
    fit = [r for r in rows if fits_budget(r["instruction_id_list"], r["kwargs"], cfg.budget_words)]
    order = list(range(len(fit)))
    random.Random(cfg.seed).shuffle(order)
    fit = [fit[i] for i in order]
    if len(fit) <= cfg.validate_prompts:
        raise ValueError(
            f"only {len(fit)} IFEval prompts fit {cfg.budget_words} words; lower validate_prompts "
            f"({cfg.validate_prompts}) or raise budget_words"
        )

    def world_row(r):
        return {
            "id": f"ifeval-{r['key']}",
            "text": _chat(tok, r["prompt"]),
            "prompt": r["prompt"],
            "key": r["key"],
            "instruction_id_list": r["instruction_id_list"],
            "kwargs": r["kwargs"],
        }

    validation = [world_row(r) for r in fit[: cfg.validate_prompts]]
    prompts = [world_row(r) for r in fit[cfg.validate_prompts : cfg.validate_prompts + cfg.n_prompts]]
    write_jsonl(out / "validation.jsonl", validation)
    write_jsonl(out / "prompts.jsonl", prompts)
    source = (
        load_alpaca_rows(cache=ctx.cache)
        if cfg.alpaca_path is None
        else json.loads(Path(cfg.alpaca_path).read_text(encoding="utf-8"))
    )
    alpaca = [{"instruction": a["instruction"], "reference": a["output"]} for a in source]
    ifeval_texts = {r["prompt"].strip() for r in rows}
    alpaca = [a for a in alpaca if a["instruction"].strip() not in ifeval_texts]
    train, heldout = _split_alpaca(alpaca, cfg.seed, cfg.heldout_instructions)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "heldout.jsonl", heldout)

    return {
        "source": {
            "ifeval": cfg.ifeval_path or f"{ASSETS[IFEVAL_ASSET].package}=={ASSETS[IFEVAL_ASSET].version}",
            "alpaca": cfg.alpaca_path or f"{ASSETS[ALPACA_ASSET].package}=={ASSETS[ALPACA_ASSET].version}",
        },
        "ifeval_prompts": len(rows),
        "fit_budget": len(fit),
        "budget_words": cfg.budget_words,
        "validation": len(validation),
        "prompts": len(prompts),
        "alpaca_train": len(train),
        "alpaca_heldout": len(heldout),
        "prompt_format": "the strong tokenizer's chat template (user turn)",
        "files": _files_sha(out),
    }


def step_untuned(ctx, out: Path) -> dict:
    cfg = ctx.cfg
    tok = AutoTokenizer.from_pretrained(ctx.out("strong"))
    emb = input_embeddings(ctx.out("strong")) if cfg.pca_init else None
    model = init_guide(tok, emb, cfg.guide, cfg.seed)
    del emb
    train = read_jsonl(ctx.out("data") / "train.jsonl")
    texts = [_chat(tok, a["instruction"]) + a["reference"] + (tok.eos_token or "") for a in train]
    info = train_sft(model, tok, texts, cfg.sft, cfg.seed, out, ctx.progress)
    info.update(
        shape=vars(cfg.guide).copy(),
        params=sum(p.numel() for p in model.parameters()),
        embeddings="PCA of the strong model's embeddings" if cfg.pca_init else "random",
        data="AlpacaEval instructions and GPT-4 reference answers, chat-formatted",
        files=_files_sha(out),
    )
    return info


def step_pairs(ctx, out: Path) -> dict:
    cfg = ctx.cfg
    tok = AutoTokenizer.from_pretrained(ctx.out("strong"))
    maker = PairMaker(max_words=cfg.reference_words)
    info: dict = {
        "maker": "w2s_eval.world.ifeval_pairs (lm-eval's IFEval instruction registry)",
        "reference_words": cfg.reference_words,
    }
    for i, (name, n) in enumerate((("train", cfg.pair_count), ("heldout", cfg.heldout_pairs))):
        items = [(a["instruction"], a["reference"]) for a in read_jsonl(ctx.out("data") / f"{name}.jsonl")]
        pairs, counts = make_constraint_pairs(items, n, cfg.seed + 30 + i, maker, cache=ctx.cache)
        for p in pairs:
            p["instruction_prompt"] = p["prompt"]
            p["prompt"] = _chat(tok, p["prompt"])
        write_jsonl(out / f"{name}.jsonl", pairs)
        info[name] = counts
    info["files"] = _files_sha(out)
    return info


def step_tuned(ctx, out: Path) -> dict:
    return _imdb_tuned(ctx, out)


def step_reward_model(ctx, out: Path) -> dict:
    return _imdb_reward_model(ctx, out)


def step_validate(ctx, out: Path) -> dict:
    cfg = ctx.cfg
    prepare_ifeval(ctx.cache)
    rows = read_jsonl(ctx.out("data") / "validation.jsonl")[: cfg.validate_limit]
    gold, judge = IfevalGold(rows), IfevalGold(rows, "prompt_level_strict_acc")
    rm = load_classifier(str(ctx.out("reward_model")), dtype="float32", device="auto")
    samples: list = []
    report = validate_guidance(
        _lm(ctx.out("strong")),
        _lm(ctx.out("tuned")),
        _lm(ctx.out("untuned")),
        rm,
        gold,
        judge,
        [r["text"] for r in rows],
        cfg.validate_samples,
        cfg.sampling_tokens,
        cfg.temperature,
        cfg.top_k,
        cfg.seed,
        progress=ctx.progress,
        stop_at_eos=True,
        samples_out=samples,
    )
    report["prompt_set"] = f"the {len(rows)} validation prompts (IFEval prompts that are not evaluation prompts)"
    report["judge"] = "prompt-level strict accuracy"
    tok = AutoTokenizer.from_pretrained(ctx.out("strong"))
    ended = [len(tok.encode(s["response"], add_special_tokens=False)) < cfg.sampling_tokens for s in samples]
    report["ended_share"] = round(sum(ended) / max(1, len(ended)), 4)  # ended before the token budget
    write_jsonl(out / "samples.jsonl", samples)
    atomic_write_json(out / "validation.json", report, sort_keys=False)
    return report


def _steps() -> dict:
    return {
        "strong": step_strong,
        "data": step_data,
        "untuned": step_untuned,
        "pairs": step_pairs,
        "tuned": step_tuned,
        "reward_model": step_reward_model,
        "validate": step_validate,
    }


def _describe(info: dict, cfg: IfevalWorldConfig) -> dict:
    v = info.get("validate", {})
    quality = {
        "train_pairs": info.get("pairs", {}).get("train", {}).get("pairs"),
        "constraint_types": info.get("pairs", {}).get("train", {}).get("types"),
        "dpo_heldout_pair_accuracy": info.get("tuned", {}).get("heldout", {}).get("pair_accuracy"),
        "rm_heldout_pair_accuracy": info.get("reward_model", {}).get("heldout", {}).get("pair_accuracy"),
    }
    for key in (
        "gold_mean",
        "judge_mean",
        "ended_share",
        "spearman_implicit_gold",
        "spearman_implicit_gold_within_prompt",
        "spearman_rm_gold",
        "spearman_rm_gold_within_prompt",
        "bon_gold_gain_by_implicit",
        "bon_gold_gain_by_rm",
        "bon_gold_gain_by_gold",
        "guidance_works",
    ):
        quality[key] = v.get(key)
    inputs = {
        "ifeval": info.get("data", {}).get("source", {}).get("ifeval"),
        "alpaca": info.get("data", {}).get("source", {}).get("alpaca"),
        "strong_gguf_sha256": info.get("strong", {}).get("gguf_sha256"),
        "strong_source": cfg.strong_source,
    }
    return {
        "inputs": inputs,
        "quality": quality,
        "paths": {
            "strong": "strong",
            "untuned": "untuned",
            "tuned": "tuned",
            "reward_model": "reward_model",
            "prompts": "data/prompts.jsonl",
            "validation": "data/validation.jsonl",
        },
    }


RECIPE = Recipe(NAME, IfevalWorldConfig, STEP_NAMES, _steps, _describe, BUILD_TIME)


# ----------------------------------------------------------------------------- loading


def load_ifeval_mini(home: Path):
    """The ``ifeval-mini`` world under ``home/worlds/ifeval-mini``; a clear error when it is not built."""
    path, manifest = built_manifest(NAME, home, RECIPE)
    prepare_ifeval(Path(home))
    rows = read_jsonl(path / manifest["paths"]["prompts"])
    cfg = manifest["config"]
    sampling = SamplingConfig(
        temperature=cfg["temperature"], top_k=cfg["top_k"], max_new_tokens=cfg["sampling_tokens"], seed=cfg["seed"]
    )
    paths = manifest["paths"]
    return World(
        name=NAME,
        strong=str(path / paths["strong"]),
        tuned=str(path / paths["tuned"]),
        untuned=str(path / paths["untuned"]),
        reward_model=str(path / paths["reward_model"]),
        prompts=tuple((r["id"], r["text"]) for r in rows),
        sampling=sampling,
        gold=IfevalGold(rows),
        judge=IfevalGold(rows, "prompt_level_strict_acc"),
        manifest=manifest,
        strong_name=DEFAULT_STRONG if manifest["inputs"].get("strong_source") == GGUF_SOURCE else None,
    )
