"""Guide scorers: stateless callables ``scorer(prompts, responses, finished) -> scores [N]``.

Every call gets the prompts; nothing is set beforehand. ``.score(...)`` returns the
same values plus the guide token forwards each response cost.

- :class:`ImplicitValueScorer`: beta * (log p_tuned(y|x) - log p_untuned(y|x)), the
  paper's implicit value, on decoded text with each guide's own tokenizer.
- :class:`RewardModelScorer`: a one-output sequence-classification reward model
  (as TRL's RewardTrainer trains it).
- :class:`ClassifierScorer`: log p(label) - log p(other) of a text classifier (the
  paper's gold sentiment reward).
- :class:`WeightedSum`: sum_i w_i * scorer_i.

An engine's guide is data: a tuple of :class:`GuideTerm` ``(weight, kind, scorer)`` whose sum
``sum_i weight_i * scorer_i(...)`` ranks the candidates (:func:`guide_scorer`). ``kind`` says
what the scorer is, so an adapter needs no ``isinstance``: ``"implicit"`` (an
:class:`ImplicitValueScorer` with beta 1: ``.tuned`` and ``.untuned`` are :class:`GuideLM`,
its value is ``log p_tuned(y|x) - log p_untuned(y|x)`` and the weight is the spec's beta),
``"reward_model"`` (a :class:`RewardModelScorer`, weight rm_weight) or ``"custom"`` (any
callable ``scorer(prompts, responses, finished) -> [N]``).
:func:`score_candidates` calls any scorer and checks what it returns.

:func:`load_scorer` turns a scorer SPEC (what the lm-eval tasks' ``--metadata`` and environment give) into
``scorer(prompts, responses) -> list[float]``: ``vader`` (VADER compound of prompt+response, in [-1, 1]);
``classifier:DIR[@LABEL]`` (:class:`ClassifierScorer`, LABEL defaults to ``positive``/1 -- the paper's gold
reward with a distilbert-imdb classifier); ``rm:DIR`` (:class:`RewardModelScorer`); ``gold:FILE`` or
``world:imdb-mini`` (the TF-IDF gold reward of the offline world, data only: a pickle is read only when a world
manifest records its sha256); a bare ``DIR`` is a reward model when it has one output, else a classifier.
``$W2S_SCORER_DEVICE`` places the model scorers (default ``auto``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence, Union

import os
from pathlib import Path

import torch

from .guide import GuideLM
from .lm import right_pad
from .spec import check_number

__all__ = ["Scores", "Scorer", "ImplicitValueScorer", "RewardModelScorer", "ClassifierScorer", "WeightedSum",
           "GuideTerm", "GUIDE_KINDS", "guide_scorer", "score_candidates", "load_scorer"]

GUIDE_KINDS = ("implicit", "reward_model", "custom")


@dataclass
class Scores:
    values: torch.Tensor  # [N] float64, on CPU
    tokens: list[int]  # guide token forwards per response


class Scorer:
    """Base class: implement ``score``; calling the scorer returns the values only."""

    def score(self, prompts: Sequence[str], responses: Sequence[str], finished: Sequence[bool]) -> Scores:
        raise NotImplementedError

    def __call__(self, prompts: Sequence[str], responses: Sequence[str], finished: Sequence[bool]) -> torch.Tensor:
        return self.score(prompts, responses, finished).values


def _check_lengths(prompts, responses, finished) -> None:
    if not (len(prompts) == len(responses) == len(finished)):
        raise ValueError(f"got {len(prompts)} prompts, {len(responses)} responses, {len(finished)} flags; pass one each")


class ImplicitValueScorer(Scorer):
    """beta * sum_t [log p_tuned(y_t | x, y_<t) - log p_untuned(y_t | x, y_<t)].

    ``tuned`` and ``untuned`` are :class:`GuideLM` objects (they may use different
    tokenizers from each other and from the strong model).
    """

    def __init__(self, tuned: GuideLM, untuned: GuideLM, beta: float = 1.0):
        check_number("beta", beta)
        self.tuned, self.untuned, self.beta = tuned, untuned, float(beta)
        self._same_reading = tuned.reads_like(untuned)

    def score(self, prompts, responses, finished) -> Scores:
        _check_lengths(prompts, responses, finished)
        ids = self.tuned.encode_responses(responses)
        lt, nt = self.tuned.logprob_sums(prompts, responses, finished, ids)
        lu, nu = self.untuned.logprob_sums(prompts, responses, finished, ids if self._same_reading else None)
        return Scores(self.beta * (lt - lu), [a + b for a, b in zip(nt, nu)])

    def __repr__(self) -> str:
        return f"ImplicitValueScorer(tuned={self.tuned.lm.name!r}, untuned={self.untuned.lm.name!r}, beta={self.beta})"


class _SequenceClassifier(Scorer):
    """Shared: run a sequence-classification model on texts in batches; logits [N, C]."""

    def __init__(self, model, tokenizer, name: str, batch_size: int = 32, max_length: Optional[int] = None):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.batch_size, self.max_length = batch_size, max_length
        if tokenizer.pad_token_id is None:
            raise ValueError(f"{name!r}: the tokenizer has no pad token; set tokenizer.pad_token (e.g. to eos)")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def _logits(self, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
        out, tokens = [], []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i : i + self.batch_size], truncation=self.max_length is not None,
                                 max_length=self.max_length)["input_ids"]
            ids, mask = right_pad(enc, self.tokenizer.pad_token_id, self.device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            if not bool(torch.isfinite(logits).all()):
                raise FloatingPointError(f"model {self.name!r} produced NaN/inf logits; try dtype=float32")
            out.append(logits.double().cpu())
            tokens += [len(e) for e in enc]
        return torch.cat(out) if out else torch.zeros((0, 1), dtype=torch.float64), tokens


class RewardModelScorer(_SequenceClassifier):
    """A reward model with one output; the conversation goes through its chat template if it has one."""

    def __init__(self, model, tokenizer, name: str = "reward_model", batch_size: int = 32, max_length: Optional[int] = None):
        arch = list(getattr(model.config, "architectures", None) or [])
        if arch and not any(a.endswith("ForSequenceClassification") for a in arch):
            raise ValueError(f"reward model {name!r} is not a sequence-classification model (its config names "
                             f"{', '.join(arch)}); give a reward model with one output (num_labels=1), e.g. one "
                             "trained by TRL's RewardTrainer")
        labels = getattr(model.config, "num_labels", None)
        if labels != 1:
            raise ValueError(f"reward model {name!r} has {labels} outputs; a reward model needs exactly one (num_labels=1)")
        super().__init__(model, tokenizer, name, batch_size, max_length)

    def texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        if getattr(self.tokenizer, "chat_template", None):
            return [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
                )
                for p, r in zip(prompts, responses)
            ]
        return [p + r for p, r in zip(prompts, responses)]

    def score(self, prompts, responses, finished) -> Scores:
        _check_lengths(prompts, responses, finished)
        logits, tokens = self._logits(self.texts(prompts, responses))
        return Scores(logits[:, 0], tokens)


class ClassifierScorer(_SequenceClassifier):
    """log p(label) - log p(other) of a text classifier on prompt + response.

    With two labels this is the positive-minus-negative logit; with more, ``other``
    is the log-sum-exp of all other labels. ``label`` is an index or a label name.
    """

    def __init__(self, model, tokenizer, label: Union[int, str] = 1, name: str = "classifier",
                 include_prompt: bool = True, batch_size: int = 32, max_length: Optional[int] = 512):
        super().__init__(model, tokenizer, name, batch_size, max_length)
        n = int(getattr(model.config, "num_labels", 0))
        if n < 2:
            raise ValueError(f"classifier {name!r} has {n} labels; a ClassifierScorer needs >= 2 (use RewardModelScorer for 1)")
        if isinstance(label, str):
            label2id = {k.lower(): v for k, v in (model.config.label2id or {}).items()}
            if label.lower() not in label2id:
                raise ValueError(f"label {label!r} not in {name!r}'s labels {list(label2id)}")
            label = label2id[label.lower()]
        if not 0 <= label < n:
            raise ValueError(f"label index {label} out of range for {name!r} with {n} labels")
        self.label, self.include_prompt = int(label), include_prompt

    def score(self, prompts, responses, finished) -> Scores:
        _check_lengths(prompts, responses, finished)
        texts = [p + r for p, r in zip(prompts, responses)] if self.include_prompt else list(responses)
        logits, tokens = self._logits(texts)
        logp = torch.log_softmax(logits, dim=-1)
        others = torch.cat([logp[:, : self.label], logp[:, self.label + 1:]], dim=1)
        return Scores(logp[:, self.label] - torch.logsumexp(others, dim=1), tokens)


class WeightedSum(Scorer):
    """sum_i weight_i * scorer_i(prompts, responses, finished)."""

    def __init__(self, terms: Sequence[tuple[float, object]]):
        if not terms:
            raise ValueError("WeightedSum needs at least one (weight, scorer) pair")
        self.terms = [(float(w), s) for w, s in terms]

    def score(self, prompts, responses, finished) -> Scores:
        total = torch.zeros(len(responses), dtype=torch.float64)
        tokens = [0] * len(responses)
        for w, s in self.terms:
            values, toks = score_candidates(s, list(prompts), list(responses), list(finished))
            total += w * torch.tensor(values, dtype=torch.float64)
            tokens = [a + b for a, b in zip(tokens, toks)]
        return Scores(total, tokens)


def score_candidates(scorer: Callable, prompts: list[str], texts: list[str], ended: list[bool]) -> tuple[list[float], list[int]]:
    """Call a scorer; return (scores, guide token forwards per candidate).

    Scorers built on :class:`Scorer` report their token counts via ``.score``; any other
    callable ``scorer(prompts, responses, finished) -> tensor`` counts 0.
    """
    if hasattr(scorer, "score"):
        out = scorer.score(prompts, texts, ended)
        values, tokens = out.values, list(out.tokens)
    else:
        values, tokens = scorer(prompts, texts, ended), [0] * len(texts)
    values = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    if values.numel() != len(texts):
        raise ValueError(f"scorer returned {values.numel()} scores for {len(texts)} responses")
    if not bool(torch.isfinite(values).all()):
        raise FloatingPointError(f"scorer {scorer!r} returned NaN/inf scores; check the guide models (try dtype=float32)")
    return values.tolist(), tokens


class GuideTerm(NamedTuple):
    """One additive term of an engine's guide: ``weight * scorer(prompts, responses, finished)``."""

    weight: float
    kind: str  # one of GUIDE_KINDS
    scorer: Callable

    def check(self) -> "GuideTerm":
        check_number("guide weight", self.weight)
        if self.kind not in GUIDE_KINDS:
            raise ValueError(f"guide kind {self.kind!r} is unknown; choose one of {', '.join(GUIDE_KINDS)}")
        if not callable(self.scorer):
            raise ValueError(f"the scorer of a {self.kind} guide term must be callable, got {self.scorer!r}")
        return self


