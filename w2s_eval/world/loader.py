"""Load a built world from the cache as a :class:`w2s_eval.world_registry.World` (imdb-mini here; ifeval-mini in
:mod:`w2s_eval.world.ifeval_mini`), with the checks both share: complete, every file there, its prompts and model
weights matching the sha256s of its manifest."""

from __future__ import annotations

import logging
from pathlib import Path

from ..assets import verify_files
from ..config import SamplingConfig
from ..world_registry import World
from .build import read_manifest, recipe, settings_diff, world_dir
from .data import read_jsonl
from .gold import load_gold, vader_judge
from .strong import DEFAULT_STRONG, GGUF_SOURCE

logger = logging.getLogger(__name__)

__all__ = ["load_imdb_mini", "built_manifest", "verify_world"]


def verify_world(name: str, path: Path, manifest: dict) -> None:
    """Check the world's prompts and model weights against the sha256s its manifest stores (once per process for
    unchanged files; gold is checked by :func:`~.gold.load_gold`)."""
    steps, paths = manifest["steps"], manifest["paths"]
    stored = []
    if "prompts" in paths:
        prompts = Path(paths["prompts"])
        data = (steps.get("data", {}).get("files") or {}).get(prompts.name)
        stored.append((path / prompts.parent, {prompts.name: data}))
    if "strong" in paths:
        stored.append((path / paths["strong"], steps.get("strong", {}).get("weights_sha256") or {}))
    for step in ("untuned", "tuned", "reward_model"):
        if step in paths:
            files = steps.get(step, {}).get("files") or {}
            stored.append((path / paths[step], {k: v for k, v in files.items() if k.endswith(".safetensors")}))
    for folder, files in stored:
        verify_files(
            folder,
            {k: v for k, v in files.items() if v},
            "the world's manifest",
            f"rebuild the world: w2s-eval world build {name} --force",
        )


def built_manifest(name: str, home: Path, recipe) -> tuple:
    """(world directory, manifest) of the complete world ``name`` built by ``recipe`` under ``home``;
    FileNotFoundError with the build command when it is not (completely) built or lacks a file its manifest
    names; a warning when it was built with other settings than this version's defaults."""

    path = world_dir(name, home)
    manifest = read_manifest(path) if path.exists() else None
    if not manifest or not manifest.get("complete"):
        state = "is not built" if not manifest else "is only partly built"
        raise FileNotFoundError(
            f"world {name} {state} in {path}; build it ({recipe.build_time}): w2s-eval world build {name}"
        )
    for rel in manifest["paths"].values():
        if not (path / rel).exists():
            raise FileNotFoundError(
                f"world {name} at {path} lacks {rel}; rebuild it: w2s-eval world build {name} --force"
            )
    stale = settings_diff(manifest["config"], recipe.config().to_dict(), new_is="default")
    if stale:  # usable (its manifest says what it is), but not what this version builds
        logger.warning(
            "world %s at %s was built with other settings than this version's defaults: %s; "
            "`w2s-eval world build %s --force` rebuilds it",
            name,
            path,
            stale,
            name,
        )
    verify_world(name, path, manifest)
    return path, manifest


def load_imdb_mini(home: Path):
    """The ``imdb-mini`` world under ``home/worlds/imdb-mini``; a clear error when it is not built."""
    path, manifest = built_manifest("imdb-mini", home, recipe("imdb-mini"))
    paths = manifest["paths"]
    gold_sha = manifest["steps"]["gold"]["files"].get("gold.pkl")
    gold = load_gold(path / paths["gold"], sha256=gold_sha)
    prompts = tuple((p["id"], p["text"]) for p in read_jsonl(path / paths["prompts"]))
    cfg = manifest["config"]
    sampling = SamplingConfig(
        temperature=cfg["temperature"], top_k=cfg["top_k"], max_new_tokens=cfg["sampling_tokens"], seed=cfg["seed"]
    )
    return World(
        name="imdb-mini",
        strong=str(path / paths["strong"]),
        tuned=str(path / paths["tuned"]),
        untuned=str(path / paths["untuned"]),
        reward_model=str(path / paths["reward_model"]),
        prompts=prompts,
        sampling=sampling,
        gold=gold,
        judge=vader_judge,
        manifest=manifest,
        strong_name=DEFAULT_STRONG if manifest["inputs"].get("strong_source") == GGUF_SOURCE else None,
    )
