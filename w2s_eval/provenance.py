"""Run directories and provenance: the one place for what every front end records about a run.

- :func:`atomic_write_text` / :func:`atomic_write_json`: a file is written whole or not at all (a temporary
  file in the same folder, fsynced, then ``os.replace``). An existing file keeps its mode (a shared 0664
  leaderboard stays 0664); a new file gets the process umask (``0o666 & ~umask``), as ``open()`` would give
  it. JSON is strict: NaN and infinity are refused (naming the field), never written as a bare ``NaN``.
- :func:`append_jsonl`: JSON lines appended, flushed and fsynced (a crash keeps every line written).
- :func:`package_versions`: the versions of the packages that decide results (one list for every front end);
  :func:`machine_info`: the CPU family they ran on.
- :func:`fingerprint`: sha256 (first 16 hex digits) of the canonical JSON of a config; the hashes recorded in
  committed run directories are made by this function, so its canonical form must not change.
- :func:`diff_fields` / :func:`check_identity`: a run directory made with another identity is refused with the
  first differing field named (``sampling.temperature is 1.0 there but 0.3 now``).
- :func:`mean_se`: mean and standard error. Choice for small samples: ``n == 0`` gives ``(None, None)``,
  ``n == 1`` gives ``(mean, None)`` (no standard error from one value; never NaN, so it can go into JSON).
- :func:`git_revision`, :func:`utc_now`: where and when a record was made.
- :func:`check_writable_dir`: a run directory (or cache) can be written or made, checked before writing anything.
- :func:`run_dir_lock`: one writer per run directory (an ``flock`` on ``DIR/.w2s-eval.lock``, which names the
  holder's pid and command); a second writer is refused with :class:`RunDirBusy`. The kernel drops the lock when
  its process dies, so a lock file left by a dead process is simply taken over.
- :func:`follow_umask`: files other libraries wrote with a fixed mode (safetensors writes 0600) get the mode
  the process umask gives new files, so a shared cache can be read by the users the umask allows.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

__all__ = [
    "atomic_write_text",
    "atomic_write_json",
    "append_jsonl",
    "package_versions",
    "machine_info",
    "fingerprint",
    "diff_fields",
    "mismatch_message",
    "check_identity",
    "mean_se",
    "to_json",
    "git_revision",
    "utc_now",
    "check_writable_dir",
    "PACKAGES",
    "MISSING",
    "run_dir_lock",
    "RunDirBusy",
    "LOCK_FILE",
    "follow_umask",
]

PathLike = Union[str, "os.PathLike[str]"]

# the packages whose versions decide results, recorded by every front end
PACKAGES = (
    "w2s-eval",
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "trl",
    "datasets",
    "numpy",
    "scikit-learn",
    "vaderSentiment",
    "lm_eval",
    "alpaca-eval",
    "pandas",
)
MISSING = "<missing>"  # how diff_fields shows a field that one side lacks

_UMASK_LOCK = threading.Lock()


# ----------------------------------------------------------------------------- files


def _umask() -> int:
    """The process umask (read from /proc where it can be, so nothing is changed even for a moment)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _target_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def follow_umask(folder: PathLike) -> None:
    """Give every file under ``folder`` the mode a new file gets from the process umask (``0o666 & ~umask``)
    and every folder ``0o777 & ~umask`` (e.g. after ``save_pretrained``, whose safetensors are 0600)."""
    mask = _umask()
    root = Path(folder)
    for path in (root, *root.rglob("*")):
        if path.is_symlink():
            continue
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all; returns the path.

    An existing file keeps its permission bits; a new one gets ``0o666 & ~umask``. The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _target_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _first_nonfinite(obj: Any, prefix: str = "") -> Optional[tuple]:
    """(dotted field, value) of the first NaN/inf float inside ``obj``, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return prefix or "<value>", obj
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = _first_nonfinite(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
        if found:
            return found
    return None


def to_json(
    obj: Any, *, sort_keys: bool = True, indent: Optional[int] = 2, default: Optional[Callable[[Any], Any]] = None
) -> str:
    """Strict JSON text of ``obj`` (NaN/inf refused, naming the field) with a final newline.

    ``default``: as in :func:`json.dumps`, turns other objects (e.g. paths, with ``str``) into JSON values.
    """
    bad = _first_nonfinite(obj)
    if bad is not None:
        raise ValueError(
            f"{bad[0]} is {bad[1]} (not a finite number; JSON has no NaN or infinity): give a finite value"
        )
    return (
        json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False, default=default) + "\n"
    )


def append_jsonl(path: PathLike, rows: Sequence[Any], **dumps_kw) -> Path:
    """Append one JSON line per row to ``path`` (``dumps_kw`` go to :func:`json.dumps`), flushed and fsynced,
    so a crash keeps every line written before it; returns the path."""
    path = Path(path)
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False, **dumps_kw) + "\n" for row in rows)
        f.flush()
        os.fsync(f.fileno())
    return path


def atomic_write_json(
    path: PathLike, obj: Any, *, sort_keys: bool = True, default: Optional[Callable[[Any], Any]] = None
) -> Path:
    """Write ``obj`` as strict JSON (see :func:`to_json`) with :func:`atomic_write_text`; returns the path."""
    try:
        text = to_json(obj, sort_keys=sort_keys, default=default)
    except ValueError as e:
        raise ValueError(f"refusing to write {path}: {e}") from None
    return atomic_write_text(path, text)


# ----------------------------------------------------------------------------- versions, hashes, identity


def package_versions(packages: Sequence[str] = PACKAGES) -> dict:
    """``{"python": ..., package: version or None}`` for the packages that decide results."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_info() -> dict:
    """``{"arch": ..., "cpu": ...}``: the CPU family a run ran on (bit-identical figures need the same one); the CPU
    model name is read from /proc/cpuinfo where there is one, else ``platform.processor()``."""
    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    return {"arch": platform.machine(), "cpu": cpu or platform.processor() or None}


