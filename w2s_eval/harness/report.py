"""Tables and plots of a comparison run, built from its records alone.

Per method: mean gold reward +- standard error over all its (prompt, seed) records,
the paired difference to ``base`` on the same (prompt, seed) pairs, the independent
judge, the guide score, and the counted compute per prompt (strong-model and guide
token forwards, FLOPs of all models and of the guides, strong samples, wall time). Methods of
equal budget (strong samples per prompt) are listed together. By default only (prompt, seed)
pairs recorded for every method are used, so every row is measured on the same inputs.

FLOPs are each record's own count (``flops``, :mod:`w2s_eval.flops`). Records made before
w2s-eval counted FLOPs hold token counters only: their FLOPs are estimated from those counters
and the run's ``model_shapes.json`` (:func:`record_flops`), and the report says so.

Records are checked before anything is averaged (:func:`check_records`): a missing, non-numeric
or non-finite number is refused naming the record and the field, method specs are made
canonical (``bon:n=02`` is ``bon:n=2``), a key recorded twice with other results is refused,
and records made with another config than the directory's ``config.json`` are refused.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence, Union

from ..config import method_spec, parse_method
from ..provenance import atomic_write_text, mean_se
from .plots import plot_gold_by_method, plot_gold_vs_flops, plot_gold_vs_samples
from .records import record_key
from .runs import check_records, load_run, load_shapes, not_applicable_of, record_flops

__all__ = [
    "MethodSummary",
    "Summary",
    "summarize",
    "summary_of",
    "to_markdown",
    "told_apart",
    "to_csv",
    "to_latex",
    "write_report",
    "load_run",
    "check_records",
    "not_applicable_of",
    "mean_se",
    "group_by_method",
    "paired_delta",
    "record_flops",
    "load_shapes",
]

logger = logging.getLogger(__name__)

_FAMILY_ORDER = {"base": 0, "eft": 1, "bon": 2, "cbs": 3}


@dataclass
class MethodSummary:
    method: str
    family: str
    budget: int
    n: int  # records (prompt x seed)
    n_prompts: int
    n_seeds: int
    gold_mean: float
    gold_se: Optional[float]
    delta_gold_vs_base: Optional[float]  # paired: mean over (prompt, seed) of gold(method) - gold(base)
    delta_gold_se: Optional[float]
    judge_mean: float
    judge_se: Optional[float]
    guide_mean: Optional[float]
    guide_se: Optional[float]
    strong_tokens: float  # mean strong-model token forwards per prompt
    guide_tokens: float  # mean guide token forwards per prompt (the method's compute; not the re-scoring)
    samples: float  # mean strong-model continuations drawn per prompt
    wall_time_s: float  # mean wall time per prompt (batch time / batch size)
    note: Optional[str] = None  # why a method has no records: "n/a (vocabulary differs)"
    flops: Optional[float] = None  # mean FLOPs per prompt, every model (None: unknown, e.g. a served strong model)
    guide_flops: Optional[float] = None  # mean FLOPs per prompt of the guides (EFT's included)


@dataclass
class Summary:
    world: str
    config_hash: str
    rows: list
    notes: list
    n_records: int


def _mean_or_none(values: list) -> Optional[float]:
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


def _na_row(spec: str, why: str) -> MethodSummary:
    m = parse_method(spec)
    return MethodSummary(
        method=spec,
        family=m.name,
        budget=m.budget,
        n=0,
        n_prompts=0,
        n_seeds=0,
        gold_mean=None,
        gold_se=None,
        delta_gold_vs_base=None,
        delta_gold_se=None,
        judge_mean=None,
        judge_se=None,
        guide_mean=None,
        guide_se=None,
        strong_tokens=None,
        guide_tokens=None,
        samples=None,
        wall_time_s=None,
        note=f"n/a ({why.split(':')[0]})",
    )


def _sort_key(spec: str) -> tuple:
    m = parse_method(spec)
    return (m.budget, _FAMILY_ORDER.get(m.name, 9), spec)


def group_by_method(records: Sequence[dict]) -> dict:
    """{method spec: {(prompt_id, seed): record}}."""
    by_method: dict = {}
    for r in records:
        pid, spec, seed = record_key(r)
        by_method.setdefault(spec, {})[(pid, seed)] = r
    return by_method


def paired_delta(records: dict, base: dict, field: str) -> tuple:
    """(mean, s.e.) of ``record[field] - base record[field]`` over the (prompt, seed) pairs both hold
    (``records``, ``base``: {(prompt_id, seed): record})."""
    return mean_se([r[field] - base[k][field] for k, r in records.items() if k in base])


def _matched_keys(by_method: dict, notes: list) -> set:
    """The (prompt, seed) pairs recorded for every method (a note says how many records that leaves out)."""
    sets = [set(v) for v in by_method.values()]
    keys = set.intersection(*sets)
    if not keys:
        raise ValueError(
            "no (prompt, seed) pair is recorded for every method; finish the run (rerun compare) "
            "or report all records with --all"
        )
    dropped = sum(len(s - keys) for s in sets)
    if dropped:
        notes.append(
            f"{dropped} record(s) whose (prompt, seed) pair is missing for some method were left out "
            f"(the table uses the {len(keys)} pairs recorded for every method)"
        )
    return keys


def summarize(
    records: Sequence[dict],
    matched: bool = True,
    notes: Optional[list] = None,
    not_applicable: Optional[dict] = None,
    shapes: Optional[dict] = None,
) -> Summary:
    """Per-method summaries of ``records`` (see the module doc); ``not_applicable``: {method: why} of methods
    that were not run, shown as rows "n/a (why)"; ``shapes``: {role: ModelShape} for records without FLOPs
    (:func:`record_flops`)."""
    notes = list(notes or [])
    if not records:
        raise ValueError("there are no records to report; run `w2s-eval compare` first")
    by_method = group_by_method(records)
    keys = _matched_keys(by_method, notes) if matched else None
    if any(r.get("strong_engine") for r in records):
        notes.append(
            "the strong model was served by an endpoint: its strong tok/prompt counts the prompt and "
            "prefix tokens sent again every round (the server's prefix cache may skip them), so it is not "
            "comparable with a local strong model's counts"
        )
    base = by_method.get("base")
    rows, estimated = [], False
    for spec in sorted(by_method, key=_sort_key):
        recs = by_method[spec]
        use = {k: r for k, r in recs.items() if keys is None or k in keys}
        vals = list(use.values())
        m = parse_method(spec)
        gold_m, gold_se = mean_se([r["gold"] for r in vals])
        judge_m, judge_se = mean_se([r["judge"] for r in vals])
        guide_m, guide_se = mean_se([r["guide_score"] for r in vals if r.get("guide_score") is not None])
        delta_m = delta_se = None
        if base is not None and spec != "base":
            delta_m, delta_se = paired_delta(use, base, "gold")
        flops = [record_flops(r, shapes) for r in vals]
        estimated = estimated or any(f[2] for f in flops)
        rows.append(
            MethodSummary(
                method=spec,
                family=m.name,
                budget=m.budget,
                n=len(vals),
                n_prompts=len({k[0] for k in use}),
                n_seeds=len({k[1] for k in use}),
                gold_mean=gold_m,
                gold_se=gold_se,
                delta_gold_vs_base=delta_m,
                delta_gold_se=delta_se,
                judge_mean=judge_m,
                judge_se=judge_se,
                guide_mean=guide_m,
                guide_se=guide_se,
                strong_tokens=mean_se([r["strong_tokens"] for r in vals])[0],
                guide_tokens=mean_se([r["guide_tokens"] for r in vals])[0],
                samples=mean_se([r["samples"] for r in vals])[0],
                wall_time_s=mean_se([r["wall_time_s"] for r in vals])[0],
                flops=_mean_or_none([f[0] for f in flops]),
                guide_flops=_mean_or_none([f[1] for f in flops]),
            )
        )
    if estimated:
        notes.append(
            "FLOPs estimated: these records hold token counters, not FLOPs (made before w2s-eval counted "
            "them); strong and guide tokens times each model's per-token FLOPs at a context of "
            "max_new_tokens positions, from model_shapes.json; the guides' prompt prefill is left out"
        )
    for spec, why in (not_applicable or {}).items():
        if spec not in by_method:
            rows.append(_na_row(spec, why))
            notes.append(f"{spec} was not run: {why}")
    rows.sort(key=lambda r: _sort_key(r.method))
    first = records[0]
    world = (first.get("config") or {}).get("world", "?")
    return Summary(
        world=world, config_hash=first.get("config_hash", "?"), rows=rows, notes=notes, n_records=sum(r.n for r in rows)
    )


# ----------------------------------------------------------------------------- formats


def _pm(m: Optional[float], se: Optional[float], digits: int = 3, sep: str = " ± ") -> str:
    if m is None:
        return "–"
    return f"{m:.{digits}f}" if se is None else f"{m:.{digits}f}{sep}{se:.{digits}f}"


_COLUMNS = (
    "budget",
    "method",
    "n",
    "gold ± se",
    "Δ gold vs base ± se",
    "judge ± se",
    "guide score ± se",
    "strong tok/prompt",
    "guide tok/prompt",
    "GFLOP/prompt (guides)",
    "samples/prompt",
    "wall s/prompt",
)


def _gflops(r: MethodSummary) -> str:
    """Total GFLOP per prompt with the guides' share in parentheses (3 significant digits); – when unknown."""
    if r.flops is None:
        return "–"
    guides = "" if r.guide_flops is None else f" ({r.guide_flops / 1e9:.3g})"
    return f"{r.flops / 1e9:.3g}{guides}"


