"""Optional dependencies: each lives in an extra of the package, and a missing one names the extra to install."""

from __future__ import annotations

import importlib.util

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, extra: str) -> None:
    """Raise :class:`MissingExtraError` unless ``module`` can be imported (``extra``: the extra that installs it)."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise MissingExtraError(
            f"{module} is not installed; it comes with the [{extra}] extra: pip install 'w2s-eval[{extra}]'"
        )
