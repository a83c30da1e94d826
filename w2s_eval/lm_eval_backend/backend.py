"""``W2SLM``, the ``w2s`` model of lm-evaluation-harness (``lm_eval --model w2s --model_args strong=...,tuned=...,
untuned=...,method=cbs,w=4,k=4,l=5``): lm-eval's own ``hf`` backend (HFLM) over the engine's loaded strong model,
with two things changed, as lm-eval's ``hf_steered`` changes HFLM:

- ``generate_until``: :meth:`w2s_eval.Engine.generate` with each request's settings (:func:`.args.sampling_config`),
  batched by lm-eval's ``Collator`` (``--batch_size`` requests of one setting at a time, longest first);
- ``loglikelihood(_rolling)``: HFLM's own (the server's prompt log-probs with ``strong_endpoint``) plus the guide
  tilt (:mod:`w2s_eval.tilt`; EFT mixes the next-token distributions there).

Tokenizer hooks, chat templates, ranks and collectives are HFLM's. Each finished request goes to lm-eval's
``--use_cache`` database at once (guarded by the run's identity, :mod:`.cache`), its search statistics to a JSONL
file beside ``--output_path`` (:mod:`.stats`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from typing import Any, Optional

import torch
from lm_eval.api.model import CacheHook, TemplateLM
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import Collator
from lm_eval.utils import simple_parse_args_string, warning_once
from tqdm.auto import tqdm

from ..endpoint import endpoint_loglikelihoods
from ..engine import build_engine
from ..policy import TransformersPolicy, choice_seed
from ..provenance import package_versions
from ..tilt import LoadedHFLM, Tilt, eft_parts, terms_for
from ..world.strong import with_strong_resolved
from .args import greedy_hint, parse_model_args, sampling_config
from .cache import cache_identity, check_cache_identity
from .stats import StatsWriter, output_dir_of_run, result_record

logger = logging.getLogger(__name__)

__all__ = ["W2SLM"]


def _accelerator():
    """accelerate's view of a data-parallel launch (``accelerate launch`` / ``torchrun``); None for one process."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return None
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def _rank_device(args, cli_device: Optional[str], accelerator) -> Optional[str]:
    """The model args' device, else lm-eval's ``--device`` (the CPU when it names CUDA and there is none);
    under a data-parallel launch with no particular GPU asked for, this rank's GPU."""
    device = args.device
    if device is None and cli_device:
        if cli_device.startswith("cuda") and not torch.cuda.is_available():
            logger.info("w2s: --device %s but CUDA is not available: using the CPU", cli_device)
        else:
            device = cli_device
    if accelerator is not None and args.device_map:
        logger.warning(
            "w2s: device_map with %d data-parallel ranks: every rank spreads its strong model over "
            "all GPUs it sees; restrict each rank's GPUs (CUDA_VISIBLE_DEVICES) if that is not "
            "what you want",
            accelerator.num_processes,
        )
    if accelerator is not None and accelerator.device.type == "cuda" and device in (None, "auto", "cuda"):
        return str(accelerator.device)
    return device


