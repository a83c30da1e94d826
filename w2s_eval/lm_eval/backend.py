"""``W2SLM``: the ``w2s`` model of lm-evaluation-harness, thin over :func:`w2s_eval.build_engine`.

``lm_eval --model w2s --model_args strong=...,tuned=...,untuned=...,method=cbs,w=4,k=4,l=5``

- ``generate_until``: :meth:`w2s_eval.Engine.generate` with the request's ``until`` /
  ``max_gen_toks`` / ``do_sample`` / ``temperature``, batched by lm-eval's ``Collator``
  (``--batch_size`` requests of one generation setting at a time, longest first).
- ``loglikelihood`` / ``loglikelihood_rolling``: lm-eval's own ``hf`` backend (HFLM) over the
  already loaded strong model -- tokenization, truncation, rolling windows as ``--model hf`` --
  plus the guide tilt (:mod:`.loglik`).
- Ranks (``accelerate launch`` / ``torchrun``): accelerate's; every finished request goes to
  lm-eval's ``--use_cache`` database at once (which records the w2s settings, :mod:`.cache`),
  and its search statistics to a JSONL file beside ``--output_path`` (:mod:`.records`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any, Optional

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import Collator
from lm_eval.utils import simple_parse_args_string
from tqdm.auto import tqdm

from ..engine import build_engine
from ..policy import TransformersPolicy, prompt_seed
from .args import parse_model_args
from .cache import cache_identity, check_cache_identity
from .loglik import LoadedHFLM, Tilt, eft_parts, terms_for
from .records import StatsWriter, greedy_hint, output_dir_from_argv, result_record, sampling_config, versions

logger = logging.getLogger(__name__)

__all__ = ["W2SLM"]


def _accelerator():
    """accelerate's view of a data-parallel launch (``accelerate launch`` / ``torchrun``); None for one process."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return None
    import torch
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def _from_hflm(name: str) -> property:
    """A read-only attribute of the strong model's HFLM (``W2SLM._local``: refused with an endpoint)."""
    return property(lambda self: getattr(self._local(), name), doc=f"HFLM's ``{name}`` of the strong model")


