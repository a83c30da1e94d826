"""The build backend of w2s-eval: setuptools' own, plus the lm-eval startup hook in every wheel.

The stock ``lm_eval`` command (0.4.13) finds ``--model w2s`` only through ``w2s_eval_lm_eval.pth`` at the
top of site-packages (see ``w2s_eval/lm_eval_backend/__init__.py``). :func:`build_wheel` and
:func:`build_editable` (``pip install -e .``) put that ``.pth`` at the wheel's root and list it in the wheel's
RECORD, so ``pip uninstall`` removes it. Everything else is ``setuptools.build_meta`` unchanged. Standard library
only. Part of the compatibility unit described in ``compat/README.md``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook is setuptools' own)

PTH_NAME = "w2s_eval_lm_eval.pth"
PTH_SOURCE = Path(__file__).resolve().parent / PTH_NAME


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"{name},sha256={digest},{len(data)}"


def add_pth(wheel: os.PathLike, pth: bytes) -> None:
    """Put ``pth`` at the root of ``wheel`` as :data:`PTH_NAME` and list it in the wheel's RECORD."""
    wheel = Path(wheel)
    tmp = wheel.with_name(wheel.name + ".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        names = src.namelist()
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        for name in names:
            if name not in (record, PTH_NAME):
                dst.writestr(src.getinfo(name), src.read(name))
        dst.writestr(PTH_NAME, pth)
        lines = [ln for ln in src.read(record).decode("utf-8").splitlines() if ln and not ln.startswith(PTH_NAME + ",")]
        lines.insert(len(lines) - 1, _record_line(PTH_NAME, pth))  # RECORD's own line stays last
        dst.writestr(record, "\n".join(lines) + "\n")
    os.replace(tmp, wheel)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    add_pth(Path(wheel_directory) / name, PTH_SOURCE.read_bytes())
    return name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    add_pth(Path(wheel_directory) / name, PTH_SOURCE.read_bytes())
    return name