class W2SLM(LoadedHFLM):
    """Weak-to-strong search as an lm-eval model (see docs/lm-eval.md for every model arg)."""

    def __init__(self, model_args: Optional[dict] = None, lm_eval_config: Optional[dict] = None, **kwargs: Any):
        self.args, cli_device = parse_model_args({**(model_args or {}), **kwargs}, lm_eval_config)
        if self.args.trust_remote_code:
            logger.warning("w2s: trust_remote_code is ignored; models load without remote code")
        accelerator = _accelerator()
        spec = self.args.engine_spec(device=_rank_device(self.args, cli_device, accelerator))
        self.engine = build_engine(with_strong_resolved(spec))
        self.run = self.engine.prepare(self.args.method_config())  # a method that cannot run fails here
        self.method = self.run.method
        policy = self.engine.policy
        self.strong = policy.lm if isinstance(policy, TransformersPolicy) else None
        ll_batch = self.args.loglik_batch_size or self.args.batch_size
        if self.strong is not None:
            super().__init__(self.strong, ll_batch, accelerator, *eft_parts(self.engine, self.method))
        else:  # a served strong model: no HFLM; generate_until, and loglikelihood from the server
            TemplateLM.__init__(self)
            self.tokenizer, self._device = getattr(policy, "tokenizer", None), torch.device("cpu")
            self._use_ranks(accelerator)
        self.tilt = Tilt(terms_for(self.engine, self.method), ll_batch)
        self._ll_chunk = max(1, ll_batch * 8)  # results reach the request cache chunk by chunk
        self.info = {
            "model_args": self.args.to_dict(),
            "method": self.method.spec,
            "versions": package_versions(),
            "world": {"rank": self.rank, "world_size": self.world_size},
        }
        self.stats = StatsWriter(self.args.stats_path or output_dir_of_run(), self.rank, self.info)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: Optional[dict] = None) -> "W2SLM":
        # model_args win over lm-eval's --device/--batch_size (the default LM.create_* would pass both)
        return cls(model_args=dict(arg_dict or {}), lm_eval_config=dict(additional_config or {}))

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: Optional[dict] = None) -> "W2SLM":
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def set_cache_hook(self, cache_hook) -> None:
        """lm-eval attaches its ``--use_cache`` database here: refuse one made with other settings."""
        db = getattr(cache_hook, "dbdict", None)
        if db is not None:
            check_cache_identity(db.filename, cache_identity(self.args.to_dict()))
        super().set_cache_hook(cache_hook)

    def _local(self) -> None:
        if self.strong is None:
            raise ValueError(
                "w2s: loglikelihood and chat templates need the strong model's tokenizer and token "
                "log-probs; with strong_endpoint only generate_until tasks run -- use a local strong "
                "model (strong=PATH_OR_ID)"
            )

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        self._local()
        return super().apply_chat_template(chat_history, add_generation_prompt)

    def get_model_info(self) -> dict:
        return {
            "w2s": {
                **self.info,
                "stats_file": str(self.stats.path) if self.stats.path else None,
                "totals_rank0": dict(self.stats.totals),
            }
        }

    # ------------------------------------------------------------------ loglikelihood

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """HFLM's (local strong model) or the server's prompt log-probs of the continuation (``echo``,
        ``max_tokens=0``), plus the guides' tilt."""
        pairs = [tuple(req.args) for req in requests]
        if self.strong is not None:
            return self._tilted(
                "loglikelihood", requests, pairs, lambda part: HFLM.loglikelihood(self, part, True), disable_tqdm
            )
        if any(not ctx for ctx, _ in pairs):
            raise ValueError(
                "w2s: an endpoint scores a continuation given a non-empty context; this task has an "
                "empty context (use a local strong model for loglikelihood_rolling-style tasks)"
            )

        def served(part):
            return endpoint_loglikelihoods(self.engine.policy, [r.args[0] for r in part], [r.args[1] for r in part])

        return self._tilted("loglikelihood", requests, pairs, served, disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        self._local()
        return self._tilted(
            "loglikelihood_rolling",
            requests,
            [("", req.args[0]) for req in requests],
            lambda part: HFLM.loglikelihood_rolling(self, part, True),
            disable_tqdm,
        )

    def _tilted(self, kind: str, requests, pairs: list, strong_of, disable_tqdm: bool) -> list:
        """``strong_of(chunk)`` (lm-eval's values; its own writes to the request cache muted, they lack the
        tilt) plus the tilt of each (context, continuation) pair, chunk by chunk, each answer cached at once."""
        out, hook = [], self.cache_hook
        bar = tqdm(total=len(requests), desc=f"w2s {kind}", disable=disable_tqdm or self.rank != 0)
        for start in range(0, len(requests), self._ll_chunk):
            part, chunk_pairs = requests[start : start + self._ll_chunk], pairs[start : start + self._ll_chunk]
            self.cache_hook = CacheHook(None)
            try:
                strong = strong_of(part)
            finally:
                self.cache_hook = hook
            tilt = self.tilt(chunk_pairs, rolling=kind == "loglikelihood_rolling") if self.tilt else [0.0] * len(part)
            for req, value, t in zip(part, strong, tilt):
                out.append((value[0] + t, value[1]) if kind == "loglikelihood" else value + t)
                hook.add_partial(kind, req.args, out[-1])
            bar.update(len(part))
        bar.close()
        return out

    # ------------------------------------------------------------------ generate_until

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        items, seen = [], {}
        for i, req in enumerate(requests):  # every request's settings are checked before anything is generated
            context, gen_kwargs = req.args
            if not isinstance(context, str) or not context:
                raise ValueError(f"w2s: request {i} has an empty or non-text context")
            cfg = sampling_config(
                self.args,
                gen_kwargs,
                getattr(req, "task_name", None),
                self.strong.max_length if self.strong is not None else None,
            )
            if cfg.greedy and self.method.budget > 1:
                warning_once(
                    logger,
                    "w2s: %s with greedy decoding draws identical candidates; %s",
                    self.method.spec,
                    greedy_hint(self.args, gen_kwargs),
                )
            key = (context, repr(sorted(gen_kwargs.items())))  # repeats (lm-eval's `repeats`) get distinct seeds
            seen[key] = seen.get(key, -1) + 1
            items.append((context, cfg, i, seen[key]))
        collator = Collator(
            items, sort_fn=lambda x: (-len(x[0]), x[0]), group_fn=lambda x: asdict(x[1]), group_by="gen_kwargs"
        )  # one generation setting per batch, longest first
        bar = tqdm(total=len(requests), desc=f"w2s {self.method.spec}", disable=disable_tqdm or self.rank != 0)
        res = []
        for batch in collator.get_batched(n=self.args.batch_size):
            res += self._generate_batch(requests, batch)
            bar.update(len(batch))
        bar.close()
        return collator.get_original(res)

    def _generate_batch(self, requests, batch: list) -> list[str]:
        cfg, t0 = batch[0][1], time.perf_counter()
        results = self.engine.generate(
            [p for p, *_ in batch],
            self.run,
            cfg,
            batch_size=len(batch),
            seeds=[choice_seed(cfg.seed, p, rep) for p, _, _, rep in batch],
        )
        rows = []
        for (_, _, i, _), r in zip(batch, results):
            self.cache_hook.add_partial("generate_until", requests[i].args, r.text)
            rows.append(result_record(requests[i], r, self.method.spec, cfg))
        self.stats.add(rows, time.perf_counter() - t0)
        return [r.text for r in results]
