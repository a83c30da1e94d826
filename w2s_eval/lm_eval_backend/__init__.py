"""``lm_eval --model w2s``: weak-to-strong search as an lm-evaluation-harness backend.

:mod:`.backend` holds the model (``W2SLM``), :mod:`.tasks` what the ``w2s_*`` tasks share. lm-eval 0.4.13 has no
plugin discovery: the stock ``lm_eval`` command finds ``--model w2s`` through ``w2s_eval_lm_eval.pth``
(:mod:`._pth_hook`), which the build backend (``compat/w2s_eval_build.py``) puts into every wheel and
:func:`install_hook` writes by hand (the compatibility unit: ``compat/README.md``); :func:`register` registers
``w2s`` in a running process, and
``python -m w2s_eval.lm_eval_backend ...`` is lm-eval's CLI with it.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from typing import Optional

from ..extras import require
from ._pth_hook import register_models

require("lm_eval", "lm-eval")

__all__ = ["register", "PTH_NAME", "pth_line", "install_hook", "uninstall_hook"]

PTH_NAME = "w2s_eval_lm_eval.pth"


def register():
    """Register ``w2s`` (and any other ``lm_eval.models`` entry point) with lm-eval's model registry, after
    lm-eval's own backends; returns the registry. Idempotent."""
    import lm_eval.api.registry

    return register_models(lm_eval.api.registry, use_fallback=True)


def pth_line() -> str:
    """The ``.pth`` content: ``import sys; exec(<_pth_hook.py, then its call>, <a namespace of its own>)`` (site.py
    runs a line only when it starts with ``import``, with separate globals and locals)."""
    code = Path(__file__).with_name("_pth_hook.py").read_text(encoding="utf-8") + "\n_w2s_eval_lm_eval_hook()\n"
    return f"import sys; exec({code!r}, {{'__name__': 'w2s_eval_lm_eval_pth'}})\n"


def _hook_file(site_dir: Optional[os.PathLike]) -> Path:
    return Path(site_dir or sysconfig.get_paths()["purelib"]) / PTH_NAME


def install_hook(site_dir: Optional[os.PathLike] = None) -> Path:
    """Write the ``.pth`` hook into ``site_dir`` (default: this interpreter's site-packages); idempotent."""
    path, text = _hook_file(site_dir), pth_line()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"site-packages directory {path.parent} does not exist")
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as e:
            raise PermissionError(
                f"cannot write {path} ({e.strerror}); run with a Python whose site-packages "
                "you can write (your virtual environment)"
            ) from None
    return path


def uninstall_hook(site_dir: Optional[os.PathLike] = None) -> bool:
    """Remove the hook; True when there was one."""
    path = _hook_file(site_dir)
    found = path.exists()
    path.unlink(missing_ok=True)
    return found
