"""The multi-strong-model reference run of issue 14: the same small imdb-mini guides steer three strong models.

    python scripts/strong_reference.py run --runs DIR            # the comparisons (hours on 2 CPU cores; resumable)
    python scripts/strong_reference.py collect --runs DIR --out results/imdb-mini-strong
    python scripts/strong_reference.py check results/imdb-mini-strong
    python scripts/strong_reference.py shapes results/imdb-mini-strong  # model_shapes.json from the models' configs
    python scripts/strong_reference.py report results/imdb-mini-strong  # reports, summary and plots, from the records

``run`` runs ``w2s-eval compare --world imdb-mini --strong NAME`` for each strong model into ``DIR/NAME`` (rerun
it to resume: compare skips the records it has); ``--jobs 2`` runs two models at once, each on ``--threads``
threads. ``collect`` writes, from the records only: each model's report (md/csv/tex, plots), its records
(``records.jsonl.xz``), its run config and the strong model's conversion provenance (parameters, sha256s),
``summary.json`` (gold and judge gain over base per method and model, paired over (prompt, seed), with wall time
per model) and ``gain_vs_params.png`` (gain over base against strong-model parameters, a line per method).
``check`` recomputes summary.json and every report.md from the committed records and fails on any difference.
``shapes`` writes each model's ``model_shapes.json`` (what the FLOP formula of :mod:`w2s_eval.flops` reads) from the
models' configs (:data:`CONFIGS`, checked against the parameter counts in ``strong_model.json``); the records were made
before w2s-eval counted FLOPs, so the reports estimate them from the records' token counters and these shapes.
``report`` rewrites every report, summary.json and the plot from the committed records, leaving the records as they
are.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devtools/ (the models' configs)

from devtools.model_configs import GUIDE as _GUIDE  # noqa: E402
from devtools.model_configs import STRONG as CONFIGS  # noqa: E402
from w2s_eval.assets import cache_home  # noqa: E402
from w2s_eval.flops import shape_from_config  # noqa: E402
from w2s_eval.harness.records import SHAPES_FILE  # noqa: E402
from w2s_eval.harness.report import (  # noqa: E402
    group_by_method,
    load_run,
    load_shapes,
    not_applicable_of,
    paired_delta,
    summarize,
    to_markdown,
    write_report,
)
from w2s_eval.provenance import atomic_write_json, to_json  # noqa: E402

MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-0.5b")
METHODS = "base,bon:n=4,bon:n=16,eft:beta=1,cbs:w=2,k=2,l=5,cbs:w=4,k=4,l=5"
PROMPTS, SEEDS = 64, 2
RECORDS_XZ = "records.jsonl.xz"
PROVENANCE = "strong_model.json"
SUMMARY = "summary.json"
PLOT = "gain_vs_params.png"
_LINE_STYLES = {
    "bon:n=4": ("#1f77b4", "--", "o"),
    "bon:n=16": ("#1f77b4", "-", "o"),
    "cbs:w=2,k=2,l=5": ("#d62728", "--", "s"),
    "cbs:w=4,k=4,l=5": ("#d62728", "-", "s"),
    "eft:beta=1": ("#9467bd", "", "D"),
}


def compare_command(model: str, out: Path) -> list:
    return [
        "w2s-eval",
        "compare",
        "--world",
        "imdb-mini",
        "--strong",
        model,
        "--methods",
        METHODS,
        "--prompts",
        str(PROMPTS),
        "--seeds",
        str(SEEDS),
        "--out",
        str(out),
    ]


def run(runs: Path, models, jobs: int, threads: int) -> int:
    """Run (or resume) the comparisons, at most ``jobs`` at a time; the exit status of the first that failed."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    exe = Path(sys.executable).with_name("w2s-eval")
    pending, running, status = list(models), [], 0
    while pending or running:
        while pending and len(running) < jobs:
            model = pending.pop(0)
            cmd = compare_command(model, runs / model)
            cmd[0] = str(exe) if exe.exists() else cmd[0]
            print(" ".join(cmd), flush=True)
            running.append(subprocess.Popen(cmd, env=env))
        code = running.pop(0).wait()  # always waited for, also after an earlier failure
        status = status or code
    return status