class W2SLM(TemplateLM):
    """Weak-to-strong search as an lm-eval model (see README.md, lm-eval section for every model arg)."""

    backend = "causal"

    def __init__(self, model_args: Optional[dict] = None, lm_eval_config: Optional[dict] = None, **kwargs: Any):
        super().__init__()
        self.args, cli_device = parse_model_args({**(model_args or {}), **kwargs}, lm_eval_config)
        if self.args.trust_remote_code:
            logger.warning("w2s: trust_remote_code is ignored; models load without remote code")
        self.accelerator = _accelerator()
        self.engine = build_engine(self.args.engine_spec(device=self._rank_device(cli_device)))
        # parsed and checked once: a method that cannot run fails here, before any request
        self.run = self.engine.prepare(self.args.method_config())
        self.method = self.run.method
        policy = self.engine.policy
        self.strong = policy.lm if isinstance(policy, TransformersPolicy) else None
        self.tokenizer = self.strong.tokenizer if self.strong is not None else getattr(policy, "tokenizer", None)
        self.batch_size = self.args.batch_size
        ll_batch = self.args.loglik_batch_size or self.batch_size
        self.hf = None if self.strong is None else LoadedHFLM(self.strong, ll_batch, self.accelerator,
                                                              *eft_parts(self.engine, self.method))
        self.tilt = Tilt(terms_for(self.engine, self.method), ll_batch)
        self._ll_chunk = max(1, ll_batch * 8)  # results reach the request cache chunk by chunk
        self._warned: set[str] = set()
        world = {"rank": self.rank, "world_size": self.world_size}
        self.stats = StatsWriter(self.args.stats_path or output_dir_from_argv(), self.rank,
                                 {"model_args": self.args.to_dict(), "method": self.method.spec, "world": world,
                                  "versions": versions()})

    def _rank_device(self, cli_device: Optional[str]) -> Optional[str]:
        """model args' device, else lm-eval's ``--device`` (the CPU when it names CUDA and there is none);
        under a data-parallel launch with no particular GPU asked for, this rank's GPU."""
        import torch

        device = self.args.device
        if device is None and cli_device:
            if cli_device.startswith("cuda") and not torch.cuda.is_available():
                logger.info("w2s: --device %s but CUDA is not available: using the CPU", cli_device)
            else:
                device = cli_device
        if self.accelerator is not None and self.args.device_map:
            logger.warning("w2s: device_map with %d data-parallel ranks: every rank spreads its strong model over "
                           "all GPUs it sees; restrict each rank's GPUs (CUDA_VISIBLE_DEVICES) if that is not "
                           "what you want", self.world_size)
        if self.accelerator is not None and self.accelerator.device.type == "cuda" and device in (None, "auto", "cuda"):
            return str(self.accelerator.device)
        return device

    # ------------------------------------------------------------------ lm-eval plumbing

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

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator else 0

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes if self.accelerator else 1

    @property
    def device(self):
        import torch

        return self.strong.device if self.strong is not None else torch.device("cpu")

    def all_gather(self, tensor):
        return self.accelerator.gather(tensor) if self.accelerator else tensor

    def gather_object(self, obj, dst=0):
        if not self.accelerator:
            return [obj]
        from accelerate.utils import gather_object

        everything = gather_object([obj])
        return everything if self.rank == dst else None

    def barrier(self) -> None:
        if self.accelerator:
            self.accelerator.wait_for_everyone()

    def _local(self) -> LoadedHFLM:
        if self.hf is None:
            raise ValueError("w2s: loglikelihood and chat templates need the strong model's tokenizer and token "
                             "log-probs; with strong_endpoint only generate_until tasks run -- use a local strong "
                             "model (strong=PATH_OR_ID)")
        return self.hf

    tokenizer_name = _from_hflm("tokenizer_name")
    eot_token_id = _from_hflm("eot_token_id")
    prefix_token_id = _from_hflm("prefix_token_id")
    max_length = _from_hflm("max_length")

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, left_truncate_len=None, **kwargs):
        return self._local().tok_encode(string, add_special_tokens, left_truncate_len, **kwargs)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self._local().apply_chat_template(chat_history, add_generation_prompt)

    def get_model_info(self) -> dict:
        return {"w2s": {"model_args": self.args.to_dict(), "method": self.method.spec,
                        "stats_file": str(self.stats.path) if self.stats.path else None,
                        "totals_rank0": dict(self.stats.totals), "versions": versions()}}

    # ------------------------------------------------------------------ loglikelihood

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Local strong model: lm-eval's token path. Endpoint: the server's prompt log-probs
        (``echo``, ``max_tokens=0``) of the continuation, plus the guides' tilt as locally."""
        if self.hf is not None:
            return super().loglikelihood(requests, disable_tqdm)
        from ..endpoint import endpoint_loglikelihoods

        pairs = [tuple(req.args) for req in requests]
        if any(not ctx for ctx, _ in pairs):
            raise ValueError("w2s: an endpoint scores a continuation given a non-empty context; this task has an "
                             "empty context (use a local strong model for loglikelihood_rolling-style tasks)")
        strong = endpoint_loglikelihoods(self.engine.policy, [c for c, _ in pairs], [y for _, y in pairs],
                                         progress=not disable_tqdm and self.rank == 0)
        return self._answer("loglikelihood", pairs, strong, self.tilt(pairs) if self.tilt else None)

    def _answer(self, kind: str, keys: list, strong: list, extra: Optional[list]) -> list:
        """strong value (+ tilt) per request, each written to the request cache at once."""
        out = []
        for key, value, t in zip(keys, strong, extra or [0.0] * len(keys)):
            answer = (value[0] + t, value[1]) if kind == "loglikelihood" else value + t
            out.append(answer)
            if key is not None:
                self.cache_hook.add_partial(kind, key, answer)
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: ((context, continuation), context_ids, continuation_ids) from TemplateLM.loglikelihood."""
        out: list[tuple[float, bool]] = []
        bar = tqdm(total=len(requests), desc="w2s loglikelihood", disable=disable_tqdm or self.rank != 0)
        for start in range(0, len(requests), self._ll_chunk):
            part = requests[start:start + self._ll_chunk]
            strong = self._local()._loglikelihood_tokens(part, disable_tqdm=True)
            pairs = [pair for pair, _, _ in part]
            out += self._answer("loglikelihood", pairs, strong, self.tilt(pairs) if self.tilt else None)
            bar.update(len(part))
        bar.close()
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out: list[float] = []
        bar = tqdm(total=len(requests), desc="w2s loglikelihood_rolling", disable=disable_tqdm or self.rank != 0)
        for start in range(0, len(requests), self._ll_chunk):
            part = requests[start:start + self._ll_chunk]
            strong = self._local().loglikelihood_rolling(part, disable_tqdm=True)
            texts = [("", req.args[0]) for req in part]
            out += self._answer("loglikelihood_rolling", [(t,) for _, t in texts], strong,
                                self.tilt(texts, rolling=True) if self.tilt else None)
            bar.update(len(part))
        bar.close()
        return out

    # ------------------------------------------------------------------ generate_until

    def _warn_once(self, key: str, msg: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(msg, *args)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        configs = {}  # every request's settings are checked before anything is generated
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            if not isinstance(context, str) or not context:
                raise ValueError(f"w2s: request {i} has an empty or non-text context")
            cfg = sampling_config(self.args, gen_kwargs, getattr(req, "task_name", None), self._warn_once,
                                  self.strong.max_length if self.strong is not None else None)
            if cfg.greedy and self.method.budget > 1:
                hint = greedy_hint(self.args, gen_kwargs)
                self._warn_once(f"greedy:{hint}", "w2s: %s with greedy decoding draws identical candidates; %s",
                                self.method.spec, hint)
            configs[i] = cfg
        seen: dict[tuple, int] = {}
        items = []
        for i, req in enumerate(requests):  # repeats of one request (lm-eval's `repeats`) get distinct seeds
            key = (req.args[0], repr(sorted(req.args[1].items())))
            seen[key] = seen.get(key, -1) + 1
            items.append((req.args[0], configs[i], i, seen[key]))
        collator = Collator(items, sort_fn=lambda x: (-len(x[0]), x[0]), group_fn=lambda x: asdict(x[1]),
                            group_by="gen_kwargs")  # one generation setting per batch, longest first
        bar = tqdm(total=len(requests), desc=f"w2s {self.method.spec}", disable=disable_tqdm or self.rank != 0)
        res = []
        for batch in collator.get_batched(n=self.batch_size):
            res += self._generate_batch(requests, batch)
            bar.update(len(batch))
        bar.close()
        return collator.get_original(res)

    def _generate_batch(self, requests, batch: list) -> list[str]:
        cfg = batch[0][1]
        prompts = [p for p, _, _, _ in batch]
        seeds = [prompt_seed(cfg.seed, p if rep == 0 else f"{p}\x00repeat{rep}") for p, _, _, rep in batch]
        t0 = time.perf_counter()
        results = self.engine.generate(prompts, self.run, cfg, seeds=seeds, batch_size=len(batch))
        rows = []
        for (_, _, i, _), r in zip(batch, results):
            self.cache_hook.add_partial("generate_until", requests[i].args, r.text)
            rows.append(result_record(requests[i], r, "generate_until", self.method.spec, cfg))
        self.stats.add(rows, time.perf_counter() - t0)
        return [r.text for r in results]
