"""What the lm-eval tasks ``w2s_imdb_sentiment`` and ``w2s_instruct`` share; each task's own dataset is in its
folder's ``utils.py`` (lm-eval's convention), which the YAML names (``!function utils.x``).

:func:`scored_dataset` loads the run's scorer with the prompts, *before* any generation (a bad scorer fails the run
at task load), and stores its SPEC (:func:`.scorer_spec.load_scorer`) in every document (field ``scorer``);
:class:`RewardFilter` scores all responses of a rank in one batch; :func:`process_results` hands the score to
lm-eval, which averages it.
"""

from __future__ import annotations

import os
from typing import Optional

from lm_eval.api.filter import Filter

from .scorer_spec import load_scorer

__all__ = ["positive_int", "scored_dataset", "RewardFilter", "process_results"]


def positive_int(metadata: dict, key: str) -> Optional[int]:
    """``--metadata key=N``: a positive integer, or None when not given."""
    v = metadata.get(key)
    if v is not None and (isinstance(v, bool) or not str(v).isdigit() or int(v) < 1):
        raise ValueError(f"--metadata {key} must be a positive integer, got {v!r}")
    return None if v is None else int(v)


def scored_dataset(
    rows: list[dict], n: Optional[int], metadata: dict, meta_key: str, env_key: str, default: Optional[str] = None
):
    """The first ``n`` rows as lm-eval's dataset, each with the run's scorer SPEC, the first of ``--metadata
    meta_key=SPEC``, ``$env_key`` and ``default`` (loaded now, so that it fails early)."""
    import datasets

    spec = metadata.get(meta_key) or os.environ.get(env_key) or default
    if not spec:
        raise ValueError(
            f"no scoring model for this task: pass --metadata {meta_key}=rm:DIR or set {env_key}=rm:DIR "
            "(a one-output reward model, e.g. trained with TRL's RewardTrainer)"
        )
    load_scorer(str(spec))
    rows = [{**r, "scorer": str(spec)} for r in (rows[:n] if n else rows)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


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
                raise ValueError(
                    f"document lacks 'scorer' or {self.prompt_field!r}; load it with the task's custom_dataset"
                )
        out: list = [[] for _ in docs]
        for spec in dict.fromkeys(doc["scorer"] for doc in docs):
            pairs = [
                (i, docs[i][self.prompt_field], str(r))
                for i in range(len(docs))
                if docs[i]["scorer"] == spec
                for r in resps[i]
            ]
            scores = load_scorer(spec)([p for _, p, _ in pairs], [r for _, _, r in pairs]) if pairs else []
            for (i, _, _), s in zip(pairs, scores):
                out[i].append(float(s))
        return out


def process_results(doc: dict, results: list) -> dict:
    """The mean score of a document's responses (one response unless the task repeats)."""
    scores = results[0] if results and isinstance(results[0], list) else results
    return {"reward": sum(scores) / len(scores) if scores else float("nan")}
