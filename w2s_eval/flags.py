"""Command-line flags made from settings dataclasses: one flag per field, help and default from the field.

:func:`add_spec_arguments` adds the flags of :class:`w2s_eval.spec.EngineSpec` (or of any dataclass whose fields
carry ``metadata["help"]``) to an argparse parser; :func:`spec_from_namespace` reads them back, and a bad value
raises :class:`w2s_eval.spec.SpecError` with the field spelled as its flag (:func:`command_line`: the
message is made with the command line's spelling, not rewritten).
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any, Iterable, Mapping, Optional

from .checks import field_kind, keyword_spelling, spelling
from .spec import EngineSpec

__all__ = ["add_spec_arguments", "spec_from_namespace", "flag_spelling", "command_line"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def flag_spelling(names: Iterable[str]):
    """How a command line spells settings in messages: a setting among ``names`` (its flags' dests) as ``--flag`` /
    ``--flag value``; any other as Python does (:func:`w2s_eval.config.keyword_spelling`)."""
    names = frozenset(names)

    def spell(name: str, value: Optional[str] = None) -> str:
        if name not in names:
            return keyword_spelling(name, value)
        return _flag(name) + (f" {value}" if value else "")

    return spell


def command_line(names: Iterable[str]):
    """Within the block, messages spell the settings ``names`` as their flags (:func:`flag_spelling`)."""
    return spelling(flag_spelling(names))


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def add_spec_arguments(
    parser,
    exclude: Iterable[str] = (),
    defaults: Optional[Mapping[str, Any]] = None,
    require_strong: bool = True,
    cls=EngineSpec,
    note: str = "",
) -> None:
    """Add a flag per field of :class:`EngineSpec` (or of ``cls``: a front end's subclass, or any settings
    dataclass whose fields carry help) to an argparse parser: ``--strong``, ``--tuned`` ..., help from the
    field's metadata.

    ``exclude``: fields the command sets itself; ``defaults``: a command's own defaults for some fields;
    ``note``: appended to every flag's help (e.g. where a default of None comes from).
    ``--strong`` and ``--strong-endpoint`` are mutually exclusive (one is required when ``require_strong``).
    Read the values back with :func:`spec_from_namespace`.
    """
    exclude, defaults = set(exclude), dict(defaults or {})
    group = parser
    if {"strong", "strong_endpoint"} <= {f.name for f in fields(cls)} - exclude:
        group = parser.add_mutually_exclusive_group(required=require_strong)
    for f in fields(cls):
        if f.name in exclude:
            continue
        kind = field_kind(f)
        default = defaults.get(f.name, f.default if f.default is not MISSING else None)
        kw: dict[str, Any] = {"dest": f.name, "help": f.metadata["help"] + note}
        if "cli" in f.metadata:  # the field says how its flag reads
            kw.update(default=default, **f.metadata["cli"])
        elif kind is bool:
            kw.update(action="store_true", default=bool(default))
        elif f.metadata.get("cli_list"):
            kw.update(action="append", default=None, help=kw["help"] + " (repeatable)")
        else:
            kw.update(type={float: _float, int: int}.get(kind, str), default=default)
        (group if f.name in ("strong", "strong_endpoint") else parser).add_argument(_flag(f.name), **kw)


def spec_from_namespace(ns: argparse.Namespace, cls=EngineSpec, **extra):
    """The spec (or a front end's subclass ``cls``) from parsed flags; ``extra``: values the command
    sets itself. A bad value raises :class:`SpecError` naming the flag (``--tuned-template``)."""
    names = [f.name for f in fields(cls)]
    kw = {n: getattr(ns, n) for n in names if hasattr(ns, n)}
    kw = {k: v for k, v in kw.items() if v is not None}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
    with command_line(names):
        return cls(**{**kw, **extra})
