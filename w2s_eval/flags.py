"""Command-line flags made from settings dataclasses: one flag per field, help and default from the field.

:func:`add_spec_arguments` adds the flags of :class:`w2s_eval.spec.EngineSpec` (or of any dataclass whose fields
carry ``metadata["help"]``) to an argparse parser; :func:`spec_from_namespace` reads them back, and a bad value
raises :class:`w2s_eval.spec.SpecError` with the field spelled as its flag (:func:`as_flags`).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, fields
from typing import Any, Iterable, Mapping, Optional

from .spec import EngineSpec, SpecError, _field_kind

__all__ = ["add_spec_arguments", "spec_from_namespace", "as_flags"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def as_flags(message: str, names: Iterable[str] = ()) -> str:
    """``message`` with the fields spelled as command-line flags: ``tuned_template=`` -> ``--tuned-template ``,
    and a bare field name holding an underscore (``strong_model``) -> ``--strong-model``."""
    names = sorted({f.name for f in fields(EngineSpec)} | set(names), key=len, reverse=True)
    alt = "|".join(re.escape(n) for n in names)
    message = re.sub(rf"(?<![\w-])({alt})=(?=[^\s,;)])", lambda m: _flag(m.group(1)) + " ", message)
    message = re.sub(rf"(?<![\w-])({alt})=", lambda m: _flag(m.group(1)), message)
    under = "|".join(re.escape(n) for n in names if "_" in n)
    return re.sub(rf"(?<![\w-])({under})(?![\w=])", lambda m: _flag(m.group(1)), message) if under else message


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def add_spec_arguments(parser, exclude: Iterable[str] = (), defaults: Optional[Mapping[str, Any]] = None,
                       require_strong: bool = True, cls=EngineSpec, note: str = "") -> None:
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
        kind = _field_kind(f)
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
    try:
        return cls(**{**kw, **extra})
    except SpecError as e:
        raise SpecError(as_flags(str(e), names)) from None
