"""AlpacaEval with the ifeval-mini world (issue 21, item 4): ``w2s-eval alpaca-eval generate`` on AlpacaEval
instructions the world never trained on, steered by its guides, judged offline by its reward model.

    python scripts/ifeval_mini_alpaca.py --out results/ifeval-mini-alpaca [--limit 48] \
        [--methods base,bon:n=4,cbs:w=2,k=2,l=16] [--max-new-tokens 192]

Steps, each a ``w2s-eval`` command (printed, and written to ``OUT/commands.sh`` so the run can be repeated by hand):

1. Instructions: the world's held-out AlpacaEval rows (``<world>/data/heldout.jsonl``; neither guide nor reward
   model trained on them), the first ``--limit``, written as ``OUT/instructions.json``; their GPT-4 (gpt4_1106_preview)
   baseline answers from the pinned offline AlpacaEval file as ``OUT/reference_gpt4.json``.
2. ``w2s-eval alpaca-eval generate`` per method into ``OUT/<method>/`` (strong model and guides of the world, seed 0,
   the strong model's chat template).
3. ``w2s-eval alpaca-eval judge`` with the world's reward model: every method against the GPT-4 answers
   (``OUT/leaderboard.csv``) and every non-base method against base (``OUT/leaderboard_vs_base.csv``).

The reward model was trained on IFEval-style pairs (one answer follows a format constraint, the other breaks it), so
its verdict on open AlpacaEval instructions says how much a method moves what that model prefers, not quality as
GPT-4 judges it; ``OUT/official_judge.sh`` holds AlpacaEval's own command for people with an OpenAI key.
A rerun resumes (generation continues, finished judgements are kept).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from w2s_eval.alpaca.data import fetch_baseline, load_instructions, load_outputs
from w2s_eval.assets import cache_home

DEFAULT_METHODS = "base,bon:n=4,cbs:w=2,k=2,l=16"


def slug(method: str) -> str:
    """A directory name for a method spec: ``cbs:w=2,k=2,l=16`` -> ``cbs-w2-k2-l16``."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", method.replace("=", "")).strip("-")


def w2s_eval_command() -> list[str]:
    script = Path(sys.executable).with_name("w2s-eval")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from w2s_eval.cli import main; main()"]


def split_methods(text: str) -> list[str]:
    """``base,bon:n=4,cbs:w=2,k=2,l=16`` -> the three specs (a comma before ``name=`` belongs to the spec)."""
    out: list[str] = []
    for part in text.split(","):
        if out and re.fullmatch(r"[a-z_]+=[^,]*", part.strip()):
            out[-1] += "," + part.strip()
        elif part.strip():
            out.append(part.strip())
    return out


def write_inputs(world: Path, out: Path, limit: int, instructions: Path | None) -> tuple[Path, Path]:
    """``OUT/instructions.json`` (the first ``limit`` held-out rows) and ``OUT/reference_gpt4.json`` (their GPT-4
    baseline answers); every instruction must be one of AlpacaEval's."""
    rows = load_instructions(instructions or world / "data" / "heldout.jsonl", limit=limit)
    baseline = {r["instruction"]: r for r in load_outputs(fetch_baseline(), what="the offline baseline")}
    missing = [r["instruction"][:60] for r in rows if r["instruction"] not in baseline]
    if missing:
        raise SystemExit(
            f"{len(missing)} instructions are not AlpacaEval's (e.g. {missing[0]!r}); "
            "the GPT-4 reference cannot be matched"
        )
    out.mkdir(parents=True, exist_ok=True)
    ins, ref = out / "instructions.json", out / "reference_gpt4.json"
    ins.write_text(
        json.dumps(
            [
                {"instruction": r["instruction"], "dataset": baseline[r["instruction"]].get("dataset", r["dataset"])}
                for r in rows
            ],
            indent=1,
        ),
        encoding="utf-8",
    )
    ref.write_text(json.dumps([baseline[r["instruction"]] for r in rows], indent=1), encoding="utf-8")
    return ins, ref