def model_summary(records: list, summary) -> dict:
    """Per method: n, gold and judge means, and their paired gains over base (mean, s.e.), from the records and
    their :class:`Summary` (the pairs every method has, as the summary uses)."""
    by_method = group_by_method(records)
    keys = set.intersection(*(set(v) for v in by_method.values()))
    by_method = {m: {k: r for k, r in v.items() if k in keys} for m, v in by_method.items()}
    methods = {}
    for row in summary.rows:
        if row.note is not None:
            methods[row.method] = {"n": 0, "note": row.note}
            continue
        judge_gain = (
            paired_delta(by_method[row.method], by_method["base"], "judge") if row.method != "base" else (None, None)
        )
        methods[row.method] = {
            "n": row.n,
            "gold": row.gold_mean,
            "gold_se": row.gold_se,
            "judge": row.judge_mean,
            "judge_se": row.judge_se,
            "gold_gain": row.delta_gold_vs_base,
            "gold_gain_se": row.delta_gold_se,
            "judge_gain": judge_gain[0],
            "judge_gain_se": judge_gain[1],
            "wall_s_per_prompt": row.wall_time_s,
            "gflop_per_prompt": None if row.flops is None else round(row.flops / 1e9, 3),
            "guide_gflop_per_prompt": None if row.guide_flops is None else round(row.guide_flops / 1e9, 3),
        }
    cbs_vs_bon = {}  # CBS against BoN of the same strong-sample budget, paired over (prompt, seed)
    for cbs in (r for r in summary.rows if r.family == "cbs" and r.note is None):
        for bon in (r for r in summary.rows if r.family == "bon" and r.budget == cbs.budget and r.note is None):
            paired = paired_delta(by_method[cbs.method], by_method[bon.method], "gold")
            cbs_vs_bon[f"{cbs.method} - {bon.method}"] = dict(zip(("gold", "gold_se"), paired))
    return {
        "config_hash": summary.config_hash,
        "records": len(records),
        "methods": methods,
        "cbs_vs_bon": cbs_vs_bon,
        "wall_time_s": sum(r["wall_time_s"] for r in records),
        "batch_sizes": sorted({r["batch_size"] for r in records}),
    }


def load_collected(out: Path, models) -> dict:
    """{model: (records, Summary)} of the records collected under ``out`` (each unpacked once)."""
    loaded = {}
    for model in models:
        with tempfile.TemporaryDirectory() as tmp:  # load_run reads the records of a run directory
            (Path(tmp) / "records.jsonl").write_bytes(lzma.decompress((out / model / RECORDS_XZ).read_bytes()))
            records, notes = load_run(tmp)
        if notes:
            raise ValueError(f"{out / model}: {notes}")
        loaded[model] = (
            records,
            summarize(records, not_applicable=not_applicable_of(out / model), shapes=load_shapes(out / model)),
        )
    return loaded


def summary_of(out: Path, loaded: dict) -> dict:
    """summary.json's content, from the collected records (:func:`load_collected`) and provenance under ``out``."""
    result = {"command": [" ".join(compare_command(m, Path("DIR") / m)) for m in loaded], "models": {}}
    for model, (records, summary) in loaded.items():
        prov = json.loads((out / model / PROVENANCE).read_text(encoding="utf-8"))
        entry = {k: prov.get(k) for k in ("model_type", "params", "vocab", "layers", "hidden", "wheels")}
        entry.update(model_summary(records, summary))
        entry["world_fingerprint"] = records[0]["config"]["world_fingerprint"]
        result["models"][model] = entry
    return result


def plot_gain_vs_params(summary: dict, path: Path) -> Path:
    """Gold and judge gain over base (mean +- s.e., paired) against strong-model parameters; a line per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    models = sorted(summary["models"].items(), key=lambda kv: kv[1]["params"])
    for i, (field, title) in enumerate(
        (("gold_gain", "gold reward gain over base"), ("judge_gain", "VADER judge gain over base"))
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, (method, (color, style, marker)) in enumerate(_LINE_STYLES.items()):
            shift = 1 + 0.03 * (j - 2)  # methods side by side at each model, so the error bars do not overlap
            pts = [
                (shift * m["params"] / 1e6, m["methods"][method])
                for _, m in models
                if m["methods"].get(method, {}).get(field) is not None
            ]
            if pts:
                ax.errorbar(
                    [p for p, _ in pts],
                    [s[field] for _, s in pts],
                    yerr=[s[field + "_se"] for _, s in pts],
                    color=color,
                    linestyle=style or "none",
                    marker=marker,
                    capsize=4,
                    label=method,
                )
        ax.set_xscale("log")
        ax.set_xticks([m["params"] / 1e6 for _, m in models])
        ax.set_xticklabels([f"{name}\n{m['params'] / 1e6:.0f}M" for name, m in models], fontsize=8)
        ax.minorticks_off()
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_title(f"{title} (mean ± s.e.)", fontsize=10)
        ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("imdb-mini: the same SmolLM2-vocabulary guides steer strong models of three families", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path


def collect_run(src: Path, dst: Path) -> None:
    """One run directory's report, config and compressed records into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    write_report(src, dst)
    shutil.copy(src / "config.json", dst / "config.json")
    if (src / SHAPES_FILE).exists():
        shutil.copy(src / SHAPES_FILE, dst / SHAPES_FILE)
    data = (src / "records.jsonl").read_bytes()
    (dst / RECORDS_XZ).write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


