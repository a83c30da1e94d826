"""The interface between the comparison harness and a world.

A :class:`World` is everything a comparison needs, loaded from disk (no
training here): the strong model, the tuned/untuned guides, an optional reward
model, the held-out evaluation prompts, the default sampling, and the gold and
independent-judge reward functions.

Worlds register a loader by name with :func:`register_world`; the harness gets
one with :func:`load_world`. ``imdb-mini`` is registered by the package
``w2s_eval.world`` (imported lazily here). Other modules that register worlds
when imported (a plugin, the tests' ``toy`` world) are named, comma-separated, in
the environment variable ``W2S_EVAL_WORLD_MODULES``; they are imported on the
first lookup, so ``w2s-eval compare --world NAME`` finds their worlds too.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from ..config import SamplingConfig

__all__ = ["World", "register_world", "unregister_world", "load_world", "world_names", "world_home",
           "WORLD_MODULES_ENV"]

logger = logging.getLogger(__name__)

RewardFn = Callable[[list, list], list]


@dataclass(frozen=True)
class World:
    """Everything a comparison needs, built from disk; no training here."""

    name: str  # "imdb-mini" or "toy"
    strong: str  # directory of the strong causal LM
    tuned: str  # directory of the tuned guide (DPO)
    untuned: str  # directory of the untuned guide (SFT)
    reward_model: Optional[str]  # directory of a 1-output RM (TRL RewardTrainer), or None
    prompts: tuple  # ((prompt_id, prompt_text), ...): the held-out evaluation prompts, fixed order
    sampling: SamplingConfig  # the world's default sampling
    gold: RewardFn = field(repr=False)  # (prompts, responses) -> gold reward of prompt+response
    judge: RewardFn = field(repr=False)  # independent judge of prompt+response
    manifest: dict = field(default_factory=dict, repr=False)  # what was trained, seeds, sizes, sha256s, quality

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
        if not isinstance(self.manifest, dict):
            raise ValueError(f"World.manifest must be a dict, got {type(self.manifest).__name__}")


_LOADERS: dict = {}
# packages that register worlds when imported; imported lazily by load_world/world_names
_WORLD_PACKAGES = ("w2s_eval.world",)
WORLD_MODULES_ENV = "W2S_EVAL_WORLD_MODULES"


def register_world(name: str, loader: Callable[[Path], World]) -> None:
    """Register ``loader(home: Path) -> World`` under ``name`` (a later call replaces it)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"world name must be a non-empty string, got {name!r}")
    if not callable(loader):
        raise ValueError(f"loader for world {name!r} must be callable: loader(home: Path) -> World")
    _LOADERS[name] = loader


def unregister_world(name: str) -> None:
    """Remove a registered world (tests use this to clean up)."""
    _LOADERS.pop(name, None)


def _import_world_packages() -> None:
    for module in _WORLD_PACKAGES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                logger.debug("world package %s is not part of this build", module)
                continue
            raise
    for module in filter(None, (m.strip() for m in os.environ.get(WORLD_MODULES_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"{WORLD_MODULES_ENV} names module {module!r}, which cannot be imported ({e}); "
                             "fix the variable or make the module importable (PYTHONPATH)") from None


def world_names() -> list:
    """Names of all registered worlds."""
    _import_world_packages()
    return sorted(_LOADERS)


def world_home(home: Union[str, os.PathLike, None] = None) -> Path:
    """The directory that holds built worlds: ``home``, else ``$W2S_EVAL_HOME``, else the package cache."""
    if home is not None:
        return Path(home).expanduser()
    from ..assets import cache_home

    return Path(cache_home())


def load_world(name: str, home: Union[str, os.PathLike, None] = None) -> World:
    """Load the registered world ``name`` from ``home`` (default :func:`world_home`)."""
    if name not in _LOADERS:
        _import_world_packages()
    if name not in _LOADERS:
        known = ", ".join(sorted(_LOADERS)) or "none"
        raise ValueError(f"unknown world {name!r}; known worlds: {known}")
    world = _LOADERS[name](world_home(home))
    if not isinstance(world, World):
        raise TypeError(f"the loader of world {name!r} returned {type(world).__name__}, not a World")
    return world