def commands(world: Path, out: Path, ins: Path, ref: Path, methods: list[str], args) -> list[list[str]]:
    """The ``w2s-eval`` argument lists of the run, in order (generation first, then the judgements)."""
    gen, judge = [], []
    for m in methods:
        d = out / slug(m)
        gen.append(
            [
                "alpaca-eval",
                "generate",
                "--strong",
                str(world / "strong"),
                "--tuned",
                str(world / "tuned"),
                "--untuned",
                str(world / "untuned"),
                "--method",
                m,
                "--instructions",
                str(ins),
                "--out",
                str(d),
                "--max-new-tokens",
                str(args.max_new_tokens),
                "--temperature",
                str(args.temperature),
                "--seed",
                str(args.seed),
                "--batch-size",
                str(args.batch_size),
                "--dtype",
                "float32",
                "--name",
                f"ifeval-mini__{slug(m)}",
                "--no-progress",
            ]
        )
        common = [
            "--model-outputs",
            str(d / "model_outputs.json"),
            "--reward-model",
            str(world / "reward_model"),
            "--name",
            slug(m),
            "--lc",
            "off",
            "--no-progress",
        ]
        judge.append(
            [
                "alpaca-eval",
                "judge",
                *common,
                "--reference-outputs",
                str(ref),
                "--out",
                str(d / "judge_vs_gpt4"),
                "--leaderboard",
                str(out / "leaderboard.csv"),
            ]
        )
        if m != "base" and "base" in methods:
            judge.append(
                [
                    "alpaca-eval",
                    "judge",
                    *common,
                    "--reference-outputs",
                    str(out / "base" / "model_outputs.json"),
                    "--out",
                    str(d / "judge_vs_base"),
                    "--leaderboard",
                    str(out / "leaderboard_vs_base.csv"),
                ]
            )
    return gen + judge


def official_judge(out: Path, ref: Path, methods: list[str]) -> str:
    lines = [
        "# AlpacaEval's own GPT-4 judge (needs OPENAI_API_KEY and internet; the default annotator of",
        "# AlpacaEval 2.0, whose length-controlled win rate needs the hub as well)",
    ]
    for m in methods:
        lines.append(
            f"alpaca_eval --model_outputs {shlex.quote(str(out / slug(m) / 'model_outputs.json'))} "
            f"--reference_outputs {shlex.quote(str(ref))} "
            "--annotators_config weighted_alpaca_eval_gpt4_turbo "
            f"--output_path {shlex.quote(str(out / slug(m) / 'official'))}"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-dir", type=Path, help="the built world (default: $W2S_EVAL_HOME/worlds/ifeval-mini)")
    ap.add_argument("--instructions", type=Path, help="instead of the world's held-out AlpacaEval rows")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=48)
    ap.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated method specs ({DEFAULT_METHODS})")
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dry-run", action="store_true", help="write the inputs and the commands, run nothing")
    args = ap.parse_args(argv)
    world = (args.world_dir or cache_home() / "worlds" / "ifeval-mini").resolve()
    for part in ("strong", "tuned", "untuned", "reward_model"):
        if not (world / part).is_dir():
            raise SystemExit(f"{world / part} is missing: build the world first (w2s-eval world build ifeval-mini)")
    out, methods = args.out.resolve(), split_methods(args.methods)
    ins, ref = write_inputs(world, out, args.limit, args.instructions)
    cmds = commands(world, out, ins, ref, methods, args)
    cli = w2s_eval_command()
    (out / "commands.sh").write_text("".join(shlex.join(["w2s-eval", *c]) + "\n" for c in cmds), encoding="utf-8")
    (out / "official_judge.sh").write_text(official_judge(out, ref, methods), encoding="utf-8")
    for c in cmds:
        print("+ w2s-eval", shlex.join(c), flush=True)
        if not args.dry_run:
            subprocess.run([*cli, *c], check=True)
    if not args.dry_run:
        for name in ("leaderboard.csv", "leaderboard_vs_base.csv"):
            if (out / name).exists():
                print(f"\n{name}:\n" + (out / name).read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
