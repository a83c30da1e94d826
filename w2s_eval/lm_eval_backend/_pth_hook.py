"""Startup hook that lets the stock ``lm_eval`` command (0.4.13) resolve ``--model w2s``.

lm-eval 0.4.13 fills its model registry from a fixed table and reads no plugin entry points. The line of
``w2s_eval_lm_eval.pth`` (:func:`w2s_eval.lm_eval_backend.pth_line`) runs this file at interpreter start, in a namespace
of its own: it only puts a finder in front of ``sys.meta_path`` (no torch, lm-eval or w2s_eval import). When a
process imports ``lm_eval.api.registry``, the module loads through the finder that would have found it, then
lm-eval's own backends register (``get_model`` imports their table only while the registry is empty), then every
``lm_eval.models`` entry point not registered yet, lazily (the entry point itself, as upstream lm-eval's plugin
discovery stores it): ``w2s = w2s_eval.lm_eval_backend.backend:W2SLM``. Stdlib only; a failure in the registering is
swallowed, so a broken hook never breaks lm-eval.
"""

import sys


def register_models(registry, use_fallback=False):
    """Register lm-eval's own models, then the ``lm_eval.models`` entry points (``use_fallback``: ``w2s`` even
    without its entry point, as in a source tree that is not installed); returns the model registry."""
    from importlib.metadata import entry_points

    import lm_eval.models  # noqa: F401  (lm-eval's own table first)

    reg = registry.model_registry
    for ep in entry_points(group="lm_eval.models"):
        if ep.name not in reg:
            reg.register(ep.name, target=ep)
    if use_fallback and "w2s" not in reg:
        reg.register("w2s", target="w2s_eval.lm_eval_backend.backend:W2SLM")
    return reg


class _W2SEvalFinder:
    """Finds nothing itself; for lm-eval's registry it leaves ``sys.meta_path``, takes the spec the other
    finders give and makes its loader register once the module has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "lm_eval.api.registry":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = getattr(spec and spec.loader, "exec_module", None)

        def exec_and_register(module):
            run(module)
            try:
                register_models(module)
            except Exception:
                pass

        if run is not None:
            spec.loader.exec_module = exec_and_register
        return spec


def _w2s_eval_lm_eval_hook():
    """What the ``.pth`` line calls: put the finder first in ``sys.meta_path`` (once)."""
    if not any(type(f).__name__ == "_W2SEvalFinder" for f in sys.meta_path):
        sys.meta_path.insert(0, _W2SEvalFinder())
