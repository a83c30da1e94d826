"""Preference pairs that follow or break IFEval-style constraints, made by code.

An instruction that is not an evaluation prompt (an AlpacaEval instruction) gets one or two constraints drawn
from lm-eval's IFEval instruction registry (``lm_eval.tasks.ifeval.instructions_registry.INSTRUCTION_DICT``):
the registry's own ``build_description`` writes the constraint text (its arguments drawn by a seeded
``random``), and it is appended to the instruction. The *chosen* response is the instruction's reference
answer (cut to a few sentences) rewritten to meet every constraint; the *rejected* response is the same text
rewritten to break one of them (the plain reference, or another constraint's rewrite). Both responses are
checked with the registry's own ``check_following``: a pair is kept only when the chosen one follows every
constraint and the rejected one breaks at least one, so the label is the checker's, not the rewrite's.

Chosen and rejected share their wording and length up to the rewrite, so what separates them is the
constraint, not the style or length of the text (a reference-vs-sample pair would teach those).
"""

from __future__ import annotations

import json
import logging
import random
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

from .ifeval_data import prepare_ifeval

logger = logging.getLogger(__name__)

__all__ = ["REWRITES", "PairMaker", "make_constraint_pairs", "min_words", "fits_budget", "cut_reference"]


def _sentences(text: str) -> list[str]:
    parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ")) if s.strip()]
    return parts or [text.strip()]


def cut_reference(text: str, max_words: int) -> str:
    """The first whole sentences of ``text`` within ``max_words`` words (at least one sentence, cut by words)."""
    out, n = [], 0
    for s in _sentences(text):
        w = len(s.split())
        if out and n + w > max_words:
            break
        out.append(s if w <= max_words else " ".join(s.split()[:max_words]))
        n += w
    return " ".join(out)


def _words(text: str) -> list[str]:
    return text.split()


# ------------------------------------------------------------------ rewrites that meet one constraint
# each takes (text, args of the instruction, rng, instruction text) and returns the text rewritten to follow it


def _lowercase(t, a, rng, q):
    return t.lower()


def _capital(t, a, rng, q):
    return t.upper()


def _no_comma(t, a, rng, q):
    return re.sub(r"\s*,\s*", " ", t)


def _quotation(t, a, rng, q):
    return f'"{t}"'


def _end_phrase(t, a, rng, q):
    return f"{t} {a['end_phrase']}"


def _title(t, a, rng, q):
    title = " ".join(re.sub(r"[^\w\s]", "", q).split()[:4]) or "Answer"
    return f"<<{title.title()}>>\n\n{t}"


def _postscript(t, a, rng, q):
    return f"{t}\n\n{a['postscript_marker']} I hope this helps."


def _json(t, a, rng, q):
    return "```json\n" + json.dumps({"answer": t}, ensure_ascii=False) + "\n```"


def _bullets(t, a, rng, q):
    n = a["num_bullets"]
    sents = _sentences(t)
    while len(sents) < n:
        sents = sents + sents
    return "\n".join(f"* {s}" for s in sents[:n])


def _highlights(t, a, rng, q):
    sents = _sentences(t)
    n = min(a["num_highlights"], len(sents))
    marked = [f"*{s}*" if i < n else s for i, s in enumerate(sents)]
    out = " ".join(marked)
    extra = a["num_highlights"] - n
    return out + "".join(f"\n*Note {i + 1}*" for i in range(extra))


