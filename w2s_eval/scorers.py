"""Scorers over sequence-classification models.

They follow the guide contract of :mod:`w2s_eval.guide` (stateless callables
``scorer(prompts, responses, finished) -> scores [N]``; ``.score(...)`` adds the token forwards):

- :class:`RewardModelScorer`: a one-output sequence-classification reward model
  (as TRL's RewardTrainer trains it); a guide term of kind ``reward_model``.
- :class:`ClassifierScorer`: log p(label) - log p(other) of a text classifier (the
  paper's gold sentiment reward).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from .flops import Cost, flops_of, shape_of
from .guide import Scorer, Scores, check_lengths
from .lm import right_pad

__all__ = ["RewardModelScorer", "ClassifierScorer"]


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
            enc = self.tokenizer(
                texts[i : i + self.batch_size], truncation=self.max_length is not None, max_length=self.max_length
            )["input_ids"]
            ids, mask = right_pad(enc, self.tokenizer.pad_token_id, self.device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            if not bool(torch.isfinite(logits).all()):
                raise FloatingPointError(f"model {self.name!r} produced NaN/inf logits; try dtype=float32")
            out.append(logits.double().cpu())
            tokens += [len(e) for e in enc]
        return torch.cat(out) if out else torch.zeros((0, 1), dtype=torch.float64), tokens

    def _costs(self, tokens: list[int]) -> list[dict[str, Cost]]:
        """Each text's cost: all its positions fed in one pass, from no cache."""
        try:
            shape = shape_of(self.model)
        except (ValueError, AttributeError, TypeError):
            shape = None
        return [{self.name: Cost(forward_tokens=n, forward_flops=flops_of(shape, n))} for n in tokens]


class RewardModelScorer(_SequenceClassifier):
    """A reward model with one output; the conversation goes through its chat template if it has one."""

    def __init__(
        self, model, tokenizer, name: str = "reward_model", batch_size: int = 32, max_length: Optional[int] = None
    ):
        arch = list(getattr(model.config, "architectures", None) or [])
        if arch and not any(a.endswith("ForSequenceClassification") for a in arch):
            raise ValueError(
                f"reward model {name!r} is not a sequence-classification model (its config names "
                f"{', '.join(arch)}); give a reward model with one output (num_labels=1), e.g. one "
                "trained by TRL's RewardTrainer"
            )
        labels = getattr(model.config, "num_labels", None)
        if labels != 1:
            raise ValueError(
                f"reward model {name!r} has {labels} outputs; a reward model needs exactly one (num_labels=1)"
            )
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
        check_lengths(prompts, responses, finished)
        logits, tokens = self._logits(self.texts(prompts, responses))
        return Scores(logits[:, 0], tokens, self._costs(tokens))


class ClassifierScorer(_SequenceClassifier):
    """log p(label) - log p(other) of a text classifier on prompt + response.

    With two labels this is the positive-minus-negative logit; with more, ``other``
    is the log-sum-exp of all other labels. ``label`` is an index or a label name.
    """

    def __init__(
        self,
        model,
        tokenizer,
        label: Union[int, str] = 1,
        name: str = "classifier",
        include_prompt: bool = True,
        batch_size: int = 32,
        max_length: Optional[int] = 512,
    ):
        super().__init__(model, tokenizer, name, batch_size, max_length)
        n = int(getattr(model.config, "num_labels", 0))
        if n < 2:
            raise ValueError(
                f"classifier {name!r} has {n} labels; a ClassifierScorer needs >= 2 (use RewardModelScorer for 1)"
            )
        if isinstance(label, str):
            label2id = {k.lower(): v for k, v in (model.config.label2id or {}).items()}
            if label.lower() not in label2id:
                raise ValueError(f"label {label!r} not in {name!r}'s labels {list(label2id)}")
            label = label2id[label.lower()]
        if not 0 <= label < n:
            raise ValueError(f"label index {label} out of range for {name!r} with {n} labels")
        self.label, self.include_prompt = int(label), include_prompt

    def score(self, prompts, responses, finished) -> Scores:
        check_lengths(prompts, responses, finished)
        texts = [p + r for p, r in zip(prompts, responses)] if self.include_prompt else list(responses)
        logits, tokens = self._logits(texts)
        logp = torch.log_softmax(logits, dim=-1)
        others = torch.cat([logp[:, : self.label], logp[:, self.label + 1 :]], dim=1)
        return Scores(logp[:, self.label] - torch.logsumexp(others, dim=1), tokens, self._costs(tokens))