def _cells(r: MethodSummary, sep: str = " ± ") -> list:
    if r.note is not None:
        return [str(r.budget), r.method, str(r.n), r.note] + ["–"] * (len(_COLUMNS) - 4)
    return [
        str(r.budget),
        r.method,
        str(r.n),
        _pm(r.gold_mean, r.gold_se, sep=sep),
        _pm(r.delta_gold_vs_base, r.delta_gold_se, sep=sep),
        _pm(r.judge_mean, r.judge_se, sep=sep),
        _pm(r.guide_mean, r.guide_se, 2, sep=sep),
        f"{r.strong_tokens:.0f}",
        f"{r.guide_tokens:.0f}",
        _gflops(r),
        f"{r.samples:.1f}",
        f"{r.wall_time_s:.2f}",
    ]


def _describe(s: Summary) -> str:
    prompts = max((r.n_prompts for r in s.rows), default=0)
    seeds = max((r.n_seeds for r in s.rows), default=0)
    return (
        f"world `{s.world}`, config `{s.config_hash}`: {prompts} prompts x {seeds} seeds per method; "
        "mean ± standard error over prompts and seeds; budget = strong-model samples per prompt (per round); "
        "compute columns are means per prompt; GFLOP: every model's FLOPs, the guides' in parentheses "
        "(matched compute = matched total FLOPs)"
    )


