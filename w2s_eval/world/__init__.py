"""The offline world ``imdb-mini``: IMDB sentiment continuation with a real strong model
(SmolLM2-135M-Instruct), small guides trained with TRL, a gold reward and a judge.

``w2s-eval world build imdb-mini`` builds it once into the cache
(:func:`w2s_eval.world.build.build_world`); importing this package registers its
loader with the harness (:func:`w2s_eval.harness.world.register_world`).
"""

from __future__ import annotations

from .build import WorldConfig, build_world, world_dir
from .loader import load_imdb_mini

__all__ = ["WorldConfig", "build_world", "world_dir", "load_imdb_mini"]

try:
    from ..harness.world import register_world
except ModuleNotFoundError as e:  # the harness is not part of this build
    if not (e.name or "").startswith("w2s_eval.harness"):
        raise
else:
    register_world("imdb-mini", load_imdb_mini)
