"""The oracle guide: a world's own reward function (its gold) ranking BoN/CBS candidates, the ceiling of search;
and the checked call of a world's reward function that the comparison records."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..engine import Engine
from ..guide import Scorer, Scores, check_lengths
from ..world_registry import World

__all__ = ["RewardFnScorer", "oracle_engine", "rewards"]


def rewards(fn, name: str, prompts: list, responses: list) -> list:
    """``fn(prompts, responses)`` as finite floats, one per response; else a ValueError naming the world's ``name``."""
    values = list(fn(prompts, responses))
    if len(values) != len(responses):
        raise ValueError(f"the world's {name} function returned {len(values)} values for {len(responses)} responses")
    out = []
    for v in values:
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"the world's {name} function returned {v} (not finite)")
        out.append(v)
    return out


class RewardFnScorer(Scorer):
    """A world's reward function ``fn(prompts, responses) -> list[float]`` as a guide (the oracle's guide)."""

    def __init__(self, fn: Callable, name: str = "gold"):
        self.fn, self.name = fn, name

    def score(self, prompts, responses, finished) -> Scores:
        check_lengths(prompts, responses, finished)
        values = rewards(self.fn, self.name, list(prompts), list(responses))
        return Scores(torch.tensor(values, dtype=torch.float64), [0] * len(values))


def oracle_engine(engine, world: World):
    """``engine`` with the world's gold reward as its only BoN/CBS guide (models and EFT pair unchanged)."""
    return Engine(
        engine.policy,
        tuned=engine.tuned,
        untuned=engine.untuned,
        guides=((1.0, "custom", RewardFnScorer(world.gold)),),
        spec=engine.spec,
    )
