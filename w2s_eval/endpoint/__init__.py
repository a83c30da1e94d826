"""The strong model behind an OpenAI-compatible completions server (vLLM, or any ``/v1/completions``).

``EndpointPolicy(base_url, model)`` is a search Policy (see ``w2s_eval.policy``);
``endpoint_loglikelihoods`` scores continuations with prompt logprobs. Needs the ``openai`` client
(the ``[endpoint]`` extra).
"""

from .client import ClientStats, CompletionClient, EndpointError
from .logprobs import continuation_logprob, endpoint_loglikelihoods
from .policy import EndpointPolicy, EndpointSession, request_seed

__all__ = [
    "EndpointPolicy",
    "EndpointSession",
    "EndpointError",
    "CompletionClient",
    "ClientStats",
    "endpoint_loglikelihoods",
    "continuation_logprob",
    "request_seed",
]