def told_apart(r: MethodSummary, sigmas: float) -> bool:
    """Whether the row's gold gain over base is more than ``sigmas`` standard errors from zero."""
    return (
        r.delta_gold_vs_base is not None
        and r.delta_gold_se is not None
        and abs(r.delta_gold_vs_base) > sigmas * r.delta_gold_se
    )


def to_markdown(s: Summary, mark: Optional[float] = None) -> str:
    """The Markdown table; with ``mark``, a gain over base more than ``mark`` s.e. from zero is marked ``*``."""
    lines = [_describe(s), "", "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    previous = None
    for r in s.rows:
        cells = _cells(r)
        if mark is not None and r.note is None and told_apart(r, mark):
            cells[4] += " *"
        if r.budget == previous:
            cells[0] = ""  # methods of equal budget side by side under one budget
        previous = r.budget
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"- {n}" for n in s.notes]
    return "\n".join(lines).rstrip() + "\n"


def to_csv(s: Summary) -> str:
    buf = io.StringIO()
    names = list(MethodSummary.__dataclass_fields__)
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    for r in s.rows:
        w.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    return buf.getvalue()


def _tex(text: str) -> str:
    text = text.replace("\\", "\x00")
    for a, b in (("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("{", r"\{"), ("}", r"\}"), ("$", r"\$")):
        text = text.replace(a, b)
    return text.replace("\x00", r"\textbackslash{}")


def to_latex(s: Summary) -> str:
    head = [
        "budget",
        "method",
        "$n$",
        "gold",
        r"$\Delta$ gold vs base",
        "judge",
        "guide score",
        "strong tok",
        "guide tok",
        "GFLOP (guides)",
        "samples",
        "wall s",
    ]
    out = [
        f"% {_tex(_describe(s))}".replace("`", ""),
        r"\begin{tabular}{rlr" + "l" * 4 + "rrrrr}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    previous = None
    for r in s.rows:
        if previous is not None and r.budget != previous:
            out.append(r"\midrule")
        cells = _cells(r, sep=r" $\pm$ ")
        cells = [c.replace("–", "--") for c in cells]
        cells[1] = r"\texttt{" + _tex(cells[1]) + "}"
        if r.budget == previous:
            cells[0] = ""
        previous = r.budget
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def summary_of(
    run_dir: Union[str, os.PathLike], matched: bool = True, methods: Optional[Sequence[str]] = None
) -> Summary:
    """The :class:`Summary` of a run directory's records (and the n/a methods its config.json names); with
    ``methods``, of those methods' records only (e.g. the methods a running comparison has finished)."""
    records, notes = load_run(run_dir)
    if methods is not None:
        wanted = {method_spec(m) for m in methods}
        records = [r for r in records if r["method"] in wanted]
    return summarize(
        records, matched=matched, notes=notes, not_applicable=not_applicable_of(run_dir), shapes=load_shapes(run_dir)
    )


def write_report(
    run_dir: Union[str, os.PathLike],
    out_dir: Union[str, os.PathLike, None] = None,
    matched: bool = True,
    plots: bool = True,
) -> dict:
    """Write report.md, report.csv, report.tex and the PNG plots; returns {kind: path} (plus 'summary')."""
    summary = summary_of(run_dir, matched=matched)
    out = Path(out_dir or run_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, text in (("markdown", to_markdown(summary)), ("csv", to_csv(summary)), ("latex", to_latex(summary))):
        path = out / {"markdown": "report.md", "csv": "report.csv", "latex": "report.tex"}[kind]
        paths[kind] = atomic_write_text(path, text)
    if plots:
        measured = replace(summary, rows=[r for r in summary.rows if r.note is None])
        paths["plot_methods"] = plot_gold_by_method(measured, out / "gold_by_method.png")
        paths["plot_samples"] = plot_gold_vs_samples(measured, out / "gold_vs_samples.png")
        if all(r.flops is not None for r in measured.rows):
            paths["plot_flops"] = plot_gold_vs_flops(measured, out / "gold_vs_flops.png")
    paths["summary"] = summary
    return paths
