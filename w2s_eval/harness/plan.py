"""What a compare run is, made from a world: the engine spec of its models and guides (:func:`world_spec`), the
run's identity (:func:`make_run_config`), its engine (:func:`build_world_engine`), and the oracle engine that the
world's gold guides (:func:`oracle_engine`).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Optional

from ..endpoint import EndpointPolicy
from ..engine import build_engine, resolve_device, resolve_dtype
from ..provenance import fingerprint
from ..spec import EngineSpec
from ..world.strong import resolve_strong
from ..world_registry import World, world_home
from .oracle import oracle_engine
from .records import GUIDES, RunConfig, parse_methods, parse_seeds

__all__ = [
    "served_model_name",
    "world_spec",
    "make_run_config",
    "build_world_engine",
    "COMPARE_DEFAULTS",
]


def served_model_name(strong_endpoint: str) -> str:
    """The name of the one model an OpenAI-compatible server serves (ValueError when it serves several)."""

    policy = EndpointPolicy(strong_endpoint)
    try:
        return policy.model
    finally:
        policy.close()


_ALIASES = {"guide_beta": "beta"}  # --guide-beta: another name of the spec's beta
# the comparison's own default: float32 everywhere, so a run's numbers (and its identity) are the same on CPU
# and GPU; dtype="auto" is resolved to what it stands for on this machine before it enters the identity
COMPARE_DEFAULTS = {"dtype": "float32"}
_SPEC_FIELDS = frozenset(f.name for f in fields(EngineSpec))


def world_spec(world: World, guide: str = "implicit", strong: Optional[str] = None, **settings) -> EngineSpec:
    """The :class:`EngineSpec` of a world: its strong model (or ``strong``, a model directory; or the one served
    at ``strong_endpoint``), its tuned/untuned guides (EFT and the implicit value), and as the BoN/CBS guide the
    implicit value (``guide="implicit"``, weight ``beta``) or the world's reward model alone (``"rm"``); with
    ``"gold"`` (the oracle) the spec is the implicit one and :func:`oracle_engine` puts the gold reward in as guide.

    ``settings``: other EngineSpec fields (dtype, device, strong_endpoint, ...; ``guide_beta`` means ``beta``);
    defaults are the spec's, except :data:`COMPARE_DEFAULTS`.
    """
    settings = {_ALIASES.get(k, k): v for k, v in settings.items() if v is not None}
    unknown = sorted(set(settings) - _SPEC_FIELDS)
    if unknown:
        raise ValueError(f"unknown engine setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(_SPEC_FIELDS))}")
    if guide not in GUIDES:
        raise ValueError(f"guide must be one of {', '.join(GUIDES)}, got {guide!r}")
    spec = {
        "strong": strong or world.strong,
        "tuned": (world.tuned,),
        "untuned": world.untuned,
        **COMPARE_DEFAULTS,
        **settings,
    }
    if spec.get("strong_endpoint"):
        spec.pop("strong")
    if guide == "rm":
        if world.reward_model is None:
            raise ValueError(f"world {world.name!r} has no reward model; use --guide implicit")
        if spec.get("beta", 1.0) != 1.0:
            raise ValueError(
                f"beta={spec['beta']} weighs the implicit value, which --guide rm does not use; drop it "
                "or use --guide implicit"
            )
        spec.update(reward_model=world.reward_model, beta=0.0)  # the pair stays for EFT
    if guide == "gold" and spec.get("beta", 1.0) != 1.0:
        raise ValueError(f"beta={spec['beta']} weighs the implicit value, which --guide gold does not use; drop it")
    return EngineSpec(**spec)


def _resolved_dtype(spec: EngineSpec) -> str:
    """The dtype ``auto`` stands for where the models will run (a run's identity records what computes)."""

    device = (spec.guide_device if spec.strong_endpoint else spec.strong_device) or spec.device or "auto"
    return str(resolve_dtype(spec.dtype, resolve_device(device))).replace("torch.", "")


def _strong_dir(world: World, name: Optional[str], home) -> tuple:
    """(model directory or None for the world's own, name for the identity or None) of ``--strong NAME``."""
    if name is None or name == world.strong_name:
        return None, None

    return resolve_strong(name, cache_dir=world_home(home)), name


def make_run_config(
    world: World,
    methods,
    n_prompts: Optional[int] = None,
    seeds=1,
    *,
    guide: str = "implicit",
    strong: Optional[str] = None,
    home=None,
    batch_size: int = 8,
    chat_template: bool = False,
    **settings,
) -> RunConfig:
    """Resolve a :class:`RunConfig` for ``world``.

    ``strong``: the strong model replacing the world's own, read by ``w2s_eval.world.strong.resolve_strong`` (resolved
    into ``home``'s cache); ``chat_template``: the strong model reads the prompts through its chat template;
    ``settings``: EngineSpec fields (dtype, device, strong_endpoint, strong_model, beta or
    guide_beta, ...) and sampling overrides (temperature, top_k, top_p, max_new_tokens, stop, truncation).
    ``strong_endpoint`` without ``strong_model`` asks the server for its only model, so the config records it.
    """
    n_available = len(world.prompts)
    n_prompts = n_available if n_prompts is None else n_prompts
    if isinstance(n_prompts, int) and n_prompts > n_available:
        raise ValueError(
            f"--prompts {n_prompts} is more than the {n_available} evaluation prompts of world "
            f"{world.name!r}; use --prompts {n_available} or fewer"
        )
    engine = {k: v for k, v in settings.items() if _ALIASES.get(k, k) in _SPEC_FIELDS}
    overrides = {k: v for k, v in settings.items() if k not in engine and v is not None}
    try:
        sampling = replace(world.sampling, **overrides)
    except TypeError as e:
        raise ValueError(
            f"unknown sampling setting ({e}); valid: temperature, top_k, top_p, max_new_tokens, stop, truncation"
        ) from None
    if strong is not None and engine.get("strong_endpoint"):
        raise ValueError(f"--strong {strong} and --strong-endpoint both name the strong model; give one")
    spec = world_spec(world, guide, **engine)  # checks every setting before any model is resolved or loaded
    strong_dir, strong_name = _strong_dir(world, strong, home)
    spec = spec.engine_spec(strong=strong_dir or spec.strong, dtype=_resolved_dtype(spec))
    if spec.strong_endpoint is not None and spec.strong_model is None:
        spec = spec.engine_spec(strong_model=served_model_name(spec.strong_endpoint))
    return RunConfig(
        world=world.name,
        world_fingerprint=fingerprint(world.manifest),
        methods=tuple(parse_methods(methods)),
        n_prompts=n_prompts,
        seeds=parse_seeds(seeds),
        sampling=sampling,
        engine=spec,
        guide=guide,
        strong_name=strong_name,
        batch_size=batch_size,
        chat_template=chat_template,
    )


def build_world_engine(world: World, guide: str = "implicit", **settings):
    """An Engine for a world (see :func:`world_spec`); e.g. ``build_world_engine(world, device="cpu")``."""

    engine = build_engine(world_spec(world, guide, **settings))
    return oracle_engine(engine, world) if guide == "gold" else engine
