"""The gold reward (TF-IDF + logistic regression) and the independent judge (VADER).

r_gold(x, y) = log p(positive | x + y) - log p(negative | x + y), which for a binary
logistic regression is its decision function. The gold reward is never a guide; the
judge is reported beside it so over-optimisation of gold shows.

The gold reward is stored as data (:data:`GOLD_FILE`: TF-IDF settings, vocabulary, idf and the
logistic-regression coefficients as JSON) and rebuilt into the same sklearn objects, so it
scores exactly as trained and a gold file cannot run code; an old world's pickle is read only
after its sha256 is checked against the world manifest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Sequence

from ..extras import require
from ..provenance import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "GoldReward",
    "train_gold",
    "save_gold",
    "load_gold",
    "gold_to_dict",
    "gold_from_dict",
    "vader_judge",
    "GOLD_FILE",
    "LEGACY_FILE",
]


class GoldReward:
    """Callable ``gold(prompts, responses) -> list[float]`` on prompt + response text."""

    def __init__(self, vectorizer, classifier):
        self.vectorizer, self.classifier = vectorizer, classifier
        if list(classifier.classes_) != [0, 1]:
            raise ValueError(
                f"gold classifier classes must be [0, 1] (negative, positive), got {list(classifier.classes_)}"
            )

    def texts(self, texts: Sequence[str]) -> list[float]:
        """log p(pos) - log p(neg) of each whole text."""
        if not texts:
            return []
        return [float(v) for v in self.classifier.decision_function(self.vectorizer.transform(list(texts)))]

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"gold reward got {len(prompts)} prompts and {len(responses)} responses; pass one each")
        return self.texts([p + r for p, r in zip(prompts, responses)])

    def accuracy(self, texts: Sequence[str], labels: Sequence[int]) -> float:
        scores = self.texts(texts)
        return sum((s > 0) == bool(y) for s, y in zip(scores, labels)) / max(1, len(labels))


def train_gold(
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    C: float = 4.0,
    max_features: int = 200_000,
    ngram_max: int = 2,
    seed: int = 0,
) -> tuple[GoldReward, dict]:
    """Fit TF-IDF (1..ngram_max grams, sublinear tf) + logistic regression on ``texts``."""
    require("sklearn", "world")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if len(set(labels)) != 2:
        raise ValueError("the gold classifier needs both positive and negative training reviews")
    t0 = time.perf_counter()
    vec = TfidfVectorizer(
        ngram_range=(1, ngram_max), sublinear_tf=True, max_features=max_features, min_df=2 if len(texts) > 1000 else 1
    )
    X = vec.fit_transform(list(texts))
    clf = LogisticRegression(C=C, max_iter=1000, random_state=seed)
    clf.fit(X, list(labels))
    info = {
        "model": "tfidf+logistic_regression",
        "C": C,
        "max_features": max_features,
        "ngram_range": [1, ngram_max],
        "features": int(X.shape[1]),
        "train_reviews": len(texts),
        "fit_s": round(time.perf_counter() - t0, 1),
    }
    return GoldReward(vec, clf), info


GOLD_FILE = "gold.json"  # the file save_gold writes into a directory: parameters only, nothing that can run code
LEGACY_FILE = "gold.pkl"  # a world's gold file name (older versions pickled it: loaded only when its sha256 checks)
FORMAT = "w2s-eval-gold/1"
# TfidfVectorizer settings kept in the file; callables (tokenizer, preprocessor) are never stored or read
_VECTORIZER_KEYS = {
    "analyzer": str,
    "binary": bool,
    "decode_error": str,
    "encoding": str,
    "input": str,
    "lowercase": bool,
    "max_df": (int, float),
    "max_features": (int, type(None)),
    "min_df": (int, float),
    "ngram_range": list,
    "norm": (str, type(None)),
    "smooth_idf": bool,
    "strip_accents": (str, type(None)),
    "sublinear_tf": bool,
    "token_pattern": (str, type(None)),
    "use_idf": bool,
}


def gold_to_dict(gold: GoldReward) -> dict:
    """The gold reward as plain data: TF-IDF settings, vocabulary (by column), idf, LR coefficients."""
    import numpy as np

    vec, clf = gold.vectorizer, gold.classifier
    params = vec.get_params()
    if (
        params["tokenizer"] is not None
        or params["preprocessor"] is not None
        or callable(params["analyzer"])
        or params["stop_words"] is not None
        or params["vocabulary"] is not None
    ):
        raise ValueError(
            "the gold vectorizer must use the built-in tokenizer, no stop words and a learned "
            "vocabulary to be stored as data"
        )
    if np.dtype(params["dtype"]) != np.float64:
        raise ValueError(f"the gold vectorizer must produce float64, not {params['dtype']}")
    settings = {k: (list(params[k]) if k == "ngram_range" else params[k]) for k in _VECTORIZER_KEYS}
    vocabulary = [""] * len(vec.vocabulary_)
    for term, col in vec.vocabulary_.items():
        vocabulary[int(col)] = term
    return {
        "format": FORMAT,
        "vectorizer": settings,
        "vocabulary": vocabulary,
        "idf": [float(v) for v in vec.idf_],
        "coef": [float(v) for v in clf.coef_[0]],
        "intercept": float(clf.intercept_[0]),
        "classes": [int(c) for c in clf.classes_],
    }


def _checked(doc: dict, path: Path) -> dict:
    """``doc`` when it is a gold file of this format with consistent sizes and types; else ValueError."""

    def bad(why: str) -> ValueError:
        return ValueError(
            f"gold reward {path} is not a valid {FORMAT} file ({why}); rebuild the world: "
            "w2s-eval world build imdb-mini --force"
        )

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise bad(f"format is {doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}")
    missing = {"vectorizer", "vocabulary", "idf", "coef", "intercept", "classes"} - set(doc)
    if missing:
        raise bad(f"missing {sorted(missing)}")
    settings = doc["vectorizer"]
    if not isinstance(settings, dict) or set(settings) != set(_VECTORIZER_KEYS):
        raise bad("vectorizer settings are not the expected keys")
    for key, kind in _VECTORIZER_KEYS.items():
        if not isinstance(settings[key], kind):
            raise bad(f"vectorizer.{key} is {settings[key]!r}")
    n = len(doc["vocabulary"])
    if len(doc["idf"]) != n or len(doc["coef"]) != n or not all(isinstance(t, str) for t in doc["vocabulary"]):
        raise bad("vocabulary, idf and coef differ in length or type")
    if doc["classes"] != [0, 1]:
        raise bad(f"classes are {doc['classes']!r}, not [0, 1]")
    return doc


def gold_from_dict(doc: dict, path: Path = Path("<data>")) -> GoldReward:
    """Rebuild the sklearn vectorizer and classifier from :func:`gold_to_dict`'s data (same scores, bit for bit)."""
    import numpy as np

    require("sklearn", "world")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    doc = _checked(doc, path)
    settings = dict(doc["vectorizer"], ngram_range=tuple(doc["vectorizer"]["ngram_range"]))
    vec = TfidfVectorizer(**settings, dtype=np.float64)
    vec.vocabulary_ = {term: i for i, term in enumerate(doc["vocabulary"])}
    vec.idf_ = np.asarray(doc["idf"], dtype=np.float64)
    clf = LogisticRegression()
    clf.coef_ = np.asarray([doc["coef"]], dtype=np.float64)
    clf.intercept_ = np.asarray([doc["intercept"]], dtype=np.float64)
    clf.classes_ = np.asarray(doc["classes"], dtype=np.int64)
    return GoldReward(vec, clf)


