"""Does guidance work in this world? Figures on held-out prompts, before any comparison.

Strong-model samples (k per prompt, fixed length, the world's sampling) are scored by
the implicit value (tuned vs untuned guide), the reward model, the gold reward and the
judge. Reported: Spearman correlations of the guides with gold (pooled over all
samples, and the mean within a prompt), and the gold gain of picking the best of k by
each guide over the average sample (mean +- standard error over prompts).
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Optional, Sequence

from ..extras import require
from ..guide import GuideLM, ImplicitValueScorer
from ..provenance import mean_se
from ..scorers import RewardModelScorer
from .pairs import sample_continuations

logger = logging.getLogger(__name__)

__all__ = ["validate_guidance"]


def _spearman(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    require("scipy", "world")
    from scipy.stats import spearmanr

    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    rho = float(spearmanr(a, b).statistic)
    return rho if math.isfinite(rho) else None


def _within(scores: list[list[float]], gold: list[list[float]]) -> Optional[float]:
    vals = [r for r in (_spearman(s, g) for s, g in zip(scores, gold)) if r is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def _bon_gain(scores: list[list[float]], gold: list[list[float]]) -> dict:
    gains = []
    for s, g in zip(scores, gold):
        best = max(range(len(s)), key=lambda i: s[i])
        gains.append(g[best] - sum(g) / len(g))
    m, se = mean_se(gains)
    return {"mean": round(m, 4), "se": round(se, 4) if se is not None else None}


def validate_guidance(
    strong,
    tuned,
    untuned,
    reward_model: Optional[tuple],
    gold: Callable,
    judge: Callable,
    prompts: Sequence[str],
    k: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    seed: int,
    batch_size: int = 8,
    progress: bool = True,
    stop_at_eos: bool = False,
    samples_out: Optional[list] = None,
) -> dict:
    """Sample ``k`` continuations per prompt from ``strong`` (CausalLM) and report the guidance figures.

    ``stop_at_eos``: samples end at the strong model's end-of-text (else they have ``max_new_tokens`` tokens);
    ``samples_out``: a list that receives one row per sample (prompt index, response, gold, judge, guide scores)."""
    samples = sample_continuations(
        strong,
        prompts,
        k,
        max_new_tokens,
        seed,
        batch_size,
        temperature,
        progress,
        desc="validate: strong samples",
        top_k=top_k,
        stop_at_eos=stop_at_eos,
    )
    flat_p = [p for p, s in zip(prompts, samples) for _ in s]
    flat_r = [r for s in samples for r in s]
    flags = [False] * len(flat_r)

    def per_prompt(values):
        return [list(values[j * k : (j + 1) * k]) for j in range(len(prompts))]

    def run(scorer):
        out = []
        for i in range(0, len(flat_r), 32):
            out += scorer(flat_p[i : i + 32], flat_r[i : i + 32], flags[i : i + 32]).tolist()
        return out

    g = gold(flat_p, flat_r)
    j = judge(flat_p, flat_r)
    implicit = run(ImplicitValueScorer(GuideLM(tuned, incremental=False), GuideLM(untuned, incremental=False), 1.0))
    report = {
        "prompts": len(prompts),
        "samples_per_prompt": k,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "seed": seed,
        "gold_mean": round(mean_se(g)[0], 4),
        "judge_mean": round(mean_se(j)[0], 4),
        "spearman_implicit_gold": _spearman(implicit, g),
        "spearman_implicit_gold_within_prompt": _within(per_prompt(implicit), per_prompt(g)),
        "bon_gold_gain_by_implicit": _bon_gain(per_prompt(implicit), per_prompt(g)),
        "bon_judge_gain_by_implicit": _bon_gain(per_prompt(implicit), per_prompt(j)),
        "bon_gold_gain_by_gold": _bon_gain(per_prompt(g), per_prompt(g)),
    }
    if reward_model is not None:
        rm = run(RewardModelScorer(*reward_model, name="reward_model"))
        report.update(
            {
                "spearman_rm_gold": _spearman(rm, g),
                "spearman_rm_gold_within_prompt": _within(per_prompt(rm), per_prompt(g)),
                "bon_gold_gain_by_rm": _bon_gain(per_prompt(rm), per_prompt(g)),
            }
        )
    for key in ("spearman_implicit_gold", "spearman_rm_gold"):
        if report.get(key) is not None:
            report[key] = round(report[key], 4)
    if samples_out is not None:
        for i, (response, gv, jv, iv) in enumerate(zip(flat_r, g, j, implicit)):
            samples_out.append(
                {
                    "prompt": i // k,
                    "response": response,
                    "gold": gv,
                    "judge": jv,
                    "implicit": iv,
                    **({"rm": rm[i]} if reward_model is not None else {}),
                }
            )
    gain = report["bon_gold_gain_by_implicit"]
    report["guidance_works"] = bool(gain["se"] is not None and gain["mean"] > 2 * gain["se"])
    return report
