"""w2s-eval: weak-to-strong search (chunk-level beam search guided by small models) as a model backend."""

from .checks import SpecError
from .config import (
    BaseMethod,
    BoNMethod,
    CBSMethod,
    EFTMethod,
    SamplingConfig,
    SearchConfig,
    parse_method,
)
from .eft import EFTPolicy, eft_logprobs
from .engine import (
    Engine,
    PreparedMethod,
    build_engine,
    load_causal_lm,
    load_classifier,
    resolve_device,
)
from .guide import (
    GuideLM,
    GuideTerm,
    ImplicitValueScorer,
    Scorer,
    Scores,
    WeightedSum,
    score_candidates,
)
from .lm import CausalLM
from .policy import Continuation, Policy, TransformersPolicy
from .scorers import ClassifierScorer, RewardModelScorer
from .search import Beam, SearchResult, chunk_beam_search
from .spec import EngineSpec

__version__ = "0.1.0"

__all__ = [
    "BaseMethod",
    "BoNMethod",
    "CBSMethod",
    "EFTMethod",
    "SamplingConfig",
    "SearchConfig",
    "parse_method",
    "EFTPolicy",
    "eft_logprobs",
    "Engine",
    "PreparedMethod",
    "build_engine",
    "EngineSpec",
    "SpecError",
    "GuideTerm",
    "score_candidates",
    "GuideLM",
    "CausalLM",
    "load_causal_lm",
    "load_classifier",
    "resolve_device",
    "Continuation",
    "Policy",
    "TransformersPolicy",
    "ClassifierScorer",
    "ImplicitValueScorer",
    "RewardModelScorer",
    "Scorer",
    "Scores",
    "WeightedSum",
    "Beam",
    "SearchResult",
    "chunk_beam_search",
    "__version__",
]
