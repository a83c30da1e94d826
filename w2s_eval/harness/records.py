"""The run directory of a comparison: its config, its JSONL records, provenance.

A run directory holds ``config.json`` (the run's identity and grid) and
``records.jsonl`` (one JSON line per (prompt, method, seed), appended and flushed
per record). A rerun skips recorded keys, so an interrupted run resumes. A last
line cut short by a crash is reported, moved aside to ``records.truncated.txt``
and recomputed; it is never fatal.

The *identity* of a run is what decides each record's numbers: the world (and the
fingerprint of its manifest), the sampling settings, the guide, the dtype. Its
hash is stored in every record. A directory made with another identity is refused
with the first differing field named. The *grid* (methods, number of prompts,
seeds) may grow between runs: the new keys are added, the old ones kept.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from ..assets import ensure_writable_dir
from ..config import SamplingConfig, parse_method

__all__ = ["RunConfig", "RecordLog", "read_records", "record_key", "diff_fields", "open_run_dir",
           "package_versions", "git_revision", "fingerprint", "utc_now", "GUIDES", "CONFIG_FILE", "RECORDS_FILE"]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
RECORDS_FILE = "records.jsonl"
TRUNCATED_FILE = "records.truncated.txt"
GUIDES = ("implicit", "rm")
_ENDPOINT_KEYS = ("strong_endpoint", "strong_model")
_PACKAGES = ("w2s-eval", "torch", "transformers", "tokenizers", "accelerate", "trl", "numpy", "scikit-learn",
             "vaderSentiment")


def fingerprint(obj: Any) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class RunConfig:
    """A comparison run: what decides the numbers (identity) and what is run (grid).

    world_fingerprint: hash of the world's manifest (a rebuilt world is another world).
    sampling: the strong model's sampling; its ``seed`` is replaced by each record's seed.
    guide: ``implicit`` (tuned vs untuned guide, scaled by ``guide_beta``) or ``rm`` (the world's reward model).
    strong_endpoint / strong_model: the strong model served at an OpenAI-compatible ``/v1`` URL
    (replacing the world's strong model for sampling); part of the identity when set.
    """

    world: str
    world_fingerprint: str
    methods: tuple
    n_prompts: int
    seeds: tuple
    sampling: SamplingConfig
    guide: str = "implicit"
    guide_beta: float = 1.0
    dtype: str = "float32"
    device: str = "auto"
    batch_size: int = 8
    strong_endpoint: Optional[str] = None
    strong_model: Optional[str] = None

    def __post_init__(self):
        methods = tuple(parse_method(m).spec for m in self.methods)
        if not methods:
            raise ValueError("methods is empty; give at least one, e.g. --methods base,bon:n=16")
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods lists a method twice: {', '.join(methods)}")
        object.__setattr__(self, "methods", methods)
        if isinstance(self.n_prompts, bool) or not isinstance(self.n_prompts, int) or self.n_prompts < 1:
            raise ValueError(f"n_prompts must be a positive integer, got {self.n_prompts!r}; e.g. --prompts 64")
        seeds = tuple(self.seeds)
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ValueError(f"seeds must be a non-empty list of integers, got {self.seeds!r}; e.g. --seeds 3")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds lists a seed twice: {seeds}")
        object.__setattr__(self, "seeds", seeds)
        if not isinstance(self.sampling, SamplingConfig):
            raise ValueError("sampling must be a SamplingConfig")
        if self.guide not in GUIDES:
            raise ValueError(f"guide must be one of {', '.join(GUIDES)}, got {self.guide!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.strong_endpoint is None:
            if self.strong_model is not None:
                raise ValueError(f"strong_model={self.strong_model!r} names a served model; give it with "
                                 "strong_endpoint=URL (--strong-endpoint), or drop it to use the world's strong model")
        elif not isinstance(self.strong_endpoint, str) or not self.strong_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"strong_endpoint must be an http(s) URL such as http://127.0.0.1:8000/v1, got "
                             f"{self.strong_endpoint!r}")
        elif self.strong_model is not None and (not isinstance(self.strong_model, str) or not self.strong_model):
            raise ValueError(f"strong_model must be the served model's name, got {self.strong_model!r}")

    def identity(self) -> dict:
        """The fields that decide every record's numbers (hashed into ``config_hash``)."""
        sampling = asdict(self.sampling)
        sampling.pop("seed")
        sampling["stop"] = list(sampling["stop"])
        out = {"world": self.world, "world_fingerprint": self.world_fingerprint, "sampling": sampling,
               "guide": self.guide, "guide_beta": float(self.guide_beta), "dtype": self.dtype}
        if self.strong_endpoint is not None:  # absent for the world's own strong model (older run dirs stay valid)
            out.update(strong_endpoint=self.strong_endpoint, strong_model=self.strong_model)
        return out

    @property
    def config_hash(self) -> str:
        return fingerprint(self.identity())

    def grid(self) -> dict:
        return {"methods": list(self.methods), "n_prompts": self.n_prompts, "seeds": list(self.seeds)}

    def resolved(self, method: str, seed: int) -> dict:
        """The full resolved config of one record."""
        return {**self.identity(), "method": parse_method(method).spec, "seed": seed, "device": self.device,
                "batch_size": self.batch_size}


def _flatten(d: Any, prefix: str = "") -> dict:
    if isinstance(d, dict):
        out = {}
        for k in sorted(d):
            out.update(_flatten(d[k], f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def diff_fields(old: dict, new: dict) -> list:
    """[(dotted field, old value, new value)] for every field that differs."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k, "<missing>"), b.get(k, "<missing>")) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _mismatch_message(where: str, diffs: list) -> str:
    field, old, new = diffs[0]
    more = f" (and {len(diffs) - 1} more field(s): {', '.join(d[0] for d in diffs[1:])})" if len(diffs) > 1 else ""
    return (f"{where} was made with a different config: {field} is {old!r} there but {new!r} now{more}; "
            "refusing to mix results. Use a new --out directory, or rerun with the settings of that run")


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def open_run_dir(out_dir: os.PathLike, cfg: RunConfig) -> Path:
    """Create or reopen a run directory for ``cfg``; refuse one made with another identity.

    The grid stored in ``config.json`` becomes the union of the old and the new grid.
    """
    out = ensure_writable_dir(out_dir, "results directory", "choose a writable --out")
    path = out / CONFIG_FILE
    identity, grid = cfg.identity(), cfg.grid()
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            old_identity, old_grid = old["identity"], old["grid"]
        except (ValueError, KeyError) as e:
            raise ValueError(f"{path} is not a w2s-eval run config ({e}); use a new --out directory") from None
        diffs = diff_fields(old_identity, identity)
        if diffs:
            raise ValueError(_mismatch_message(f"results directory {out}", diffs))
        grid = {
            "methods": list(dict.fromkeys(old_grid.get("methods", []) + grid["methods"])),
            "n_prompts": max(int(old_grid.get("n_prompts", 0)), grid["n_prompts"]),
            "seeds": list(dict.fromkeys(old_grid.get("seeds", []) + grid["seeds"])),
        }
        created = old.get("created", utc_now())
    else:
        created = utc_now()
    # records on disk must carry this identity too (e.g. a records file copied in by hand)
    records, _ = read_records(out / RECORDS_FILE, warn=False)
    for i, rec in enumerate(records):
        if rec.get("config_hash") != cfg.config_hash:
            diffs = (diff_fields(_identity_of(rec), identity)
                     or [("config_hash", rec.get("config_hash"), cfg.config_hash)])
            raise ValueError(_mismatch_message(f"record {i + 1} of {out / RECORDS_FILE}", diffs))
    _write_json_atomic(path, {"identity": identity, "config_hash": cfg.config_hash, "grid": grid, "created": created,
                              "updated": utc_now(), "versions": package_versions(), "git_revision": git_revision()})
    return out


def _identity_of(record: dict) -> dict:
    config = record.get("config") or {}
    keys = ("world", "world_fingerprint", "sampling", "guide", "guide_beta", "dtype")
    return {k: config.get(k) for k in keys + tuple(k for k in _ENDPOINT_KEYS if k in config)}


def record_key(record: dict) -> tuple:
    """The key of a record: (prompt_id, method spec, seed)."""
    return (str(record["prompt_id"]), str(record["method"]), int(record["seed"]))


def _parse_record(line: bytes) -> dict:
    record = json.loads(line)
    if not isinstance(record, dict) or not all(k in record for k in ("prompt_id", "method", "seed")):
        raise ValueError("not a record")
    return record


def read_records(path: os.PathLike, warn: bool = True) -> tuple:
    """Read a records file: (records, truncated_tail or None).

    A last line that is not valid JSON (a write cut short) is returned as the tail
    and logged, never fatal; an invalid line before the last raises ValueError.
    """
    path = Path(path)
    if not path.exists():
        return [], None
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # a well-formed file ends with "\n", so tail == b""
    records = []
    for i, line in enumerate(complete):
        if not line.strip():
            continue
        try:
            records.append(_parse_record(line))
        except ValueError:
            if i == len(complete) - 1 and not tail.strip():
                # a bad last line: treat it like a truncated one
                tail = line
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON (corrupted in the middle of the file); "
                             "fix or remove that line, then rerun") from None
    truncated = None
    if tail.strip():
        try:
            records.append(_parse_record(tail))  # a complete record whose newline is missing
        except ValueError:
            truncated = tail.decode("utf-8", errors="replace")
            if warn:
                logger.warning("%s: the last line is truncated (%d bytes, a write cut short); it is ignored and its "
                               "record will be recomputed", path, len(tail))
    return records, truncated


class RecordLog:
    """Append-only JSONL records of one run directory (flushed and fsynced per record)."""

    def __init__(self, run_dir: os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RECORDS_FILE
        self.records, self.truncated = read_records(self.path)
        self._repair()
        self.keys = {record_key(r) for r in self.records}

    def _repair(self) -> None:
        """Move a truncated last line aside (and terminate an unterminated one) so appends start on a fresh line."""
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        if self.truncated is not None:
            body = raw.rstrip(b"\n")
            cut = body.rfind(b"\n") + 1
            with open(self.run_dir / TRUNCATED_FILE, "ab") as f:
                f.write(raw[cut:].rstrip(b"\n") + b"\n")
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            logger.warning("moved the truncated last line of %s to %s", self.path, self.run_dir / TRUNCATED_FILE)
        elif raw and not raw.endswith(b"\n"):  # a complete record without its newline
            with open(self.path, "ab") as f:
                f.write(b"\n")

    def __contains__(self, key: tuple) -> bool:
        return key in self.keys

    def append(self, record: dict) -> None:
        key = record_key(record)
        if key in self.keys:
            raise ValueError(f"record {key} is already in {self.path}")
        line = json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
        self.keys.add(key)

    def extend(self, records: Iterable[dict]) -> None:
        for r in records:
            self.append(r)


def package_versions() -> dict:
    """Versions of the packages that decide results, and of Python."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(start: Optional[os.PathLike] = None) -> Optional[str]:
    """The commit of the source checkout this package runs from (read from .git; no git process), or None."""
    here = Path(start or Path(__file__).resolve().parent)
    for d in (here, *here.parents):
        git = d / ".git"
        if git.is_file():  # a worktree: "gitdir: PATH"
            text = git.read_text(encoding="utf-8", errors="replace").strip()
            if not text.startswith("gitdir:"):
                return None
            git = (d / text.split(":", 1)[1].strip()).resolve()
        if not git.is_dir():
            continue
        try:
            head = (git / "HEAD").read_text(encoding="utf-8").strip()
        except OSError:
            return None
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
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
    return None
