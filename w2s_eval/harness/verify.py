"""A comparison run checked against committed results: are its per-method gains over base the same?

:func:`verify` compares a run directory with a reference directory (e.g. ``results/imdb-mini``) method by method:

- per method other than ``base``: the gold gain over base (and the judge gain over base, where the reference has
  records); for ``base``: its absolute gold and judge;
- **paired** where the two hold records of the same (prompt, seed) pairs (the same prompt text): the mean over
  those pairs of ``(here[m] - here[base]) - (there[m] - there[base])`` +- its standard error, so the noise the two
  runs share (the same prompts) cancels;
- **unpaired** otherwise (a reference with a report but no records, or no common pairs): ``here - there`` +- the
  combined standard error ``sqrt(se_here^2 + se_there^2)``.

The verdict is one of ``identical records`` (every record the two share has the same response, scores and
counters), ``reproduced within noise`` (no figure differs by more than :data:`SIGMAS` combined standard errors) or
``differs``, naming each method and figure beyond that. Notes say what the two runs differ in: identity (another
world fingerprint is another world: only statistical agreement is expected), package versions, the lock the
reference names (``lock.json``), and the machine.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from ..provenance import diff_fields, mean_se
from .records import CONFIG_FILE, RECORDS_FILE, read_records
from .report import group_by_method
from .runs import load_run, not_applicable_of

__all__ = [
    "SIGMAS",
    "IDENTICAL",
    "WITHIN_NOISE",
    "DIFFERS",
    "OUTCOME_FIELDS",
    "Figure",
    "Verdict",
    "Reference",
    "load_reference",
    "verify",
    "read_lock",
    "lock_deviations",
    "LOCK_FILE",
]

SIGMAS = 3.0  # a figure differs when |here - there| > SIGMAS combined standard errors
IDENTICAL = "identical records"
WITHIN_NOISE = "reproduced within noise"
DIFFERS = "differs"
# what a record's outcome is: the same in two records means the same result (times, versions and paths aside)
OUTCOME_FIELDS = (
    "prompt",
    "response",
    "gold",
    "judge",
    "guide_score",
    "strong_tokens",
    "guide_tokens",
    "samples",
    "rounds",
    "response_tokens",
    "ended",
)
LOCK_FILE = "lock.json"  # beside committed results: the lock (constraints file) that made them
_RECORDS_XZ = RECORDS_FILE + ".xz"
_REFERENCE_CONFIGS = (CONFIG_FILE, "run_config.json")


@dataclass(frozen=True)
class Figure:
    """One figure of one method, here against there; ``diff`` +- ``se`` is the (paired or combined) difference."""

    method: str
    name: str  # "gold gain over base", "judge gain over base", "gold", "judge"
    here: float
    here_se: Optional[float]
    there: float
    there_se: Optional[float]
    diff: float
    se: Optional[float]
    n: int  # (prompt, seed) pairs the difference is taken over (paired) or the runs' pairs (unpaired: here's)
    paired: bool

    @property
    def z(self) -> Optional[float]:
        """|diff| in standard errors (inf for a difference with a zero s.e.; None without an s.e.)."""
        if self.se is None:
            return None
        if self.se == 0:
            return 0.0 if self.diff == 0 else math.inf
        return abs(self.diff) / self.se

    def differs(self, sigmas: float = SIGMAS) -> bool:
        return self.z is not None and self.z > sigmas

    def describe(self) -> str:
        how = f"paired over {self.n} (prompt, seed) pairs" if self.paired else "unpaired"
        z = "n/a" if self.z is None else f"{self.z:.1f}"
        return (
            f"{self.method} {self.name}: {_pm(self.here, self.here_se)} here, {_pm(self.there, self.there_se)} "
            f"there; difference {_pm(self.diff, self.se)} ({how}) = {z} combined s.e."
        )


@dataclass
class Verdict:
    """The outcome of :func:`verify`: ``status`` (:data:`IDENTICAL`, :data:`WITHIN_NOISE`, :data:`DIFFERS`), the
    figures compared, the records compared for identity, and notes."""

    status: str
    figures: list
    differing: list
    notes: list = field(default_factory=list)
    identical: dict = field(default_factory=dict)  # {method: (identical records, shared records)}
    against: str = ""
    sigmas: float = SIGMAS

    @property
    def ok(self) -> bool:
        return self.status != DIFFERS

    def text(self) -> str:
        """The verdict as a few lines: the status line first, then the figures that differ, then the notes."""
        if self.status == DIFFERS:
            head = (
                f"check against {self.against}: DIFFERS: "
                + "; ".join(f"{f.method} {f.name}" for f in self.differing)
                + f" (more than {self.sigmas:g} combined s.e.)"
            )
        else:
            paired = sum(f.paired for f in self.figures)
            how = (
                f"{len(self.figures)} figures, {paired} paired over shared (prompt, seed) pairs; none differs by "
                f"more than {self.sigmas:g} combined s.e."
            )
            if self.status == IDENTICAL:
                shared = sum(n for _, n in self.identical.values())
                how = f"all {shared} shared records have the same responses, scores and counters"
            head = f"check against {self.against}: {self.status} ({how})"
        lines = [head] + [f"  {f.describe()}" for f in self.differing] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "against": self.against,
            "sigmas": self.sigmas,
            "notes": list(self.notes),
            "identical": {m: list(v) for m, v in self.identical.items()},
            "figures": [{**f.__dict__, "z": f.z, "differs": f.differs(self.sigmas)} for f in self.figures],
        }


@dataclass
class Reference:
    """Committed results: records where they are committed (``records.jsonl`` or ``records.jsonl.xz``), else the
    per-method rows of ``report.csv``; the run's config (identity, versions) and its lock."""

    path: Path
    records: Optional[list]
    rows: dict  # {method: report.csv row with floats}, only without records
    config: dict
    lock: Optional[dict]
    not_applicable: dict


