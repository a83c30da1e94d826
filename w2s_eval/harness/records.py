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

import json
import logging
import lzma
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from ..checks import check_positive_int
from ..config import SamplingConfig, method_spec, parse_method
from ..provenance import (
    append_jsonl,
    atomic_write_json,
    check_identity,
    check_writable_dir,
    diff_fields,
    fingerprint,
    git_revision,
    machine_info,
    mismatch_message,
    package_versions,
    utc_now,
)
from ..spec import EngineSpec

__all__ = [
    "RunConfig",
    "parse_methods",
    "split_methods",
    "parse_seeds",
    "RecordLog",
    "read_records",
    "record_key",
    "diff_fields",
    "open_run_dir",
    "check_run_dir",
    "package_versions",
    "git_revision",
    "fingerprint",
    "utc_now",
    "GUIDES",
    "CONFIG_FILE",
    "RECORDS_FILE",
    "SHAPES_FILE",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
RECORDS_FILE = "records.jsonl"
TRUNCATED_FILE = "records.truncated.txt"
SHAPES_FILE = "model_shapes.json"  # {model role: ModelShape} of the run's models (w2s_eval.flops)
GUIDES = ("implicit", "rm", "gold")
# EngineSpec fields that enter a run's identity only when they differ from the spec's default
_OPTIONAL_IDENTITY = (
    "strong_endpoint",
    "strong_model",
    "tuned_template",
    "untuned_template",
    "rm_weight",
    "load_in_4bit",
)
_SPEC_DEFAULTS = {f.name: f.default for f in fields(EngineSpec)}


@dataclass(frozen=True)
class RunConfig:
    """A comparison run: what decides the numbers (identity) and what is run (grid).

    world_fingerprint: hash of the world's manifest (a rebuilt world is another world).
    sampling: the strong model's sampling; its ``seed`` is replaced by each record's seed.
    engine: the :class:`~w2s_eval.spec.EngineSpec` the run builds its engine from: the world's models (or
    the strong model named by ``strong_name``, or one served at ``engine.strong_endpoint``), the guide, dtype
    and devices. With ``guide="rm"`` its guide is the world's reward model (``beta=0``); with ``guide="gold"``
    the world's gold reward itself (the oracle: the ceiling of search); else the implicit value.
    guide: ``implicit``, ``rm`` or ``gold`` (the front end's name of the engine's guide).
    strong_name: a registered strong model that replaces the world's own (None: the world's own).
    chat_template: the strong model reads each prompt as a user turn of its chat template (the guides, gold and
    judge read the plain prompt); False: the plain text, for base and instruct models alike (as the paper does).
    """

    world: str
    world_fingerprint: str
    methods: tuple
    n_prompts: int
    seeds: tuple
    sampling: SamplingConfig
    engine: EngineSpec
    guide: str = "implicit"
    strong_name: Optional[str] = None
    batch_size: int = 8
    chat_template: bool = False

    def __post_init__(self):
        parsed = tuple(parse_method(m) for m in self.methods)  # parsed methods pass through unparsed
        methods = tuple(m.spec for m in parsed)
        if not methods:
            raise ValueError("methods is empty; give at least one, e.g. --methods base,bon:n=16")
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods lists a method twice: {', '.join(methods)}")
        object.__setattr__(self, "methods", methods)
        object.__setattr__(self, "_parsed", parsed)
        check_positive_int("n_prompts", self.n_prompts)
        seeds = tuple(self.seeds)
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ValueError(f"seeds must be a non-empty list of integers, got {self.seeds!r}; e.g. --seeds 3")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds lists a seed twice: {seeds}")
        object.__setattr__(self, "seeds", seeds)
        if not isinstance(self.sampling, SamplingConfig):
            raise ValueError("sampling must be a SamplingConfig")
        if not isinstance(self.engine, EngineSpec):
            raise ValueError(f"engine must be an EngineSpec, got {type(self.engine).__name__}")
        if self.guide not in GUIDES:
            raise ValueError(f"guide must be one of {', '.join(GUIDES)}, got {self.guide!r}")
        if self.strong_name is not None and (not isinstance(self.strong_name, str) or not self.strong_name):
            raise ValueError(f"strong_name must be a strong model's name, got {self.strong_name!r}")
        check_positive_int("batch_size", self.batch_size)
        if not isinstance(self.chat_template, bool):
            raise ValueError(f"chat_template must be True or False, got {self.chat_template!r}")

    @property
    def parsed_methods(self) -> tuple:
        """The method configs of ``methods`` (parsed once, here)."""
        return self._parsed

    # the engine's settings under the names the harness has always recorded
    @property
    def dtype(self) -> str:
        return self.engine.dtype

    @property
    def device(self) -> str:
        return self.engine.device or "auto"

    @property
    def guide_beta(self) -> float:
        return float(self.engine.beta)

    @property
    def strong_endpoint(self) -> Optional[str]:
        return self.engine.strong_endpoint

    @property
    def strong_model(self) -> Optional[str]:
        return self.engine.strong_model

    def identity(self) -> dict:
        """The fields that decide every record's numbers (hashed into ``config_hash``).

        Fields at their defaults are left out (a run of the world's own strong model keeps the hash it always
        had); ``strong`` (a strong model other than the world's own), an endpoint, 4-bit loading, other guide
        templates or reward-model weight enter when set.
        """
        sampling = asdict(self.sampling)
        sampling.pop("seed")
        sampling["stop"] = list(sampling["stop"])
        out = {
            "world": self.world,
            "world_fingerprint": self.world_fingerprint,
            "sampling": sampling,
            "guide": self.guide,
            "guide_beta": self.guide_beta,
            "dtype": self.dtype,
        }
        if self.strong_name is not None:
            out["strong"] = self.strong_name
        if self.chat_template:
            out["chat_template"] = True
        for name in _OPTIONAL_IDENTITY:
            value = getattr(self.engine, name)
            if value != _SPEC_DEFAULTS[name]:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def config_hash(self) -> str:
        return fingerprint(self.identity())

    def grid(self) -> dict:
        return {"methods": list(self.methods), "n_prompts": self.n_prompts, "seeds": list(self.seeds)}

    def resolved(self, method: str, seed: int) -> dict:
        """The full resolved config of one record."""
        spec = method if method in self.methods else parse_method(method).spec
        return {**self.identity(), "method": spec, "seed": seed, "device": self.device, "batch_size": self.batch_size}


def parse_methods(specs) -> list:
    """Parse ``"base,bon:n=16,cbs:w=4,k=4,l=5"`` (commas inside a method's parameters allowed) into method configs,
    each parsed once (a run passes them on; nothing parses them again).

    A comma-separated item with a ``:`` or without ``=`` starts a new method; ``key=value`` items attach to the
    method before. Also accepts a list of such strings or of parsed methods. A method listed twice is refused.
    """
    items = [specs] if isinstance(specs, str) else list(specs)
    texts: list = []
    for item in items:
        texts.extend(_split(item) if isinstance(item, str) else [item])
    if not texts:
        raise ValueError("no methods given; e.g. --methods base,bon:n=16,eft:beta=1.0,cbs:w=4,k=4,l=5")
    methods = [parse_method(t) for t in texts]
    canonical = [m.spec for m in methods]
    dupes = sorted({s for s in canonical if canonical.count(s) > 1})
    if dupes:
        raise ValueError(f"method(s) listed twice: {', '.join(dupes)}")
    return methods


def _split(text: str) -> list:
    out: list = []
    current: Optional[str] = None
    for item in (p.strip() for p in re.split(r"[,;\s]+", text.strip())):
        if not item:
            continue
        if ":" in item or "=" not in item:
            if current is not None:
                out.append(current)
            current = item
        elif current is None:
            raise ValueError(f"method parameter {item!r} comes before any method name; write e.g. 'bon:n=16'")
        else:
            current += "," + item
    if current is not None:
        out.append(current)
    return out


def split_methods(specs: Union[str, Sequence[str]]) -> list:
    """The canonical specs (``parse_method(spec).spec``) of :func:`parse_methods`."""
    return [m.spec for m in parse_methods(specs)]


def parse_seeds(text: Union[str, int, Sequence[int]]) -> tuple:
    """``3`` -> (0, 1, 2); ``"0,5,7"`` -> (0, 5, 7); a list of ints is kept."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        return tuple(int(s) for s in text)
    text = text.strip()
    try:
        if "," in text:
            return tuple(int(s) for s in text.split(",") if s.strip())
        n = int(text)
    except ValueError:
        raise ValueError(f"seeds must be a count (e.g. 3 -> seeds 0,1,2) or a list like 0,5,7; got {text!r}") from None
    if n < 1:
        raise ValueError(f"the number of seeds must be >= 1, got {n}")
    return tuple(range(n))


def check_run_dir(out_dir: os.PathLike, cfg: RunConfig) -> tuple:
    """Refuse a run directory made with another identity, writing nothing.

    Returns (path, merged grid, created, not_applicable): the grid merges the stored one with ``cfg``'s;
    ``not_applicable`` is what the stored run found it could not apply ({method: why}; the same identity gives
    the same answer).

    The merged grid is the union of the stored grid and ``cfg``'s.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"results directory {out} is a file; choose another --out")
    check_writable_dir(out, "results directory", "choose a writable --out")
    grid, not_applicable = cfg.grid(), {}
    stored = check_identity(out / CONFIG_FILE, cfg.identity(), f"results directory {out}")
    created = utc_now()
    if stored is not None:
        old_grid = stored.get("grid") or {}
        grid = {
            "methods": list(dict.fromkeys(old_grid.get("methods", []) + grid["methods"])),
            "n_prompts": max(int(old_grid.get("n_prompts", 0)), grid["n_prompts"]),
            "seeds": list(dict.fromkeys(old_grid.get("seeds", []) + grid["seeds"])),
        }
        created = stored.get("created", created)
        not_applicable = dict(stored.get("not_applicable") or {})
    # records on disk must carry this identity too (e.g. a records file copied in by hand)
    records, _ = read_records(out / RECORDS_FILE, warn=False)
    for i, rec in enumerate(records):
        if rec.get("config_hash") != cfg.config_hash:
            diffs = diff_fields(_identity_of(rec), cfg.identity()) or [
                ("config_hash", rec.get("config_hash"), cfg.config_hash)
            ]
            raise ValueError(mismatch_message(f"record {i + 1} of {out / RECORDS_FILE}", diffs))
    return out, grid, created, not_applicable


def open_run_dir(out_dir: os.PathLike, cfg: RunConfig, not_applicable: Optional[dict] = None) -> Path:
    """Create or reopen a run directory for ``cfg`` (see :func:`check_run_dir`) and write its ``config.json``.

    Call it once everything that can fail on bad settings has been checked: the identity it writes makes the
    directory refuse other settings. ``not_applicable``: {method: why} for methods of the grid that cannot run
    with this engine (the report shows them as n/a).
    """
    out, grid, created, _ = check_run_dir(out_dir, cfg)  # checked writable
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "identity": cfg.identity(),
        "config_hash": cfg.config_hash,
        "grid": grid,
        "created": created,
        "updated": utc_now(),
        "versions": package_versions(),
        "machine": machine_info(),
        "git_revision": git_revision(),
    }
    if not_applicable:
        doc["not_applicable"] = dict(not_applicable)
    atomic_write_json(out / CONFIG_FILE, doc)
    return out