def save_gold(gold: GoldReward, path: os.PathLike) -> Path:
    """Write the gold reward as JSON data to ``path`` (a directory: :data:`GOLD_FILE` in it); returns the file.

    The content, not the name, says what a gold file is: a world built by this version keeps the name
    ``gold.pkl`` but holds JSON data (a pickle is never written).
    """
    import json

    path = Path(path)
    if path.is_dir():
        path = path / GOLD_FILE
    atomic_write_text(path, json.dumps(gold_to_dict(gold), allow_nan=False, separators=(",", ":")))
    return path


def _manifest_sha(path: Path):
    """The sha256 a world's manifest (``WORLD/manifest.json`` for ``WORLD/gold/gold.pkl``) records for ``path``."""
    import json

    manifest = path.parent.parent / "manifest.json"
    try:
        return json.loads(manifest.read_text())["steps"]["gold"]["files"][path.name]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_gold(path: os.PathLike, sha256: str | None = None) -> GoldReward:
    """Load the gold reward from a file (or a directory holding :data:`GOLD_FILE` or ``gold.pkl``).

    ``sha256`` (from the manifest) is checked first when given. JSON data (what this version writes) is
    read without running anything. Anything else is an old world's pickle: read only when its sha256
    matches ``sha256`` or the one its world manifest records; any other pickle is refused (unpickling runs
    code), with the rebuild command.
    """
    import json

    path = Path(path)
    if path.is_dir():
        path = path / GOLD_FILE if (path / GOLD_FILE).exists() else path / LEGACY_FILE
    if not path.exists():
        raise FileNotFoundError(f"gold reward {path} is missing; run: w2s-eval world build imdb-mini")
    data = path.read_bytes()  # read once: the bytes checked are the bytes loaded
    is_json = data[:1] == b"{"
    expected = sha256 if sha256 is not None or is_json else _manifest_sha(path)
    if expected is None and not is_json:
        raise ValueError(
            f"refusing to unpickle {path}: no world manifest records its sha256 (a pickle can run "
            "code). Gold rewards are JSON data files now; rebuild the world: "
            "w2s-eval world build imdb-mini --force"
        )
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(
            f"gold reward {path} does not match the sha256 in the world's manifest (corrupted?); "
            "delete the world directory and run: w2s-eval world build imdb-mini"
        )
    if is_json:
        try:
            doc = json.loads(data.decode("utf-8"))
        except ValueError as e:
            raise ValueError(
                f"gold reward {path} is not JSON ({e}); rebuild the world: w2s-eval world build imdb-mini --force"
            ) from None
        return gold_from_dict(doc, path)
    import pickle

    obj = pickle.loads(data)  # noqa: S301 - an old world's own file, its sha256 verified just above
    return GoldReward(obj["vectorizer"], obj["classifier"])


_VADER = None


def vader_judge(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """VADER compound score in [-1, 1] of prompt + response (the independent judge)."""
    global _VADER
    if len(prompts) != len(responses):
        raise ValueError(f"judge got {len(prompts)} prompts and {len(responses)} responses; pass one each")
    if _VADER is None:
        try:
            require("vaderSentiment", "world")
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise ImportError("the judge needs vaderSentiment: pip install vaderSentiment") from None
        _VADER = SentimentIntensityAnalyzer()
    return [float(_VADER.polarity_scores(p + r)["compound"]) for p, r in zip(prompts, responses)]
