"""Load a built imdb-mini world from the cache as a :class:`w2s_eval.worlds.World`."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import SamplingConfig
from ..worlds import World
from .build import BUILD_TIME, WorldConfig, read_manifest, settings_diff, world_dir
from .data import read_jsonl
from .gold import load_gold, vader_judge
from .strong import DEFAULT_STRONG, GGUF_SOURCE

logger = logging.getLogger(__name__)

__all__ = ["load_imdb_mini"]


def load_imdb_mini(home: Path):
    """The ``imdb-mini`` world under ``home/worlds/imdb-mini``; a clear error when it is not built."""

    path = world_dir("imdb-mini", home)
    manifest = read_manifest(path) if path.exists() else None
    if not manifest or not manifest.get("complete"):
        state = "is not built" if not manifest else "is only partly built"
        raise FileNotFoundError(f"world imdb-mini {state} in {path}; build it ({BUILD_TIME}): "
                                "w2s-eval world build imdb-mini")
    paths = manifest["paths"]
    for key in ("strong", "untuned", "tuned", "reward_model", "gold", "prompts"):
        if not (path / paths[key]).exists():
            raise FileNotFoundError(f"world imdb-mini at {path} lacks {paths[key]}; rebuild it: "
                                    "w2s-eval world build imdb-mini --force")
    stale = settings_diff(manifest["config"], WorldConfig().to_dict(), new_is="default")
    if stale:  # usable (its manifest says what it is), but not what this version builds
        logger.warning("world imdb-mini at %s was built with other settings than this version's defaults: %s; "
                       "`w2s-eval world build imdb-mini --force` rebuilds it", path, stale)
    gold_sha = manifest["steps"]["gold"]["files"].get("gold.pkl")
    gold = load_gold(path / paths["gold"], sha256=gold_sha)
    prompts = tuple((p["id"], p["text"]) for p in read_jsonl(path / paths["prompts"]))
    cfg = manifest["config"]
    sampling = SamplingConfig(temperature=cfg["temperature"], top_k=cfg["top_k"], max_new_tokens=cfg["sampling_tokens"],
                              seed=cfg["seed"])
    return World(name="imdb-mini", strong=str(path / paths["strong"]), tuned=str(path / paths["tuned"]),
                 untuned=str(path / paths["untuned"]), reward_model=str(path / paths["reward_model"]), prompts=prompts,
                 sampling=sampling, gold=gold, judge=vader_judge, manifest=manifest,
                 strong_name=DEFAULT_STRONG if manifest["inputs"].get("strong_source") == GGUF_SOURCE else None)
