"""w2s-eval: weak-to-strong search (chunk-level beam search guided by small models) as a model backend."""

from .config import (BaseMethod, BoNMethod, CBSMethod, EFTMethod, SamplingConfig, SearchConfig, parse_method)
from .eft import EFTPolicy, eft_logprobs
from .engine import Engine, build_engine
from .guide import GuideLM
from .lm import CausalLM
from .models import load_causal_lm, load_classifier, resolve_device
from .policy import Continuation, Policy, TransformersPolicy
from .scorers import ClassifierScorer, ImplicitValueScorer, RewardModelScorer, Scorer, Scores, WeightedSum
from .search import Beam, SearchResult, chunk_beam_search

__version__ = "0.1.0"

__all__ = [
    "BaseMethod", "BoNMethod", "CBSMethod", "EFTMethod", "SamplingConfig", "SearchConfig", "parse_method",
    "EFTPolicy", "eft_logprobs", "Engine", "build_engine", "GuideLM", "CausalLM", "load_causal_lm",
    "load_classifier", "resolve_device", "Continuation", "Policy", "TransformersPolicy", "ClassifierScorer",
    "ImplicitValueScorer", "RewardModelScorer", "Scorer", "Scores", "WeightedSum", "Beam", "SearchResult",
    "chunk_beam_search", "__version__",
]
