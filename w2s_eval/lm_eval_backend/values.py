"""lm-eval's ``--model_args`` values read as typed settings: lm-eval hands over strings or already-typed values
(``w=4`` arrives as 4, ``l=inf`` as a float), and a bad one raises :class:`~w2s_eval.spec.SpecError` naming the key
and the fix. :func:`typed_settings` reads a settings dataclass's keys, :func:`spec_from_mapping` an
:class:`~w2s_eval.spec.EngineSpec`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Iterable, Mapping, Optional, Union

from ..checks import SpecError, field_kind
from ..spec import EngineSpec

__all__ = ["coerce", "typed_settings", "spec_from_mapping"]


def _as_int(key: str, v: Any):
    if isinstance(v, bool):
        raise SpecError(f"{key} must be an integer, got {v!r}")
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    if isinstance(v, int):
        return v
    raise SpecError(f"{key} must be an integer, got {v!r}; e.g. {key}=4")


def _as_float(key: str, v: Any) -> float:
    if isinstance(v, bool):
        raise SpecError(f"{key} must be a number, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise SpecError(f"{key} must be a number, got {v!r}; e.g. {key}=1.0") from None


def _as_bool(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0", "yes", "no"):
        return v.lower() in ("true", "1", "yes")
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise SpecError(f"{key} must be true or false, got {v!r}")


def _as_str(key: str, v: Any) -> str:
    if isinstance(v, (dict, list, tuple, bool)):
        raise SpecError(f"{key} must be a string, got {v!r}")
    return str(v)


def _as_paths(key: str, v: Any) -> tuple:
    """A list, or one string where '|' separates several (lm-eval's model_args split on ',')."""
    if isinstance(v, (list, tuple)):
        return tuple(_as_str(key, x) for x in v)
    return tuple(p for p in _as_str(key, v).split("|") if p)


_COERCE = {int: _as_int, float: _as_float, bool: _as_bool, str: _as_str}


def coerce(key: str, kind: type, v: Any):
    """``v`` read as ``kind`` (int, float, bool or str), naming ``key`` when it cannot be; None stays None."""
    return None if v is None else _COERCE[kind](key, v)


def typed_settings(
    cls,
    mapping: Union[Mapping[str, Any], Iterable[tuple[str, Any]]],
    where: str = "model_args",
    special: Optional[Mapping[str, Any]] = None,
    also_valid: Iterable[str] = (),
) -> dict:
    """Keyword arguments of dataclass ``cls`` from ``key=value`` settings (strings or typed values).

    A duplicated or unknown key is refused, naming it; a None value means the field's default;
    ``tuned`` may be ``a|b`` or a list; ``device_map=True`` means ``auto``; ``special``: key ->
    ``fn(key, value)`` for the keys a front end reads its own way.
    """
    items = list(mapping.items()) if isinstance(mapping, Mapping) else list(mapping)
    by_name = {f.name: f for f in fields(cls)}
    seen: dict[str, Any] = {}
    for key, value in items:
        if key in seen:
            raise SpecError(f"{where}: {key} is given twice; give each key once")
        seen[key] = value
    unknown = sorted(set(seen) - set(by_name))
    if unknown:
        valid = sorted(set(by_name) | set(also_valid))
        raise SpecError(f"unknown {where} key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    special = {"tuned": _as_paths, **(special or {})}
    kw = {}
    for key, value in seen.items():
        if value is None:
            continue
        if key in special:
            value = special[key](key, value)
        elif key == "device_map" and isinstance(value, bool):
            value = "auto" if value else None
        else:
            value = coerce(key, field_kind(by_name[key]), value)
        if value is not None:
            kw[key] = value
    return kw


def spec_from_mapping(mapping: Union[Mapping[str, Any], Iterable[tuple[str, Any]]], where: str = "model_args"):
    """An :class:`EngineSpec` from ``key=value`` settings as lm-eval's ``--model_args`` delivers them
    (strings or already-typed values; ``tuned`` as ``a|b`` or a list): a mapping or (key, value) pairs.
    A duplicated or unknown key is refused, naming it (see :func:`typed_settings`)."""
    return EngineSpec(**typed_settings(EngineSpec, mapping, where))
