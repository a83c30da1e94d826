"""A toy World for the harness tests: tiny random models (``toy_dirs``), gold and judge = character counts.

Importing this module registers the world ``toy``; its loader reads the model
directories from ``HOME/toy_dirs.json`` (written by the tests), so the CLI finds it
with ``W2S_EVAL_WORLD_MODULES=harness_toyworld`` and ``--world-home HOME``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from w2s_eval.config import SamplingConfig
from w2s_eval.world_registry import World, register_world

PROMPTS = (
    "The movie was",
    "I loved this film because",
    "The acting and the story",
    "Here is a movie review from imdb: ",
    "This was the worst",
    "A bright and funny",
)


def gold_e_count(prompts, responses):
    """Gold reward: the number of letters 'e' in the response."""
    return [float(r.count("e")) for r in responses]


class InterruptingGold:
    """Gold that raises KeyboardInterrupt (a Ctrl-C) once more than ``after`` records would be scored."""

    def __init__(self, after):
        self.after, self.seen = after, 0

    def __call__(self, prompts, responses):
        if self.seen + len(responses) > self.after:
            raise KeyboardInterrupt
        self.seen += len(responses)
        return gold_e_count(prompts, responses)


class GatedGold:
    """Gold that, after its first ``free`` calls, waits for the file ``gate`` (up to ``timeout`` seconds, then
    raises) before it scores: a test opens the gate once it has seen what must come before those calls."""

    def __init__(self, gate: Path, free: int, timeout: float = 60.0):
        self.gate, self.free, self.timeout, self.calls = Path(gate), free, timeout, 0

    def __call__(self, prompts, responses):
        import time

        self.calls += 1
        deadline = time.monotonic() + self.timeout
        while self.calls > self.free and not self.gate.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"gold call {self.calls}: {self.gate} was not created within {self.timeout} s")
            time.sleep(0.05)
        return gold_e_count(prompts, responses)


def judge_space_count(prompts, responses):
    """Independent judge: the number of spaces in the response."""
    return [float(r.count(" ")) for r in responses]


def make_world(
    dirs: dict,
    gold=gold_e_count,
    judge=judge_space_count,
    name: str = "toy",
    max_new_tokens: int = 8,
    manifest: dict | None = None,
) -> World:
    return World(
        name=name,
        strong=dirs["strong"],
        tuned=dirs["tuned"],
        untuned=dirs["untuned"],
        reward_model=dirs.get("rm"),
        prompts=tuple((f"p{i}", t) for i, t in enumerate(PROMPTS)),
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=max_new_tokens),
        gold=gold,
        judge=judge,
        manifest=manifest if manifest is not None else {"name": name, "kind": "toy"},
    )


def write_home(home: Path, dirs: dict) -> Path:
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / "toy_dirs.json").write_text(json.dumps(dirs))
    return home


def load_toy(home: Path) -> World:
    path = Path(home) / "toy_dirs.json"
    if not path.exists():
        raise FileNotFoundError(f"toy world is not built in {home}")
    return make_world(json.loads(path.read_text()))


def load_gated(home: Path) -> World:
    """World ``toy-gated``: ``toy`` whose gold waits for ``HOME/gate.open`` after ``HOME/gate.json``'s ``free``
    calls (see :class:`GatedGold`)."""
    world = load_toy(home)
    free = json.loads((Path(home) / "gate.json").read_text())["free"]
    return replace(world, name="toy-gated", gold=GatedGold(Path(home) / "gate.open", free))


register_world("toy", load_toy)
register_world("toy-gated", load_gated)
