"""What every setting shares: the error a bad one raises (:class:`SpecError`, naming the field and the fix), how
the running front end spells a setting in that message (:func:`spelled`, :func:`spelling`), and the checks of
numbers. No I/O, and no imports of the package: the bottom of the layers.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator, Optional

__all__ = [
    "SpecError",
    "MissingModelError",
    "spelled",
    "spelling",
    "keyword_spelling",
    "field_kind",
    "check_number",
    "check_positive_int",
]


class SpecError(ValueError):
    """A bad setting; the message names the field and the fix, spelled as the front end spells settings
    (:func:`spelled`)."""


class MissingModelError(SpecError, FileNotFoundError):
    """A setting names a local model path that does not exist (a SpecError and a FileNotFoundError)."""


def keyword_spelling(name: str, value: Optional[str] = None) -> str:
    """Python's and lm-eval's spelling of a setting: ``name``, ``name=value``."""
    return name if value is None else f"{name}={value}"


_SPELLING: ContextVar[Callable[[str, Optional[str]], str]] = ContextVar("w2s_eval_spelling", default=keyword_spelling)


def spelled(name: str, value: Optional[str] = None) -> str:
    """Setting ``name`` (given ``value``; ``""``: a value to give) as the running front end spells it: ``name`` /
    ``name=value`` in Python and lm-eval's ``--model_args``; ``--name`` / ``--name value`` on a command line."""
    return _SPELLING.get()(name, value)


@contextmanager
def spelling(spell: Callable[[str, Optional[str]], str]) -> Iterator[None]:
    """Within the block, messages spell settings with ``spell(name, value)`` (a front end's own way)."""
    token = _SPELLING.set(spell)
    try:
        yield
    finally:
        _SPELLING.reset(token)


def field_kind(f) -> type:
    """int, float, bool or str from a field's annotation (``Optional[X]`` reads as X)."""
    t = str(f.type)
    m = re.fullmatch(r"Optional\[(\w+)\]", t)
    return {"bool": bool, "float": float, "int": int}.get(m.group(1) if m else t, str)


def check_number(name: str, value) -> None:
    """A finite int or float (never bool, NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{spelled(name)} must be a number, got {value!r}; e.g. {spelled(name, '1.0')}")
    if not math.isfinite(value):
        raise SpecError(f"{spelled(name)} must be a finite number, got {value!r}; e.g. {spelled(name, '1.0')}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_positive_int(name: str, value, allow_none: bool = False) -> None:
    """An int >= 1 (never bool; None too when ``allow_none``: an unbounded length), else a ValueError naming
    ``name``."""
    if value is None and allow_none:
        return
    if not _is_int(value) or value <= 0:
        extra = " or inf" if allow_none else ""
        raise ValueError(f"{spelled(name)} must be a positive integer{extra}, got {value!r}; set {spelled(name)}>=1")


def _help(text: str, **kw) -> dict:
    """A settings field's metadata: its help text (and how its flag reads, ``cli``/``cli_list``)."""
    return {"help": text, **kw}