def _paragraphs(t, a, rng, q):
    n = a["num_paragraphs"]
    sents = _sentences(t)
    while len(sents) < n:
        sents = sents + sents
    k = len(sents)
    chunks = [" ".join(sents[i * k // n : (i + 1) * k // n]) for i in range(n)]
    return "\n***\n".join(chunks)


def _sections(t, a, rng, q):
    n, splitter = a["num_sections"], a["section_spliter"]
    sents = _sentences(t)
    while len(sents) < n:
        sents = sents + sents
    k = len(sents)
    return "\n\n".join(f"{splitter} {i + 1}\n" + " ".join(sents[i * k // n : (i + 1) * k // n]) for i in range(n))


def _keywords(t, a, rng, q):
    return f"{t} This touches on {', '.join(a['keywords'])}."


def _forbidden(t, a, rng, q):
    for w in a["forbidden_words"]:
        t = re.sub(r"\b" + re.escape(w) + r"\b", "", t, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", t).strip()


def _frequency(t, a, rng, q):
    kw, n = a["keyword"], a["frequency"]
    t = re.sub(re.escape(kw), "", t, flags=re.IGNORECASE)
    if a["relation"] == "less than":
        return re.sub(r"\s+", " ", t).strip()
    return t + " " + " ".join(f"{kw.capitalize()} matters here." for _ in range(n))


def _placeholders(t, a, rng, q):
    names = ["name", "address", "date", "company", "city", "phone", "email", "title"]
    n = a["num_placeholders"]
    return t + " " + " ".join(f"[{names[i % len(names)]}{'' if i < len(names) else i}]" for i in range(n))


def _constrained(t, a, rng, q):
    return rng.choice(("My answer is yes.", "My answer is no.", "My answer is maybe."))


def _repeat(t, a, rng, q):
    return f"{a['prompt_to_repeat']} {t}"


def _two_responses(t, a, rng, q):
    sents = _sentences(t)
    half = max(1, len(sents) // 2)
    first, second = " ".join(sents[:half]), " ".join(sents[half:]) or sents[0].upper()
    if first == second:
        second = second + " In short, that is it."
    return f"{first}\n******\n{second}"


def _words_less(t, a, rng, q):
    n = a["num_words"]
    return " ".join(_words(t)[: max(1, n - 1)]) if a["relation"] == "less than" else t


def _capital_words(t, a, rng, q):
    n = a["capital_frequency"]
    words = _words(t)
    if a["capital_relation"] == "less than":
        return " ".join(w.lower() if w.isupper() else w for w in words)
    k = min(len(words), n + 1)
    return " ".join([w.upper() for w in words[:k]] + words[k:]) + (
        " " + " ".join(["IMPORTANT"] * (n + 1 - k)) if k < n + 1 else ""
    )


def _first_word(t, a, rng, q):
    n, nth, first = a["num_paragraphs"], a["nth_paragraph"], a["first_word"]
    paras = _paragraphs(t, {"num_paragraphs": n}, rng, q).split("\n***\n")
    paras = [p.strip() for p in paras]
    if nth <= len(paras):
        paras[nth - 1] = f"{first.capitalize()} {paras[nth - 1]}"
    return "\n\n".join(paras)


REWRITES: dict[str, Callable] = {
    "change_case:english_lowercase": _lowercase,
    "change_case:english_capital": _capital,
    "change_case:capital_word_frequency": _capital_words,
    "punctuation:no_comma": _no_comma,
    "startend:quotation": _quotation,
    "startend:end_checker": _end_phrase,
    "detectable_format:title": _title,
    "detectable_content:postscript": _postscript,
    "detectable_format:json_format": _json,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:multiple_sections": _sections,
    "length_constraints:number_paragraphs": _paragraphs,
    "length_constraints:nth_paragraph_first_word": _first_word,
    "length_constraints:number_words": _words_less,
    "keywords:existence": _keywords,
    "keywords:forbidden_words": _forbidden,
    "keywords:frequency": _frequency,
    "detectable_content:number_placeholders": _placeholders,
    "detectable_format:constrained_response": _constrained,
    "combination:repeat_prompt": _repeat,
    "combination:two_responses": _two_responses,
}
# the registry's own argument draws, narrowed where a draw cannot fit a short answer
_ARGS = {
    "length_constraints:number_words": lambda rng: {"num_words": rng.choice((20, 30, 40, 50)), "relation": "less than"},
    "length_constraints:number_paragraphs": lambda rng: {"num_paragraphs": rng.randint(2, 4)},
    "detectable_format:multiple_sections": lambda rng: {
        "section_spliter": rng.choice(("Section", "SECTION")),
        "num_sections": rng.randint(2, 4),
    },
    "length_constraints:nth_paragraph_first_word": lambda rng: {
        "num_paragraphs": (n := rng.randint(2, 3)),
        "nth_paragraph": rng.randint(1, n),
        "first_word": rng.choice(("however", "first", "finally", "indeed", "overall")),
    },
    "combination:repeat_prompt": lambda rng: {"prompt_to_repeat": None},  # set to the instruction itself
    "change_case:capital_word_frequency": lambda rng: {
        "capital_frequency": rng.randint(2, 8),
        "capital_relation": rng.choice(("less than", "at least")),
    },
}
# instructions whose check ignores the reply's language etc. and that compose with others
_CONFLICTS = {
    frozenset({"change_case:english_lowercase", "change_case:english_capital"}),
    frozenset({"change_case:english_capital", "change_case:capital_word_frequency"}),
    frozenset({"change_case:english_lowercase", "change_case:capital_word_frequency"}),
}
_ALONE = {
    "detectable_format:json_format",
    "detectable_format:constrained_response",
    "combination:two_responses",
    "combination:repeat_prompt",
    "length_constraints:number_words",
}


@contextmanager
def seeded_random(seed: int) -> Iterator[None]:
    """The module ``random`` (the registry's argument draws use it) seeded, its state restored afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


@dataclass(frozen=True)
class Constraint:
    id: str
    description: str
    args: dict
    checker: object  # the registry's Instruction, built with ``args``


def _constraint(instruction_id: str, instruction: str, rng: random.Random) -> Constraint:
    # optional dependency (the [ifeval] extra), imported after prepare_ifeval put the Punkt data in place
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    checker = INSTRUCTION_DICT[instruction_id](instruction_id)
    args = _ARGS[instruction_id](rng) if instruction_id in _ARGS else {}
    if instruction_id == "combination:repeat_prompt":
        args = {"prompt_to_repeat": instruction}
    description = checker.build_description(**args)
    args = checker.get_instruction_args() or {}
    return Constraint(instruction_id, description, dict(args), checker)


def _follows(c: Constraint, text: str) -> bool:
    try:
        return bool(text.strip()) and bool(c.checker.check_following(text))
    except Exception:  # noqa: BLE001 - a checker that cannot read the text counts as not followed
        return False


@dataclass
class PairMaker:
    """Makes constraint pairs (see the module docstring); ``ids``: the instruction ids to draw from."""

    ids: Sequence[str] = tuple(REWRITES)
    max_words: int = 60  # words of the reference kept (whole sentences)
    two_constraints: float = 0.3  # share of instructions given two constraints
    other_rewrite: float = 0.5  # share of rejected responses that follow another constraint instead of none

    def __post_init__(self):
        unknown = [i for i in self.ids if i not in REWRITES]
        if unknown:
            raise ValueError(f"no rewrite for instruction ids {unknown}; known: {', '.join(REWRITES)}")

    def one(self, instruction: str, reference: str, rng: random.Random) -> Optional[dict]:
        """A pair for ``instruction`` (a dict) or None when the checker rejects what the rewrites made."""
        first = rng.choice(self.ids)
        chosen_ids = [first]
        if first not in _ALONE and rng.random() < self.two_constraints:
            second = rng.choice(
                [i for i in self.ids if i != first and i not in _ALONE and frozenset({first, i}) not in _CONFLICTS]
            )
            chosen_ids.append(second)
        constraints = [_constraint(i, instruction, rng) for i in chosen_ids]
        base = cut_reference(reference, self.max_words)
        chosen = base
        for c in constraints:
            chosen = REWRITES[c.id](chosen, c.args, rng, instruction)
        broken = rng.randrange(len(constraints))
        rejected = base
        for i, c in enumerate(constraints):
            if i != broken:
                rejected = REWRITES[c.id](rejected, c.args, rng, instruction)
        kind = "plain"
        if rng.random() < self.other_rewrite:
            other = rng.choice([i for i in self.ids if i not in chosen_ids])
            oc = _constraint(other, instruction, rng)
            rejected, kind = REWRITES[other](rejected, oc.args, rng, instruction), f"other:{other}"
        if not all(_follows(c, chosen) for c in constraints) or all(_follows(c, rejected) for c in constraints):
            return None
        prompt = instruction.rstrip() + " " + " ".join(c.description for c in constraints)
        return {
            "instruction": instruction,
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "instruction_id_list": [c.id for c in constraints],
            "kwargs": [c.args for c in constraints],
            "broken": constraints[broken].id,
            "rejected_kind": kind,
            "r_chosen": 1.0,
            "r_rejected": sum(_follows(c, rejected) for c in constraints) / len(constraints),
        }


def make_constraint_pairs(
    items: Sequence[tuple[str, str]], n: int, seed: int, maker: Optional[PairMaker] = None, cache=None
) -> tuple[list[dict], dict]:
    """Up to ``n`` pairs from ``items`` ((instruction, reference) pairs, cycled in order); (pairs, counts).

    Deterministic for a seed: the registry's draws use the module ``random`` (seeded here and restored), the
    rewrites a ``random.Random(seed)``. ``cache``: where the checker's offline data live (default: the cache
    home; :func:`w2s_eval.world.ifeval_data.prepare_ifeval`)."""
    if not items:
        raise ValueError("make_constraint_pairs needs at least one (instruction, reference) item")
    prepare_ifeval(cache)  # before the registry loads: lm-eval's module looks the Punkt data up on import
    maker = maker or PairMaker()
    rng = random.Random(seed)
    pairs, tries = [], 0
    with seeded_random(seed):
        while len(pairs) < n and tries < 2 * n + 10:
            instruction, reference = items[tries % len(items)]
            tries += 1
            pair = maker.one(instruction, reference, rng)
            if pair is not None:
                pairs.append(pair)
    counts: dict = {}
    for p in pairs:
        for i in p["instruction_id_list"]:
            counts[i] = counts.get(i, 0) + 1
    return pairs, {"pairs": len(pairs), "tries": tries, "types": len(counts), "per_type": dict(sorted(counts.items()))}


# ------------------------------------------------------------------ which evaluation prompts fit the budget


def min_words(instruction_id: str, kwargs: Optional[dict]) -> int:
    """A lower bound of the words a response needs to meet one IFEval instruction (0: any length will do)."""
    a = {k: v for k, v in (kwargs or {}).items() if v is not None}
    at_least = lambda rel: rel in (None, "at least")  # noqa: E731
    if instruction_id == "length_constraints:number_words":
        return int(a.get("num_words", 0)) if at_least(a.get("relation")) else 0
    if instruction_id == "length_constraints:number_sentences":
        return 8 * int(a.get("num_sentences", 0)) if at_least(a.get("relation")) else 0
    if instruction_id in ("length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word"):
        return 15 * int(a.get("num_paragraphs", 0))
    if instruction_id == "detectable_format:multiple_sections":
        return 15 * int(a.get("num_sections", 0))
    if instruction_id == "detectable_format:number_bullet_lists":
        return 5 * int(a.get("num_bullets", 0))
    if instruction_id == "detectable_format:number_highlighted_sections":
        return 3 * int(a.get("num_highlights", 0))
    if instruction_id == "detectable_content:number_placeholders":
        return 2 * int(a.get("num_placeholders", 0))
    if instruction_id == "keywords:frequency":
        return 2 * int(a.get("frequency", 0)) if at_least(a.get("relation")) else 0
    if instruction_id == "keywords:letter_frequency":
        return int(a.get("let_frequency", 0)) // 2 if at_least(a.get("let_relation")) else 0
    if instruction_id == "change_case:capital_word_frequency":
        return int(a.get("capital_frequency", 0)) if at_least(a.get("capital_relation")) else 0
    if instruction_id == "combination:two_responses":
        return 60
    if instruction_id == "combination:repeat_prompt":
        return len(str(a.get("prompt_to_repeat", "")).split()) + 20
    return 0


def fits_budget(instruction_ids: Sequence[str], kwargs: Sequence[Optional[dict]], max_words: int) -> bool:
    """Whether one response of ``max_words`` words can meet every instruction (the largest need counts)."""
    return max((min_words(i, k) for i, k in zip(instruction_ids, kwargs)), default=0) <= max_words
