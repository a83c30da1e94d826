"""The offline world ``imdb-mini``: IMDB sentiment continuation with a real strong model
(SmolLM2-135M-Instruct), small guides trained with TRL, a gold reward and a judge.

``w2s-eval world build imdb-mini`` builds it once into the cache
(:func:`w2s_eval.world.build.build_world`); the world registry (:mod:`w2s_eval.world_registry`) names its
loader (:func:`w2s_eval.world.loader.load_imdb_mini`), so this package never imports the harness.
"""

from __future__ import annotations

from .build import WorldConfig, build_world, world_dir
from .loader import load_imdb_mini

__all__ = ["WorldConfig", "build_world", "world_dir", "load_imdb_mini"]
