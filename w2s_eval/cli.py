"""The ``w2s-eval`` command. Each feature module adds its own subcommands.

A feature module exposes ``add_commands(subparsers)``; it registers parsers whose
``func`` attribute takes the parsed ``argparse.Namespace`` and returns an exit code.
Modules are imported only to build the parser, and heavy imports stay inside the
functions they run.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

# modules that contribute subcommands, with the commands each adds; one that is not part of this build (its package
# is missing) is left out of the parser, logged at DEBUG level
COMMANDS = {
    "w2s_eval.alpaca.cli": ("alpaca-eval",),
    "w2s_eval.harness.cli": ("compare", "report", "demo"),
    "w2s_eval.world.cli": ("world",),
    "w2s_eval.serve.cli": ("serve",),
}
COMMAND_MODULES = tuple(COMMANDS)


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of every command, or, given ``command``, of the module that adds it (so a run imports only
    that module's command-line code; ``--help`` and unknown commands see all)."""
    parser = argparse.ArgumentParser(prog="w2s-eval", description="Weak-to-strong search: evaluation and comparison")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [m for m, names in COMMANDS.items() if command in names] or COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                logging.getLogger(__name__).debug("%s is not part of this build; its commands are left out", name)
                continue
            raise
        module.add_commands(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))  # -v is the only global option
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: what was finished is kept; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
