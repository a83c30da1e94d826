"""Hooks of the w2s_instruct task; the code lives in w2s_eval.lm_eval.tasks."""

from pathlib import Path

from w2s_eval.lm_eval.tasks import RewardFilter, load_instruct_dataset, process_results  # noqa: F401


def load_dataset(**metadata):
    return load_instruct_dataset(Path(__file__).with_name("instructions.jsonl"), **metadata)
