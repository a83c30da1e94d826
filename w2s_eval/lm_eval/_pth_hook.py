"""Startup hook that lets the stock ``lm_eval`` command (0.4.13) resolve ``--model w2s``.

lm-eval 0.4.13 fills its model registry from a fixed table and reads no plugin entry points. This code runs
from ``w2s_eval_lm_eval.pth`` at interpreter start (:mod:`w2s_eval.lm_eval.hook`) and only puts a meta-path
finder in front of ``sys.meta_path`` (no torch, lm-eval or w2s_eval import). When a process imports
``lm_eval.api.registry``, the finder lets the import run, then (1) imports ``lm_eval.models`` so lm-eval's
own backends register first (``get_model`` imports that table only while the registry is empty) and (2)
registers every ``lm_eval.models`` entry point not registered yet as a lazy placeholder (the entry point
itself, as upstream lm-eval's plugin discovery stores it): ``w2s = w2s_eval.lm_eval.backend:W2SLM``.

It must stay stdlib-only and self-contained: :func:`w2s_eval.lm_eval.hook.pth_line` wraps this whole file
into one ``exec`` line with a namespace of its own, and any failure inside is swallowed so that a broken
hook never breaks an unrelated program.
"""

import sys

_TARGET = "lm_eval.api.registry"
_FALLBACK = {"w2s": "w2s_eval.lm_eval.backend:W2SLM"}


def _w2s_eval_register(registry, use_fallback=False):
    """Register lm-eval's own models, then the ``lm_eval.models`` entry points (and, when asked,
    :data:`_FALLBACK` for names no entry point gave); returns the registry."""
    try:
        import lm_eval.models  # noqa: F401  (lm-eval's own table first)
    except Exception:
        pass
    reg = registry.model_registry
    try:
        from importlib.metadata import entry_points

        eps = list(entry_points(group="lm_eval.models"))
    except Exception:
        eps = []
    for ep in eps:
        if ep.name not in reg:
            try:
                reg.register(ep.name, target=ep)
            except Exception:
                pass
    if use_fallback:
        for name, path in _FALLBACK.items():
            if name not in reg:
                reg.register(name, target=path)
    return reg


class _W2SEvalFinder:
    """Meta-path finder for :data:`_TARGET` only: the module loads as usual (through the finder that
    would have found it), then this finder leaves ``sys.meta_path`` and registers into the module."""

    _w2s_eval_hook = True

    def find_spec(self, name, path=None, target_module=None):
        if name != _TARGET:
            return None
        spec = self._others_spec(name, path, target_module)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            try:
                spec.loader.exec_module = self._registering(spec.loader.exec_module)
            except Exception:
                pass
        return spec

    def _others_spec(self, name, path, target_module):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target_module)
            if spec is not None:
                return spec
        return None

    def _registering(self, exec_module):
        def exec_and_register(module):
            exec_module(module)
            try:
                sys.meta_path.remove(self)
            except ValueError:
                pass
            try:
                _w2s_eval_register(module)
            except Exception:
                pass

        return exec_and_register


def _w2s_eval_lm_eval_hook(install=True):
    """Install the finder (or register at once when lm-eval's registry is already imported);
    returns the register function."""
    if install:
        if _TARGET in sys.modules:
            try:
                _w2s_eval_register(sys.modules[_TARGET])
            except Exception:
                pass
        elif not any(getattr(f, "_w2s_eval_hook", False) for f in sys.meta_path):
            sys.meta_path.insert(0, _W2SEvalFinder())
    return _w2s_eval_register