def collect(runs: Path, out: Path, models, strong_home: Path, world_manifest: Path) -> None:
    for model in models:
        collect_run(runs / model, out / model)
        shutil.copy(strong_home / model / "w2s_strong.json", out / model / PROVENANCE)
    shutil.copy(world_manifest, out / "world_manifest.json")
    summary = summary_of(out, load_collected(out, models))
    atomic_write_json(out / SUMMARY, summary)
    plot_gain_vs_params(summary, out / PLOT)


def write_shapes(out: Path, models) -> None:
    """Each model's model_shapes.json from :data:`CONFIGS`; refuses a config whose parameters are not the
    converted model's (``strong_model.json``)."""
    guide = shape_from_config(_GUIDE).to_dict()
    for model in models:
        strong = shape_from_config(CONFIGS[model]).to_dict()
        want = json.loads((out / model / PROVENANCE).read_text(encoding="utf-8"))["params"]
        if strong["params"] != want:
            raise ValueError(f"{model}: the config gives {strong['params']} parameters, the converted model has {want}")
        atomic_write_json(out / model / SHAPES_FILE, {"strong": strong, "tuned": guide, "untuned": guide})


def rewrite_reports(out: Path, models) -> None:
    """Every model's report files, summary.json and the plot again from the committed records (kept as they are)."""
    for model in models:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp)
            (run / "records.jsonl").write_bytes(lzma.decompress((out / model / RECORDS_XZ).read_bytes()))
            for name in ("config.json", SHAPES_FILE):
                if (out / model / name).exists():
                    shutil.copy(out / model / name, run / name)
            write_report(run, out / model)
    summary = summary_of(out, load_collected(out, models))
    atomic_write_json(out / SUMMARY, summary)
    plot_gain_vs_params(summary, out / PLOT)


def differences(out: Path, loaded: dict, got: dict) -> list:
    """How the committed ``summary.json`` and each run's ``report.md`` under ``out`` differ from ``got`` (the
    summary made again) and the reports of the ``loaded`` records."""
    problems = []
    if got != json.loads((out / SUMMARY).read_text(encoding="utf-8")):
        problems.append(f"{out / SUMMARY} differs from the summary of the committed records")
    for name, (_, summary) in loaded.items():
        if to_markdown(summary) != (out / name / "report.md").read_text(encoding="utf-8"):
            problems.append(f"{out / name / 'report.md'} differs from the report of its records")
    return problems


def check(out: Path, models) -> list:
    """Differences between the committed summary.json / report.md files and those made again from the records."""
    loaded = load_collected(out, models)
    got = json.loads(to_json(summary_of(out, loaded)))
    problems = differences(out, loaded, got)
    with tempfile.TemporaryDirectory() as tmp:
        plot_gain_vs_params(got, Path(tmp) / PLOT)
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--runs", type=Path, required=True)
    r.add_argument("--jobs", type=int, default=1)
    r.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("collect")
    c.add_argument("--runs", type=Path, required=True)
    c.add_argument("--out", type=Path, default=Path("results/imdb-mini-strong"))
    home = cache_home(create=False)
    c.add_argument("--strong-home", type=Path, default=home / "strong")
    c.add_argument("--world-manifest", type=Path, default=home / "worlds" / "imdb-mini" / "manifest.json")
    k = sub.add_parser("check")
    k.add_argument("out", type=Path)
    sh = sub.add_parser("shapes")
    sh.add_argument("out", type=Path)
    rp = sub.add_parser("report")
    rp.add_argument("out", type=Path)
    for s in (r, c, k, sh, rp):
        s.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args(argv)
    models = args.models.split(",")
    if args.command == "run":
        return run(args.runs, models, args.jobs, args.threads)
    if args.command == "collect":
        collect(args.runs, args.out, models, args.strong_home, args.world_manifest)
        return 0
    if args.command == "shapes":
        write_shapes(args.out, models)
        return 0
    if args.command == "report":
        rewrite_reports(args.out, models)
        return 0
    problems = check(args.out, models)
    for line in problems:
        print(line, file=sys.stderr)
    print("ok" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
