"""The ``.pth`` line that makes the stock ``lm_eval`` CLI (0.4.13) resolve ``--model w2s``.

A wheel of w2s-eval ships ``w2s_eval_lm_eval.pth`` at the top of site-packages (pyproject:
``[tool.setuptools.package-data] w2s_eval = ["../w2s_eval_lm_eval.pth"]``), and the build
backend (``_build_backend/w2s_eval_build.py``) adds it to editable installs (``pip install -e .``)
too; ``python -m w2s_eval.lm_eval --install-hook`` writes it by hand (e.g. into another
environment's site-packages). The line wraps
:mod:`w2s_eval.lm_eval._pth_hook` (stdlib only; nothing heavy at interpreter start).
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from typing import Optional

__all__ = ["PTH_NAME", "pth_line", "install_hook", "uninstall_hook", "hook_file"]

PTH_NAME = "w2s_eval_lm_eval.pth"


def pth_line() -> str:
    """The one-line ``.pth`` content: ``import sys; exec(<the hook source>)``."""
    source = (Path(__file__).with_name("_pth_hook.py")).read_text(encoding="utf-8")
    code = source + "\n_w2s_eval_lm_eval_hook()\n"
    # a .pth file executes a line only when it starts with "import"; site.py runs it with separate globals
    # and locals, so the hook gets one namespace of its own (its functions see each other as globals)
    return f"import sys; exec({code!r}, {{'__name__': 'w2s_eval_lm_eval_pth'}})\n"


def hook_file(site_dir: Optional[os.PathLike] = None) -> Path:
    """Where the hook lives: ``site_dir`` or this interpreter's purelib (site-packages)."""
    return Path(site_dir or sysconfig.get_paths()["purelib"]) / PTH_NAME


def install_hook(site_dir: Optional[os.PathLike] = None) -> Path:
    """Write the ``.pth`` hook into site-packages (idempotent); returns its path."""
    path = hook_file(site_dir)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"site-packages directory {path.parent} does not exist")
    text = pth_line()
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as e:
            raise PermissionError(f"cannot write {path} ({e.strerror}); run with a Python whose site-packages "
                                  "you can write (your virtual environment)") from None
    return path


def uninstall_hook(site_dir: Optional[os.PathLike] = None) -> bool:
    """Remove the hook; True when there was one."""
    path = hook_file(site_dir)
    if path.exists():
        path.unlink()
        return True
    return False