def guide_scorer(guides: Sequence[GuideTerm]) -> Optional[Callable]:
    """The one scorer the guide terms sum to: None without terms, the scorer itself for one term of
    weight 1, else a :class:`WeightedSum`."""
    if not guides:
        return None
    if len(guides) == 1 and guides[0].weight == 1.0:
        return guides[0].scorer
    return WeightedSum([(g.weight, g.scorer) for g in guides])


# ----------------------------------------------------------------------------- scorer SPECs (the lm-eval tasks' metrics)

_LOADED: dict[str, Callable[[Sequence[str], Sequence[str]], list[float]]] = {}  # SPEC -> scorer, once per process


def _model_scorer(kind: str, path: str, label) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    from .engine import load_classifier

    device = os.environ.get("W2S_SCORER_DEVICE", "auto")
    model, tok = load_classifier(path, dtype="float32" if device == "cpu" else "auto", device=device)
    if kind == "auto":
        kind = "rm" if int(getattr(model.config, "num_labels", 0)) == 1 else "classifier"
    if kind == "rm":
        scorer = RewardModelScorer(model, tok, name=path)
    else:
        if label is None:
            names = {k.lower() for k in (model.config.label2id or {})}
            label = "positive" if "positive" in names else 1
        scorer = ClassifierScorer(model, tok, label=label, name=path)
    return lambda prompts, responses: [float(v) for v in scorer(list(prompts), list(responses), [True] * len(prompts))]


