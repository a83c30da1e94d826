"""The ``w2s-eval`` command, and its comparison commands ``compare``, ``report``, ``merge``, ``verify`` and ``demo``.

Each feature module adds its own subcommands: it exposes ``add_commands(subparsers)``, which registers parsers
whose ``func`` attribute takes the parsed ``argparse.Namespace`` and returns an exit code (this module adds the
comparison harness's). Modules are imported only to build the parser, and heavy imports stay inside the functions
they run.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Optional, Sequence

from .config import SamplingConfig
from .extras import MissingExtraError
from .flags import add_spec_arguments, command_line
from .harness.compare import run_compare
from .harness.merge import merge_shards, pending_shards
from .harness.plan import COMPARE_DEFAULTS, make_run_config
from .harness.records import parse_methods
from .harness.report import summary_of, to_markdown, told_apart, write_report
from .harness.verify import SIGMAS, verify
from .provenance import to_json
from .sharding import process_shard
from .spec import EngineSpec
from .world.build import BUILD_TIME, build_world
from .world_registry import load_world, world_home

# modules that contribute subcommands, with the commands each adds; one that is not part of this build (its package
# is missing) is left out of the parser, logged at DEBUG level
COMMANDS = {
    "w2s_eval.alpaca.cli": ("alpaca-eval",),
    "w2s_eval.cli": ("compare", "report", "merge", "verify", "demo"),
    "w2s_eval.world.cli": ("world",),
    "w2s_eval.serve.cli": ("serve",),
}

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- compare, report, demo

DEFAULT_METHODS = "base,bon:n=16,eft:beta=1.0,cbs:w=4,k=4,l=5"
DEMO_WORLD = "imdb-mini"
DEMO_METHODS = "base,bon:n=16,eft:beta=1,cbs:w=4,k=4,l=5"
DEMO_PROMPTS, DEMO_SEEDS = 64, "1"
DEMO_MARK = 2.0  # the demo's table marks gains over base more than this many standard errors from zero
# the committed results the demo checks its run against (in the source checkout, beside the package)
REFERENCE = Path(__file__).resolve().parent.parent / "results" / "imdb-mini"


# EngineSpec fields a world supplies (the flags of the others come from w2s_eval.flags.add_spec_arguments)
_WORLD_FIELDS = ("strong", "tuned", "untuned", "tuned_template", "untuned_template", "reward_model", "rm_weight")


def _add_run_options(p: argparse.ArgumentParser, prompts: int, seeds: str) -> None:

    p.add_argument(
        "--world-home",
        default=None,
        metavar="DIR",
        help="where worlds are built (default: $W2S_EVAL_HOME or ~/.cache/w2s-eval)",
    )
    p.add_argument(
        "--prompts",
        type=int,
        default=prompts,
        help=f"the first N evaluation prompts of the world (default: {prompts}, or all if fewer)",
    )
    p.add_argument("--seeds", default=seeds, help=f"a count N (seeds 0..N-1) or a list like 0,5,7 (default: {seeds})")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch (default: 8)")
    p.add_argument(
        "--strong",
        metavar="MODEL",
        default=None,
        help="the strong model in place of the world's own (default), read as everywhere: a registered "
        "name (smollm2-135m, imdb-mini's own; gemma3-270m; qwen2.5-0.5b: made offline from pinned "
        "wheels), a local directory or a hub id; the guides, gold, judge and prompts stay the "
        "world's. EFT needs the guides' vocabulary and is reported n/a otherwise",
    )
    p.add_argument(
        "--chat-template",
        action="store_true",
        help="the strong model reads each prompt as a user turn of its chat template (an instruct model); "
        "default: the plain prompt, for base and instruct models alike, as the paper does. The "
        "guides, gold and judge read the plain prompt either way",
    )
    add_spec_arguments(p, exclude=_WORLD_FIELDS, defaults=COMPARE_DEFAULTS)
    p.add_argument(
        "--guide-beta",
        dest="beta",
        type=float,
        default=argparse.SUPPRESS,
        help="the same as --beta (the scale of the implicit value)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _engine_settings(args) -> dict:
    """The EngineSpec fields given on the command line (those the world does not supply)."""
    from dataclasses import fields

    return {
        f.name: getattr(args, f.name)
        for f in fields(EngineSpec)
        if f.name not in _WORLD_FIELDS and getattr(args, f.name, None) is not None
    }


def _add_verify(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="check a compare run against committed results: identical, within noise, or which figure differs",
        description="Compare RUN_DIR's per-method gains over base with those of the committed results in DIR "
        "(records.jsonl[.xz], or report.csv where no records are committed): paired over the (prompt, "
        "seed) pairs both hold, else unpaired. Says 'identical records', 'reproduced within noise', or "
        "names each method and figure that differs by more than --sigmas combined standard errors "
        "(exit status 1). Notes name what the runs differ in: world, package versions, lock, machine.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "--against",
        default=str(REFERENCE),
        metavar="DIR",
        help="the committed results (default: results/imdb-mini of this checkout)",
    )
    p.add_argument(
        "--sigmas",
        type=float,
        default=SIGMAS,
        help=f"a figure differs beyond this many combined standard errors (default: {SIGMAS:g})",
    )
    p.add_argument("--json", action="store_true", help="print the verdict and every figure as JSON")
    p.set_defaults(func=cmd_verify)


def _add_merge(subparsers) -> None:
    p = subparsers.add_parser(
        "merge",
        help="assemble the shards of a compare run (compare --shard I/N) into RUN_DIR/records.jsonl",
        description="Append the records of every finished shard (records.shard-I-of-N.jsonl) to "
        "RUN_DIR/records.jsonl in the order one process writes them, and remove the shard files. A "
        "shard still running is left for a later merge.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_merge)


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="run several methods on the same prompts and seeds of a world; record and report",
        description="Run every method on the same prompts and seeds (models in float32 unless --dtype says "
        "otherwise: identical records with the same lock and CPU family, figures within noise elsewhere; "
        "see docs/reproducibility.md). One JSONL record per (prompt, method, seed) goes to "
        "OUT/records.jsonl as it is made; rerunning the same command resumes. Then writes the report (see "
        "`w2s-eval report`).",
    )
    p.add_argument(
        "--world", required=True, help="a registered world, e.g. imdb-mini (build it once: w2s-eval world build NAME)"
    )
    p.add_argument(
        "--methods", default=DEFAULT_METHODS, help=f"comma-separated method specs (default: {DEFAULT_METHODS})"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the run directory (created; reused to resume)")
    _add_run_options(p, prompts=64, seeds="3")
    p.add_argument(
        "--guide",
        choices=("implicit", "rm", "gold"),
        default="implicit",
        help="guide of BoN/CBS: the implicit value of tuned vs untuned, scaled by --beta (default), "
        "the world's reward model, or the world's gold reward itself (gold: the oracle, the ceiling "
        "of search; never a fair method)",
    )
    sampled = ("temperature", "top_k", "top_p", "max_new_tokens")  # the world's sampling, overridable
    add_spec_arguments(
        p,
        cls=SamplingConfig,
        exclude=[f.name for f in fields(SamplingConfig) if f.name not in sampled],
        defaults=dict.fromkeys(sampled),
        note=" (default: the world's)",
    )
    p.add_argument("--no-report", action="store_true", help="only record; do not write the report")
    p.add_argument(
        "--shard",
        metavar="I/N",
        default=None,
        help="compute only shard I of N (0 <= I < N: every N-th batch of prompts from batch I) into "
        "OUT/records.shard-I-of-N.jsonl, e.g. one task of a SLURM array each; 'auto' takes I and N "
        "from SLURM_ARRAY_TASK_ID/COUNT or RANK/WORLD_SIZE (accelerate launch). `w2s-eval merge OUT` "
        "(or report, or compare without --shard) assembles the shards; no report is written",
    )
    p.set_defaults(func=cmd_compare)
    _add_merge(subparsers)

    p = subparsers.add_parser(
        "report",
        help="tables (Markdown, CSV, LaTeX) and PNG plots of a compare run, from its records",
        description="Build report.md, report.csv, report.tex, gold_by_method.png, gold_vs_samples.png and "
        "gold_vs_flops.png from RUN_DIR/records.jsonl alone (and model_shapes.json for records "
        "made before FLOPs were counted).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write the report (default: RUN_DIR)")
    p.add_argument(
        "--all",
        action="store_true",
        help="use every record, not only the (prompt, seed) pairs recorded for every method",
    )
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument(
        "--against",
        default=None,
        metavar="DIR",
        help="also check the run against the committed results in DIR (see `w2s-eval verify`)",
    )
    p.set_defaults(func=cmd_report)

    _add_verify(subparsers)

    p = subparsers.add_parser(
        "demo",
        help=f"build {DEMO_WORLD} if missing, compare {DEMO_METHODS} on a few prompts, print the table",
        description=f"The README's first command: builds the offline world {DEMO_WORLD} once ({BUILD_TIME}), "
        f"then compares {DEMO_METHODS} and prints the table and the plot paths.",
    )
    p.add_argument("--world", default=DEMO_WORLD, help=f"the world (default: {DEMO_WORLD})")
    p.add_argument("--out", default="results/demo", metavar="DIR", help="the run directory (default: results/demo)")
    p.add_argument("--methods", default=DEMO_METHODS, help=f"method specs (default: {DEMO_METHODS})")
    p.add_argument(
        "--against",
        default=None,
        metavar="DIR",
        help=f"check the run against these committed results (default with --world {DEMO_WORLD}: "
        "results/imdb-mini of this checkout, when there is one)",
    )
    _add_run_options(p, prompts=DEMO_PROMPTS, seeds=DEMO_SEEDS)
    p.set_defaults(func=cmd_demo)


def _told_apart_lines(summary, sigmas: float) -> list:
    """The legend of the marks, and which gains are (not) told apart from base at this number of prompts."""
    rows = [r for r in summary.rows if r.note is None and r.delta_gold_vs_base is not None]
    pairs = max((r.n for r in rows), default=0)
    apart = [r.method for r in rows if told_apart(r, sigmas)]
    lines = [f"* = gold gain over base more than {sigmas:g} standard errors from zero ({pairs} (prompt, seed) pairs)"]
    if apart:
        lines.append(f"told apart from base: {', '.join(apart)}")
    lines += [
        f"NOT told apart from base on these {pairs} pairs: {r.method} ({r.delta_gold_vs_base:+.2f} +- "
        f"{r.delta_gold_se:.2f}); more prompts or seeds (--prompts, --seeds) would be needed"
        for r in rows
        if r.method not in apart and r.delta_gold_se is not None
    ]
    return lines


def _print_result(outcome, paths, mark: Optional[float] = None) -> None:
    if mark is None:
        print(paths["markdown"].read_text(encoding="utf-8"))
    else:
        print(to_markdown(paths["summary"], mark=mark))
        print("\n".join(_told_apart_lines(paths["summary"], mark)) + "\n")
    for kind in ("markdown", "csv", "latex", "plot_methods", "plot_samples", "plot_flops"):
        if kind in paths:
            print(f"{kind:>12}: {paths[kind]}")
    if outcome is not None:
        print(
            f"     records: {outcome.run_dir / 'records.jsonl'} ({outcome.n_new} new, "
            f"{outcome.n_before} recorded before)"
        )


def _partial_tables():
    """An ``on_method_done`` for :func:`run_compare`: after each method but the last, print the table of the methods
    finished so far, made from their records on disk as `w2s-eval report` makes it (the final report follows)."""
    finished = []

    def show(run_dir, spec: str, done: int, total: int) -> None:
        finished.append(spec)
        if done == total:
            return
        from tqdm.auto import tqdm

        table = to_markdown(summary_of(run_dir, methods=finished))
        tqdm.write(
            f"results so far ({done} of {total} methods done: {', '.join(finished)}; the full table follows "
            f"at the end):\n\n{table}",
            file=sys.stdout,
        )  # clears and redraws the progress bar
        sys.stdout.flush()

    return show


def _run(world, args, methods, sampling=None, report: bool = True, mark: Optional[float] = None) -> int:

    engine = _engine_settings(args)
    if engine.get("strong_model") is not None and engine.get("strong_endpoint") is None:
        raise ValueError(
            "--strong-model names a served model; give it with --strong-endpoint URL, or drop it to "
            "use the world's strong model"
        )
    cfg = make_run_config(
        world,
        methods,
        min(args.prompts, len(world.prompts)),
        args.seeds,
        guide=getattr(args, "guide", "implicit"),
        strong=args.strong,
        home=args.world_home,
        batch_size=args.batch_size,
        chat_template=args.chat_template,
        **engine,
        **(sampling or {}),
    )
    if args.prompts > len(world.prompts):
        print(f"note: world {world.name} has {len(world.prompts)} prompts; using all of them", file=sys.stderr)
    shard = process_shard(getattr(args, "shard", None))
    outcome = run_compare(
        world,
        cfg,
        args.out,
        progress=not args.no_progress,
        on_method_done=_partial_tables() if report and shard is None else None,
        shard=shard,
    )
    for spec, why in outcome.not_applicable.items():
        print(f"note: {spec} is not run ({why}); the report shows it as n/a", file=sys.stderr)
    if outcome.truncated:
        print(
            f"note: the last line of {outcome.run_dir / 'records.jsonl'} was truncated (an interrupted write); "
            "it was set aside and its record recomputed",
            file=sys.stderr,
        )
    if shard is not None:
        print(
            f"shard {shard}: {outcome.n_new} new records in {outcome.run_dir / shard.file('records.jsonl')} "
            f"({outcome.n_before} recorded before); once every shard has finished: w2s-eval merge {args.out}"
        )
        return 0
    if not report:
        print(
            f"{outcome.n_new} new records in {outcome.run_dir / 'records.jsonl'} ({outcome.n_before} recorded before)"
        )
        return 0
    _print_result(outcome, write_report(outcome.run_dir), mark=mark)
    return 0


def cmd_compare(args) -> int:

    world = load_world(args.world, args.world_home)
    sampling = {
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
    }
    return _run(world, args, args.methods, sampling, report=not args.no_report)


def cmd_report(args) -> int:

    if not Path(args.run_dir).is_dir():
        raise FileNotFoundError(f"{args.run_dir} is not a directory; give the --out directory of a compare run")
    _merge(args.run_dir)
    _print_result(None, write_report(args.run_dir, args.out, matched=not args.all, plots=not args.no_plots))
    if args.against is not None:
        return _check(args.run_dir, args.against)
    return 0


def _merge(run_dir) -> int:
    n = merge_shards(run_dir)
    left = pending_shards(run_dir)
    if n or left:
        print(
            f"merged {n} records from shards into {Path(run_dir) / 'records.jsonl'}"
            + (f"; still running: {', '.join(str(s) for s, _ in left)}" if left else ""),
            file=sys.stderr,
        )
    return n


def cmd_merge(args) -> int:
    if not (Path(args.run_dir) / "config.json").exists():
        raise FileNotFoundError(f"{args.run_dir} is not a compare run directory (no config.json)")
    _merge(args.run_dir)
    return 1 if pending_shards(args.run_dir) else 0


def _check(run_dir, against, sigmas: float = SIGMAS, as_json: bool = False) -> int:
    """Print the verdict of ``run_dir`` against ``against``; 1 when a figure differs."""
    verdict = verify(run_dir, against, sigmas=sigmas)
    print(to_json(verdict.to_dict()) if as_json else verdict.text())
    return 0 if verdict.ok else 1


def cmd_verify(args) -> int:
    return _check(args.run_dir, args.against, args.sigmas, args.json)


def load_or_build(name: str, home=None, progress: bool = True):
    """Load world ``name``; if it is not built, build it once (``w2s_eval.world.build.build_world``) and load it."""

    try:
        return load_world(name, home)
    except FileNotFoundError as e:
        logger.info("%s", e)
    home = world_home(home)
    print(f"building world {name} into {home} (once; {BUILD_TIME}) ...", file=sys.stderr)

    build_world(name, home, progress=progress)
    return load_world(name, home)


def cmd_demo(args) -> int:
    methods = args.methods
    if args.strong_endpoint and methods == DEMO_METHODS:
        # EFT needs the strong model's logits over the whole vocabulary, which a server does not give

        methods = [m for m in parse_methods(methods) if m.name != "eft"]
        print("note: eft needs the strong model's full logits and is left out with --strong-endpoint", file=sys.stderr)
    world = load_or_build(args.world, args.world_home, progress=not args.no_progress)
    code = _run(world, args, methods, mark=DEMO_MARK)
    against = args.against or (REFERENCE if args.world == DEMO_WORLD and REFERENCE.is_dir() else None)
    if code or against is None:
        if not code and args.world == DEMO_WORLD:
            print(
                "note: no committed results to check against (results/imdb-mini is in the source checkout); give "
                "--against DIR",
                file=sys.stderr,
            )
        return code
    print()
    _check(args.out, against)  # the demo's own result is its table: a verdict of 'differs' is not a failure
    return 0


# ----------------------------------------------------------------------------- the command


def _missing(error: MissingExtraError) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of every command, or, given ``command``, of the module that adds it (so a run imports only
    that module's command-line code; ``--help`` and unknown commands see all)."""
    parser = argparse.ArgumentParser(prog="w2s-eval", description="Weak-to-strong search: evaluation and comparison")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.missing_extras = {}  # command -> the MissingExtraError of its module
    for name in [m for m, names in COMMANDS.items() if command in names] or COMMANDS:
        try:
            module = importlib.import_module(name)
        except MissingExtraError as e:  # its extra is not installed: the command says which one to install
            for command in COMMANDS[name]:
                sub.add_parser(command, help=f"(needs an extra: {e})", add_help=False)
                parser.missing_extras[command] = e
            continue
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                logger.debug("%s is not part of this build; its commands are left out", name)
                continue
            raise
        module.add_commands(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # -v is the only global option
    parser = build_parser(command)
    if command in parser.missing_extras:
        return _missing(parser.missing_extras[command])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with command_line(vars(args)):  # messages name the settings as this command's flags
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: what was finished is kept; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
