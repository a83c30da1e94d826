"""The ifeval-mini reference run (issue 21): the world's small guides, and the IFEval checker itself (the oracle),
steer SmolLM2-135M-Instruct and Gemma-3-270M on 48 evaluation prompts x 2 seeds.

    python scripts/ifeval_mini_reference.py run --runs DIR            # the comparisons (hours on 2 CPU cores)
    python scripts/ifeval_mini_reference.py collect --runs DIR --out results/ifeval-mini
    python scripts/ifeval_mini_reference.py check results/ifeval-mini

``run`` runs, per strong model NAME, ``w2s-eval compare --world ifeval-mini --strong NAME`` twice: into
``DIR/NAME`` with the world's guide (the implicit value of its tuned/untuned pair; :data:`METHODS`) and into
``DIR/NAME-oracle`` with ``--guide gold`` (the checker's instruction-level loose fraction guides BoN and CBS;
:data:`ORACLE_METHODS`). Rerun it to resume. ``collect`` and ``check`` work as in
``scripts/strong_reference.py`` (whose summary and report functions they use): reports, compressed records,
``summary.json`` from the records only, and ``check`` recomputes them. The summary adds, per method, the
independent judge's figures that are never used to choose anything: prompt-level strict accuracy (the world's
judge), prompt-level loose accuracy, response length in words, distinct-2 and the share of responses that end
before the token budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import strong_reference as sr  # noqa: E402  (the sibling script's summary and report functions)

from w2s_eval.assets import cache_home  # noqa: E402
from w2s_eval.provenance import atomic_write_json, mean_se, to_json  # noqa: E402

WORLD = "ifeval-mini"
MODELS = ("smollm2-135m", "gemma3-270m")
L = 16  # CBS chunk length in tokens: 8 rounds over the 128-token budget, as imdb-mini's l=5 gives 10 over 50
METHODS = f"base,bon:n=4,bon:n=16,eft:beta=1,cbs:w=2,k=2,l={L},cbs:w=4,k=4,l={L}"
ORACLE_METHODS = f"base,bon:n=4,bon:n=16,cbs:w=2,k=2,l={L},cbs:w=4,k=4,l={L}"
PROMPTS, SEEDS = 48, 2
SUMMARY = "summary.json"


def runs_of(models) -> list:
    """(run name, strong model, guide) of every comparison."""
    return [(f"{m}{suffix}", m, guide) for m in models for suffix, guide in (("", "implicit"), ("-oracle", "gold"))]


def compare_command(model: str, guide: str, out: Path) -> list:
    return [
        "w2s-eval",
        "compare",
        "--world",
        WORLD,
        "--strong",
        model,
        "--guide",
        guide,
        "--methods",
        METHODS if guide == "implicit" else ORACLE_METHODS,
        "--prompts",
        str(PROMPTS),
        "--seeds",
        str(SEEDS),
        "--out",
        str(out),
    ]


def run(runs: Path, models, threads: int) -> int:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    exe = Path(sys.executable).with_name("w2s-eval")
    status = 0
    for name, model, guide in runs_of(models):
        cmd = compare_command(model, guide, runs / name)
        cmd[0] = str(exe) if exe.exists() else cmd[0]
        print(" ".join(cmd), flush=True)
        status = status or subprocess.call(cmd, env=env)
    return status


def _distinct2(text: str) -> float:
    words = text.split()
    grams = list(zip(words, words[1:]))
    return len(set(grams)) / len(grams) if grams else 0.0


def judge_figures(records: list, gold) -> dict:
    """Per method: the independent judge's figures (never used for selection), mean +- s.e. over records."""
    out = {}
    for method in sorted({r["method"] for r in records}):
        rows = [r for r in records if r["method"] == method]
        loose = [float(gold.scores(r["prompt"], r["response"])["prompt_level_loose_acc"]) for r in rows]
        figures = {
            "prompt_strict": [r["judge"] for r in rows],
            "prompt_loose": loose,
            "words": [len(r["response"].split()) for r in rows],
            "distinct_2": [_distinct2(r["response"]) for r in rows],
            "ended": [1.0 if r["ended"] else 0.0 for r in rows],
        }
        out[method] = {
            k: dict(zip(("mean", "se"), (round(v, 4) if v is not None else None for v in mean_se(vals))))
            for k, vals in figures.items()
        }
    return out


def summary_of(out: Path, loaded: dict, gold) -> dict:
    result = {
        "commands": [
            " ".join(compare_command(m, g, Path("DIR") / n))
            for n, m, g in runs_of(sorted({n.removesuffix("-oracle") for n in loaded}))
        ],
        "runs": {},
    }
    for name, (records, summary) in loaded.items():
        prov = json.loads((out / name / sr.PROVENANCE).read_text(encoding="utf-8"))
        entry = {k: prov.get(k) for k in ("model_type", "params", "vocab", "layers", "hidden", "wheels")}
        entry.update(sr.model_summary(records, summary))
        entry["judge_figures"] = judge_figures(records, gold)
        entry["guide"] = records[0]["config"]["guide"]
        entry["world_fingerprint"] = records[0]["config"]["world_fingerprint"]
        result["runs"][name] = entry
    return result


def _gold(home=None):
    from w2s_eval.world_registry import load_world

    return load_world(WORLD, home).gold


def collect(runs: Path, out: Path, models, strong_home: Path, world_manifest: Path) -> None:
    names = [n for n, _, _ in runs_of(models) if (runs / n / "records.jsonl").exists()]
    for name in names:
        sr.collect_run(runs / name, out / name)
        prov = strong_home / name.removesuffix("-oracle") / "w2s_strong.json"
        if prov.exists():
            shutil.copy(prov, out / name / sr.PROVENANCE)
        else:  # the world's own strong model (its conversion is in the world manifest)
            (out / name / sr.PROVENANCE).write_text(json.dumps({"model_type": "llama", "note": "the world's own"}))
    shutil.copy(world_manifest, out / "world_manifest.json")
    atomic_write_json(out / SUMMARY, summary_of(out, sr.load_collected(out, names), _gold()))


def check(out: Path) -> list:
    names = sorted(p.name for p in out.iterdir() if (p / sr.RECORDS_XZ).exists())
    loaded = sr.load_collected(out, names)
    return sr.differences(out, loaded, json.loads(to_json(summary_of(out, loaded, _gold()))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--runs", type=Path, required=True)
    r.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("collect")
    c.add_argument("--runs", type=Path, required=True)
    c.add_argument("--out", type=Path, default=Path("results/ifeval-mini"))
    home = cache_home(create=False)
    c.add_argument("--strong-home", type=Path, default=home / "strong")
    c.add_argument("--world-manifest", type=Path, default=home / "worlds" / WORLD / "manifest.json")
    k = sub.add_parser("check")
    k.add_argument("out", type=Path)
    for s in (r, c):
        s.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args(argv)
    if args.command == "run":
        return run(args.runs, args.models.split(","), args.threads)
    if args.command == "collect":
        collect(args.runs, args.out, args.models.split(","), args.strong_home, args.world_manifest)
        return 0
    problems = check(args.out)
    for line in problems:
        print(line, file=sys.stderr)
    print("ok" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
