"""Hooks of the w2s_imdb_sentiment task; the code lives in w2s_eval.lm_eval.tasks."""

from pathlib import Path

from w2s_eval.lm_eval.tasks import RewardFilter, load_imdb_dataset, process_results  # noqa: F401


def load_dataset(**metadata):
    return load_imdb_dataset(Path(__file__).with_name("imdb_prompts.jsonl"), **metadata)