def _identity_of(record: dict) -> dict:
    config = record.get("config") or {}
    keys = ("world", "world_fingerprint", "sampling", "guide", "guide_beta", "dtype")
    optional = ("strong", "chat_template") + _OPTIONAL_IDENTITY
    return {k: config.get(k) for k in keys + tuple(k for k in optional if k in config)}


def record_key(record: dict) -> tuple:
    """The key of a record: (prompt_id, canonical method spec, seed); a method that does not parse keeps its text."""
    method = str(record["method"])
    try:
        method = method_spec(method)
    except ValueError:
        pass
    return (str(record["prompt_id"]), method, int(record["seed"]))


def _parse_record(line: bytes) -> dict:
    record = json.loads(line)
    if not isinstance(record, dict) or not all(k in record for k in ("prompt_id", "method", "seed")):
        raise ValueError("not a record")
    return record


def read_records(path: os.PathLike, warn: bool = True) -> tuple:
    """Read a records file (``.xz``: compressed, as committed results keep them): (records, truncated_tail or None).

    A last line that is not valid JSON (a write cut short) is returned as the tail
    and logged, never fatal; an invalid line before the last raises ValueError.
    """
    path = Path(path)
    if not path.exists():
        return [], None
    raw = path.read_bytes()
    if path.suffix == ".xz":  # committed records are xz-compressed
        raw = lzma.decompress(raw)
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
            raise ValueError(
                f"{path}: line {i + 1} is not valid JSON (corrupted in the middle of the file); "
                "fix or remove that line, then rerun"
            ) from None
    truncated = None
    if tail.strip():
        try:
            records.append(_parse_record(tail))  # a complete record whose newline is missing
        except ValueError:
            truncated = tail.decode("utf-8", errors="replace")
            if warn:
                logger.warning(
                    "%s: the last line is truncated (%d bytes, a write cut short); it is ignored and its "
                    "record will be recomputed",
                    path,
                    len(tail),
                )
    return records, truncated


class RecordLog:
    """Append-only JSONL records of one run directory (flushed and fsynced per record); ``name``: the records file
    (a shard's own, :mod:`w2s_eval.sharding`); ``known``: keys recorded elsewhere, skipped as if recorded here."""

    def __init__(self, run_dir: os.PathLike, name: str = RECORDS_FILE, known: Iterable[tuple] = ()):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / name
        self.records, self.truncated = read_records(self.path)
        self._repair()
        self.keys = {record_key(r) for r in self.records} | set(known)

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
        append_jsonl(self.path, [record], sort_keys=True)
        self.records.append(record)
        self.keys.add(key)

    def extend(self, records: Iterable[dict]) -> None:
        for r in records:
            self.append(r)
