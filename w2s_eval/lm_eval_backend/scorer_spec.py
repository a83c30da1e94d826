"""Scorer SPECs of the lm-eval tasks: what ``--metadata`` and the environment give, turned into
``scorer(prompts, responses) -> list[float]``.

``vader`` (VADER compound of prompt+response, in [-1, 1]); ``classifier:DIR[@LABEL]``
(:class:`w2s_eval.scorers.ClassifierScorer`, LABEL defaults to ``positive``/1 -- the paper's gold reward with a
distilbert-imdb classifier); ``rm:DIR`` (:class:`w2s_eval.scorers.RewardModelScorer`); ``gold:FILE`` or
``world:imdb-mini`` (the TF-IDF gold reward of the offline world, data only: a pickle is read only when a world
manifest records its sha256); a bare ``DIR`` is a reward model when it has one output, else a classifier.
``$W2S_SCORER_DEVICE`` places the model scorers (default ``auto``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from ..engine import load_classifier
from ..scorers import ClassifierScorer, RewardModelScorer
from ..world.build import read_manifest, world_dir
from ..world.gold import load_gold, vader_judge

__all__ = ["load_scorer"]

_LOADED: dict[str, Callable[[Sequence[str], Sequence[str]], list[float]]] = {}  # SPEC -> scorer, once per process


def _model_scorer(kind: str, path: str, label) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    device = os.environ.get("W2S_SCORER_DEVICE", "auto")
    model, tok = load_classifier(path, dtype="float32" if device == "cpu" else "auto", device=device)
    if kind == "auto":
        kind = "rm" if int(getattr(model.config, "num_labels", 0)) == 1 else "classifier"
    if kind == "rm":
        scorer = RewardModelScorer(model, tok, name=path)
    else:
        if label is None:
            names = {k.lower() for k in (model.config.label2id or {})}
            label = "positive" if "positive" in names else 1
        scorer = ClassifierScorer(model, tok, label=label, name=path)
    return lambda prompts, responses: [float(v) for v in scorer(list(prompts), list(responses), [True] * len(prompts))]


def _world_gold(name: str):
    path = world_dir(name)
    manifest = read_manifest(path) if path.exists() else None
    if not manifest or "gold" not in manifest.get("paths", {}):
        raise FileNotFoundError(f"world {name} has no gold reward in {path}; build it: w2s-eval world build {name}")
    gold = path / manifest["paths"]["gold"]
    sha = manifest.get("steps", {}).get("gold", {}).get("files", {}).get(gold.name)
    return load_gold(gold, sha256=sha)  # checked against the manifest; a pickle without a recorded sha256 is refused


def load_scorer(spec: str) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    """``scorer(prompts, responses) -> scores`` for a scorer SPEC (see the module docstring); loaded once per
    process."""
    if spec in _LOADED:
        return _LOADED[spec]
    kind, sep, rest = spec.partition(":")
    if not sep:
        kind, rest = ("vader", "") if spec == "vader" else ("auto", spec)
    if kind == "vader":
        fn = vader_judge
    elif kind in ("gold", "world"):
        if kind == "gold" and not Path(rest).is_file():
            raise FileNotFoundError(f"gold reward file {rest!r} does not exist (spec {spec!r})")
        fn = _world_gold(rest) if kind == "world" else load_gold(rest)
    elif kind in ("classifier", "rm", "auto"):
        path, _, label = rest.partition("@")
        if not Path(path).is_dir():
            raise FileNotFoundError(
                f"scoring model directory {path!r} does not exist (spec {spec!r}); give "
                "classifier:DIR, rm:DIR or an existing model directory"
            )
        fn = _model_scorer(kind, path, (int(label) if label.isdigit() else label) if label else None)
    else:
        raise ValueError(
            f"unknown scorer kind {kind!r} in {spec!r}; use vader, classifier:DIR[@LABEL], rm:DIR, "
            "gold:FILE, world:imdb-mini or a model directory"
        )
    _LOADED[spec] = fn
    return fn