def _pm(m: Optional[float], se: Optional[float]) -> str:
    if m is None:
        return "-"
    return f"{m:+.2f}" if se is None else f"{m:+.2f} +- {se:.2f}"


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it from git") from None


def _float(text: str) -> Optional[float]:
    return float(text) if text not in ("", None) else None


def load_reference(path: Union[str, os.PathLike]) -> Reference:
    """The committed results in directory ``path`` (see :class:`Reference`)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory of results; give e.g. --against results/imdb-mini")
    config = next((c for c in (_read_json(path / n) for n in _REFERENCE_CONFIGS) if c is not None), {})
    records, rows = None, {}
    if (path / RECORDS_FILE).exists():
        records, _ = load_run(path)
    elif (path / _RECORDS_XZ).exists():
        records, _ = read_records(path / _RECORDS_XZ)
    elif (path / "report.csv").exists():
        with open(path / "report.csv", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if row.get("gold_mean"):  # a method the run could not apply has an empty row
                    rows[row["method"]] = {
                        k: (v if k in ("method", "family", "note") else _float(v)) for k, v in row.items()
                    }
    else:
        raise FileNotFoundError(
            f"{path} has neither records ({RECORDS_FILE}, {_RECORDS_XZ}) nor report.csv; give "
            "the directory of committed results, e.g. results/imdb-mini"
        )
    return Reference(
        path=path,
        records=records,
        rows=rows,
        config=config,
        lock=_find_lock(path),
        not_applicable=not_applicable_of(path),
    )


def _find_lock(path: Path) -> Optional[dict]:
    """The ``lock.json`` of results in ``path`` or a folder above (``results/NAME/MODEL`` takes ``results/NAME``'s),
    with ``lock_path``: the lock file it names, looked up from that folder upwards (the checkout's root)."""
    for folder in (path.resolve(), *path.resolve().parents):
        doc = _read_json(folder / LOCK_FILE)
        if doc is None:
            continue
        name = doc.get("lock")
        found = next((d / name for d in (folder, *folder.parents) if name and (d / name).is_file()), None)
        return {**doc, "lock_path": found}
    return None


# ----------------------------------------------------------------------------- figures


def _matched(by_method: dict) -> dict:
    """``by_method`` restricted to the (prompt, seed) pairs every method has (as the report uses)."""
    keys = set.intersection(*(set(v) for v in by_method.values())) if by_method else set()
    return {m: {k: r for k, r in v.items() if k in keys} for m, v in by_method.items()}


def _gain(recs: dict, base: dict, name: str, keys) -> tuple:
    return mean_se([recs[k][name] - base[k][name] for k in keys])


def _figures_paired(method: str, here: dict, there: dict, keys: list) -> list:
    """The method's figures over the shared ``keys``: gains over base (paired twice) or base's absolute values."""
    out = []
    hm, tm, hb, tb = here[method], there[method], here["base"], there["base"]
    for name in ("gold", "judge"):
        if method == "base":
            h, t = mean_se([hm[k][name] for k in keys]), mean_se([tm[k][name] for k in keys])
            d = mean_se([hm[k][name] - tm[k][name] for k in keys])
            label = name
        else:
            h, t = _gain(hm, hb, name, keys), _gain(tm, tb, name, keys)
            d = mean_se([(hm[k][name] - hb[k][name]) - (tm[k][name] - tb[k][name]) for k in keys])
            label = f"{name} gain over base"
        out.append(Figure(method, label, h[0], h[1], t[0], t[1], d[0], d[1], len(keys), True))
    return out


def _unpaired(method: str, label: str, here: tuple, there: tuple, n: int) -> list:
    if here[0] is None or there[0] is None:
        return []  # a side without the figure (no base, no records)
    se = None if here[1] is None or there[1] is None else math.hypot(here[1], there[1])
    return [Figure(method, label, here[0], here[1], there[0], there[1], here[0] - there[0], se, n, False)]


def _figures_unpaired(method: str, here: dict, ref: Reference, there: Optional[dict]) -> list:
    """The method's figures here (its matched pairs) against the reference's (its records' matched pairs, or its
    report.csv row), unpaired."""
    hm, hb = here[method], here.get("base")
    keys = list(hm)
    out = []
    for name in ("gold", "judge"):
        if method == "base":
            h = mean_se([hm[k][name] for k in keys])
            if there is not None:
                t = mean_se([r[name] for r in there.get("base", {}).values()])
            else:
                row = ref.rows["base"]
                t = (row[f"{name}_mean"], row[f"{name}_se"])
            out.extend(_unpaired(method, name, h, t, len(keys)))
            continue
        if hb is None:
            continue
        h = _gain(hm, hb, name, keys)
        if there is not None:
            tbase = there.get("base", {})
            t = _gain(there[method], tbase, name, [k for k in there[method] if k in tbase])
        elif name == "gold":
            row = ref.rows[method]
            t = (row["delta_gold_vs_base"], row["delta_gold_se"])
        else:
            continue  # report.csv has no judge gain
        out.extend(_unpaired(method, f"{name} gain over base", h, t, len(keys)))
    return out


def _shared_keys(method: str, here: dict, there: dict) -> list:
    """(prompt, seed) pairs that both runs hold for ``method`` and ``base`` with the same prompt text, sorted."""
    keys = set(here[method]) & set(there[method]) & set(here.get("base", {})) & set(there.get("base", {}))
    return sorted(k for k in keys if here[method][k].get("prompt") == there[method][k].get("prompt"))


def _identical(here: dict, there: dict) -> dict:
    """{method: (records with the same outcome, records both runs hold)} over the methods both ran."""
    out = {}
    for method in here:
        if method not in there:
            continue
        shared = [k for k in here[method] if k in there[method]]
        same = sum(all(here[method][k].get(f) == there[method][k].get(f) for f in OUTCOME_FIELDS) for k in shared)
        out[method] = (same, len(shared))
    return out


# ----------------------------------------------------------------------------- provenance notes


def read_lock(path: Union[str, os.PathLike]) -> dict:
    """{normalized name: version} of a pip constraints file's ``name==version`` lines."""
    pins = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)(\s*;.*)?", line)
        if m:
            pins[_normalize(m.group(1))] = m.group(3)
    return pins


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_deviations(versions: dict, pins: dict) -> list:
    """``["name X (lock Y)", ...]`` for packages in ``versions`` whose version is not the lock's (a local label such
    as ``+cpu`` satisfies ``==`` as pip reads it); python and packages the lock does not pin are left out."""
    out = []
    for name, version in sorted(versions.items()):
        want = pins.get(_normalize(name))
        if want is None or name == "python":
            continue
        if version is None or version.split("+")[0] != want.split("+")[0]:
            out.append(f"{name} {version} (lock {want})")
    return out


def _versions_note(here: dict, there: dict) -> Optional[str]:
    diffs = [
        f"{k} {here.get(k)} here, {there.get(k)} there"
        for k in sorted(set(here) | set(there))
        if k in here and k in there and here[k] != there[k]
    ]
    return f"package versions differ: {'; '.join(diffs)}" if diffs else None


def _provenance_notes(run_config: dict, ref: Reference) -> list:
    notes = []
    ident_here, ident_there = run_config.get("identity") or {}, ref.config.get("identity") or {}
    if ident_here and ident_there:
        diffs = diff_fields(ident_there, ident_here)
        fp = [d for d in diffs if d[0] == "world_fingerprint"]
        if fp:
            notes.append(
                f"another world: fingerprint {fp[0][2]} here, {fp[0][1]} there (a world built by another "
                "recipe or on another machine or install); only statistical agreement is expected"
            )
        other = [d for d in diffs if d[0] != "world_fingerprint"]
        if other:
            notes.append(
                "the runs differ in "
                + "; ".join(f"{f} ({new!r} here, {old!r} there)" for f, old, new in other)
                + ": their figures measure different things"
            )
    note = _versions_note(run_config.get("versions") or {}, ref.config.get("versions") or {})
    if note:
        notes.append(note)
    if ref.lock and ref.lock.get("lock_path") is not None:
        deviations = lock_deviations(run_config.get("versions") or {}, read_lock(ref.lock["lock_path"]))
        own = ", ".join(f"{k} {v.get('recorded')}" for k, v in (ref.lock.get("deviations") or {}).items())
        made = f" (it was made with {own})" if own else ""
        install = "matches the lock" if not deviations else f"deviates from it: {', '.join(deviations)}"
        notes.append(f"the reference names the lock {ref.lock.get('lock')}{made}; this run's install {install}")
    here_machine, there_machine = run_config.get("machine"), ref.config.get("machine")
    if here_machine and there_machine and here_machine != there_machine:
        notes.append(f"another machine: {here_machine.get('cpu')} here, {there_machine.get('cpu')} there")
    return notes


# ----------------------------------------------------------------------------- the check


def verify(run_dir: Union[str, os.PathLike], against: Union[str, os.PathLike], sigmas: float = SIGMAS) -> Verdict:
    """Check the records of ``run_dir`` against the committed results in ``against`` (see the module doc)."""
    ref = load_reference(against)
    records, _ = load_run(run_dir)
    here = _matched(group_by_method(records))
    there = _matched(group_by_method(ref.records)) if ref.records is not None else None
    methods_there = set(there) if there is not None else set(ref.rows)
    common = [m for m in here if m in methods_there]
    if not common:
        raise ValueError(
            f"{run_dir} and {against} have no method in common ({', '.join(here)} here; "
            f"{', '.join(sorted(methods_there)) or 'none'} there); nothing to check"
        )
    figures, notes = [], []
    for method in common:
        keys = _shared_keys(method, here, there) if there is not None else []
        if len(keys) >= 2:
            figures.extend(_figures_paired(method, here, there, keys))
        else:
            figures.extend(_figures_unpaired(method, here, ref, there))
    only_here = [m for m in here if m not in methods_there]
    if only_here:
        notes.append(f"not in the reference, so not checked: {', '.join(only_here)}")
    if there is None:
        notes.append(
            f"{against} has no records (only its report): figures are compared unpaired, and whether the "
            "records are identical cannot be told"
        )
    identical = _identical(here, there) if there is not None else {}
    all_same = bool(identical) and all(0 < n == same for same, n in identical.values())
    if identical and not all_same:
        same = [f"{m} {s} of {n}" for m, (s, n) in identical.items() if n]
        if same:
            notes.append("records with the same response, scores and counters: " + ", ".join(same))
    run_config = _read_json(Path(run_dir) / CONFIG_FILE) or {}
    notes.extend(_provenance_notes(run_config, ref))
    differing = [f for f in figures if f.differs(sigmas)]
    status = IDENTICAL if all_same and not differing else (DIFFERS if differing else WITHIN_NOISE)
    return Verdict(
        status=status,
        figures=figures,
        differing=differing,
        notes=notes,
        identical=identical,
        against=str(against),
        sigmas=sigmas,
    )