def fingerprint(obj: Any) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of ``obj`` (sorted keys, no spaces).

    Committed run directories store hashes made by this exact form; do not change it.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _flatten(d: Any, prefix: str = "") -> dict:
    """{dotted field: leaf} in the dict's own order (lists are leaves)."""
    if isinstance(d, dict):
        out: dict = {}
        for k in d:
            out.update(_flatten(d[k], f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def diff_fields(old: dict, new: dict) -> list:
    """``[(dotted field, old value, new value)]`` for every differing field; a side lacking it shows ``MISSING``.

    Order: the fields of ``new`` in its own order (a config's fields before derived ones), then those only in
    ``old``; so ``diff_fields(...)[0]`` is the first differing field.
    """
    a, b = _flatten(old), _flatten(new)
    keys = list(b) + [k for k in a if k not in b]
    return [(k, a.get(k, MISSING), b.get(k, MISSING)) for k in keys if a.get(k, MISSING) != b.get(k, MISSING)]


def mismatch_message(
    where: str, diffs: list, fix: str = "Use a new --out directory, or rerun with the settings of that run"
) -> str:
    """The refusal of a run directory made with another config, naming the first differing field."""
    field, old, new = diffs[0]
    more = f" (and {len(diffs) - 1} more field(s): {', '.join(d[0] for d in diffs[1:])})" if len(diffs) > 1 else ""
    return (
        f"{where} was made with a different config: {field} is {old!r} there but {new!r} now{more}; "
        f"refusing to mix results. {fix}"
    )


def check_identity(
    path: PathLike,
    identity: dict,
    what: str,
    *,
    key: str = "identity",
    fix: str = "Use a new --out directory, or rerun with the settings of that run",
) -> Optional[dict]:
    """Compare ``identity`` with the one stored under ``key`` in the JSON file ``path``.

    Returns the stored document (None when ``path`` does not exist); raises ValueError naming the first
    differing field (``what`` names the directory or file in the message), or when ``path`` is unreadable.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        old = stored[key]
        if not isinstance(old, dict):
            raise TypeError(f"{key} is not an object")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a w2s-eval run config ({type(e).__name__}: {e}); use a new --out directory"
        ) from None
    diffs = diff_fields(old, identity)
    if diffs:
        raise ValueError(mismatch_message(what, diffs, fix))
    return stored


# ----------------------------------------------------------------------------- statistics, time, source


def mean_se(values: Sequence[float]) -> tuple:
    """(mean, standard error = sample std (ddof=1) / sqrt(n)); ``(None, None)`` for n == 0, ``(mean, None)`` for 1."""
    n = len(values)
    if n == 0:
        return None, None
    m = sum(values) / n
    if n < 2:
        return m, None
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return m, math.sqrt(var / n)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _git_dir(d: Path) -> Optional[Path]:
    git = d / ".git"
    if git.is_file():  # a worktree: "gitdir: PATH"
        text = git.read_text(encoding="utf-8", errors="replace").strip()
        if not text.startswith("gitdir:"):
            return None
        git = (d / text.split(":", 1)[1].strip()).resolve()
    return git if git.is_dir() else None


def _resolve_ref(git: Path, ref: str) -> Optional[str]:
    common = git
    if (git / "commondir").is_file():
        common = (git / (git / "commondir").read_text(encoding="utf-8").strip()).resolve()
    for base in (git, common):
        if (base / ref).is_file():
            return (base / ref).read_text(encoding="utf-8").strip() or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == ref:
                return parts[0]
    return None


def git_revision(start: Optional[PathLike] = None) -> Optional[str]:
    """The commit of the source checkout this package runs from (read from .git; no git process), or None."""
    here = Path(start or Path(__file__).resolve().parent)
    for d in (here, *here.parents):
        if not (d / ".git").exists():
            continue
        git = _git_dir(d)
        if git is None:
            return None
        try:
            head = (git / "HEAD").read_text(encoding="utf-8").strip()
        except OSError:
            return None
        if not head.startswith("ref:"):
            return head or None
        return _resolve_ref(git, head.split(":", 1)[1].strip())
    return None


def check_writable_dir(path: os.PathLike, what: str, fix: str) -> Path:
    """Check, writing nothing, that directory ``path`` can be written or made: its nearest existing folder must
    be a writable directory; else PermissionError saying ``what`` it is (a name or a flag, e.g. "--out") and
    the ``fix`` (e.g. "set W2S_EVAL_HOME to a writable directory")."""
    path = Path(path)
    base = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        problem = "not writable" if base.is_dir() else "not a directory"
        raise PermissionError(f"{what} {path}: cannot write there ({base} is {problem}); {fix}")
    return path


# ----------------------------------------------------------------------------- one writer per run directory

LOCK_FILE = ".w2s-eval.lock"


class RunDirBusy(FileExistsError):
    """Another process is writing the run directory (its pid and command are in the message)."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} ({info.get('command', '?')}, since {info.get('since', '?')})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_dir_lock(run_dir: PathLike, what: str = "--out") -> Iterator[Path]:
    """Hold the one-writer lock of ``run_dir`` (created if missing) while the block runs; yields the directory.

    A directory another process holds raises :class:`RunDirBusy` naming that process, at once (no waiting).
    The lock is an ``flock`` on ``run_dir/.w2s-eval.lock``, released by the kernel when its process ends, so a
    lock file left by a killed run is taken over. On leaving, the lock file is removed, and so are the folders
    this call made when nothing else was written there (a refused run leaves nothing behind).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"{what} {run_dir} is a file; give a directory")
    check_writable_dir(run_dir, what, f"give a writable {what}")
    made = [d for d in (run_dir, *run_dir.absolute().parents) if not d.exists()]  # leaf first
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirBusy(
                f"{what} {run_dir} is in use: {_holder(path)} is writing there; wait for it to finish, "
                f"or give another {what}"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed by the holder we waited on: lock the new one
    try:
        info = {"pid": os.getpid(), "command": " ".join(sys.argv)[:300], "since": utc_now()}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
        yield run_dir
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
        for d in made:
            try:
                d.rmdir()  # only when empty
            except OSError:
                break