def _world_gold(name: str):
    from .world.build import read_manifest, world_dir
    from .world.gold import load_gold

    path = world_dir(name)
    manifest = read_manifest(path) if path.exists() else None
    if not manifest or "gold" not in manifest.get("paths", {}):
        raise FileNotFoundError(f"world {name} has no gold reward in {path}; build it: w2s-eval world build {name}")
    gold = path / manifest["paths"]["gold"]
    sha = manifest.get("steps", {}).get("gold", {}).get("files", {}).get(gold.name)
    return load_gold(gold, sha256=sha)  # checked against the manifest; a pickle without a recorded sha256 is refused


def load_scorer(spec: str) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    """``scorer(prompts, responses) -> scores`` for a scorer SPEC (see the module docstring); loaded once per process."""
    if spec in _LOADED:
        return _LOADED[spec]
    kind, sep, rest = spec.partition(":")
    if not sep:
        kind, rest = ("vader", "") if spec == "vader" else ("auto", spec)
    if kind == "vader":
        from .world.gold import vader_judge

        fn = vader_judge
    elif kind in ("gold", "world"):
        if kind == "gold" and not Path(rest).is_file():
            raise FileNotFoundError(f"gold reward file {rest!r} does not exist (spec {spec!r})")
        from .world.gold import load_gold

        fn = _world_gold(rest) if kind == "world" else load_gold(rest)
    elif kind in ("classifier", "rm", "auto"):
        path, _, label = rest.partition("@")
        if not Path(path).is_dir():
            raise FileNotFoundError(f"scoring model directory {path!r} does not exist (spec {spec!r}); give "
                                    "classifier:DIR, rm:DIR or an existing model directory")
        fn = _model_scorer(kind, path, (int(label) if label.isdigit() else label) if label else None)
    else:
        raise ValueError(f"unknown scorer kind {kind!r} in {spec!r}; use vader, classifier:DIR[@LABEL], rm:DIR, "
                         "gold:FILE, world:imdb-mini or a model directory")
    _LOADED[spec] = fn
    return fn
