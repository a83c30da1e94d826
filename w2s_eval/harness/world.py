"""The harness's view of worlds: :class:`World` and the registry, defined in :mod:`w2s_eval.worlds`.

The registry lives below both the harness and the world builders (``w2s_eval.world``), so neither imports the
other; this module keeps the harness's public names.
"""

from ..worlds import (WORLD_MODULES_ENV, World, load_world, register_world, unregister_world, world_home,
                      world_names)

__all__ = ["World", "register_world", "unregister_world", "load_world", "world_names", "world_home",
           "WORLD_MODULES_ENV"]
