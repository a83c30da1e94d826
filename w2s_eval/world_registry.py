"""The world interface and registry, below both the harness and the world builders (neither imports the other).

A :class:`World` is everything a comparison needs, loaded from disk (no training here): the strong model,
the tuned/untuned guides, an optional reward model, the held-out evaluation prompts, the default sampling,
and the gold and independent-judge reward functions.

Where worlds come from (first lookup imports them):

- the built-in table :data:`BUILTIN_WORLDS` (``imdb-mini`` -> ``w2s_eval.world.loader:load_imdb_mini``,
  ``ifeval-mini`` -> ``w2s_eval.world.ifeval_mini:load_ifeval_mini``),
  resolved only when that world is asked for;
- the entry-point group ``w2s_eval.world_registry`` (``name = "package.module:loader"``) of installed plugins;
- modules named, comma-separated, in ``$W2S_EVAL_WORLD_MODULES`` that call :func:`register_world` when
  imported (the tests' ``toy`` world), so ``w2s-eval compare --world NAME`` finds their worlds too;
- :func:`register_world` called directly.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from .assets import cache_home
from .config import SamplingConfig

__all__ = [
    "World",
    "register_world",
    "unregister_world",
    "load_world",
    "world_names",
    "world_home",
    "WORLD_MODULES_ENV",
    "ENTRY_POINT_GROUP",
    "BUILTIN_WORLDS",
]

logger = logging.getLogger(__name__)

RewardFn = Callable[[list, list], list]
WORLD_MODULES_ENV = "W2S_EVAL_WORLD_MODULES"
ENTRY_POINT_GROUP = "w2s_eval.world_registry"
BUILTIN_WORLDS = {
    "imdb-mini": "w2s_eval.world.loader:load_imdb_mini",
    "ifeval-mini": "w2s_eval.world.ifeval_mini:load_ifeval_mini",
}


@dataclass(frozen=True)
class World:
    """Everything a comparison needs, built from disk; no training here."""

    name: str  # "imdb-mini", "ifeval-mini" or "toy"
    strong: str  # directory of the strong causal LM
    tuned: str  # directory of the tuned guide (DPO)
    untuned: str  # directory of the untuned guide (SFT)
    reward_model: Optional[str]  # directory of a 1-output RM (TRL RewardTrainer), or None
    prompts: tuple  # ((prompt_id, prompt_text), ...): the held-out evaluation prompts, fixed order
    sampling: SamplingConfig  # the world's default sampling
    gold: RewardFn = field(repr=False)  # (prompts, responses) -> gold reward of prompt+response
    judge: RewardFn = field(repr=False)  # independent judge of prompt+response
    manifest: dict = field(default_factory=dict, repr=False)  # what was trained, seeds, sizes, sha256s, quality
    strong_name: Optional[str] = None  # the registered name of its strong model (w2s-eval compare --strong NAME)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"World.name must be a non-empty string, got {self.name!r}")
        for attr in ("strong", "tuned", "untuned"):
            value = getattr(self, attr)
            if not isinstance(value, (str, os.PathLike)) or not str(value):
                raise ValueError(f"World.{attr} must be a model directory, got {value!r}")
            object.__setattr__(self, attr, str(value))
        if self.reward_model is not None:
            object.__setattr__(self, "reward_model", str(self.reward_model))
        prompts = tuple((str(pid), str(text)) for pid, text in self.prompts)
        if not prompts:
            raise ValueError(f"World {self.name!r} has no evaluation prompts")
        ids = [pid for pid, _ in prompts]
        if len(set(ids)) != len(ids):
            raise ValueError(f"World {self.name!r} has duplicate prompt ids; each prompt_id must be unique")
        object.__setattr__(self, "prompts", prompts)
        if not isinstance(self.sampling, SamplingConfig):
            raise ValueError(f"World.sampling must be a SamplingConfig, got {type(self.sampling).__name__}")
        for attr in ("gold", "judge"):
            if not callable(getattr(self, attr)):
                raise ValueError(f"World.{attr} must be callable (prompts, responses) -> list[float]")
        if self.strong_name is not None and (not isinstance(self.strong_name, str) or not self.strong_name):
            raise ValueError(f"World.strong_name must be a strong model's name or None, got {self.strong_name!r}")
        if not isinstance(self.manifest, dict):
            raise ValueError(f"World.manifest must be a dict, got {type(self.manifest).__name__}")


_LOADERS: dict = {}  # name -> loader(home) -> World, or "module:function" not imported yet


def register_world(name: str, loader: Union[Callable[[Path], World], str]) -> None:
    """Register ``loader(home: Path) -> World`` (or its ``"module:function"`` path) under ``name``; a later call
    replaces it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"world name must be a non-empty string, got {name!r}")
    if not callable(loader) and not (isinstance(loader, str) and ":" in loader):
        raise ValueError(
            f"loader for world {name!r} must be callable: loader(home: Path) -> World, or a 'module:function' path"
        )
    _LOADERS[name] = loader


def unregister_world(name: str) -> None:
    """Remove a registered world (tests use this to clean up)."""
    _LOADERS.pop(name, None)


def _discover() -> None:
    """Add the built-in worlds, installed plugins' entry points and ``$W2S_EVAL_WORLD_MODULES``' worlds."""
    from importlib.metadata import entry_points

    for name, target in BUILTIN_WORLDS.items():
        _LOADERS.setdefault(name, target)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _LOADERS.setdefault(ep.name, ep.value)
    for module in filter(None, (m.strip() for m in os.environ.get(WORLD_MODULES_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(
                f"{WORLD_MODULES_ENV} names module {module!r}, which cannot be imported ({e}); "
                "fix the variable or make the module importable (PYTHONPATH)"
            ) from None


def _loader(name: str) -> Callable[[Path], World]:
    loader = _LOADERS[name]
    if isinstance(loader, str):  # resolved on first use, so listing worlds imports nothing heavy
        module, _, attr = loader.partition(":")
        loader = getattr(importlib.import_module(module), attr)
        _LOADERS[name] = loader
    return loader


def world_names() -> list:
    """Names of all registered worlds."""
    _discover()
    return sorted(_LOADERS)


def world_home(home: Union[str, os.PathLike, None] = None) -> Path:
    """The directory that holds built worlds: ``home``, else ``$W2S_EVAL_HOME``, else the package cache."""
    if home is not None:
        return Path(home).expanduser()

    return Path(cache_home())


def load_world(name: str, home: Union[str, os.PathLike, None] = None) -> World:
    """Load the registered world ``name`` from ``home`` (default :func:`world_home`)."""
    if name not in _LOADERS:
        _discover()
    if name not in _LOADERS:
        known = ", ".join(sorted(_LOADERS)) or "none"
        raise ValueError(f"unknown world {name!r}; known worlds: {known}")
    world = _loader(name)(world_home(home))
    if not isinstance(world, World):
        raise TypeError(f"the loader of world {name!r} returned {type(world).__name__}, not a World")
    return world
