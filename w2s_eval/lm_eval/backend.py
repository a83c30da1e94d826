"""``W2SLM``: the ``w2s`` model of lm-evaluation-harness, thin over :func:`w2s_eval.build_engine`.

``lm_eval --model w2s --model_args strong=...,tuned=...,untuned=...,method=cbs,w=4,k=4,l=5``

- ``generate_until``: :meth:`w2s_eval.Engine.generate` with the request's ``until`` /
  ``max_gen_toks`` / ``do_sample`` / ``temperature``, batched by ``--batch_size``.
- ``loglikelihood`` / ``loglikelihood_rolling``: the strong model's log-probs, tokenized and
  computed as lm-eval's ``hf`` backend does, plus the guide tilt (see :mod:`.loglik`).
- Every finished request goes to lm-eval's ``--use_cache`` database at once, and its search
  statistics to a JSONL file beside ``--output_path`` (:mod:`.records`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any, Optional

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import has_bos_prefix, normalize_gen_kwargs
from lm_eval.utils import simple_parse_args_string
from tqdm.auto import tqdm

from ..config import EFTMethod, SamplingConfig
from ..engine import build_engine
from ..policy import TransformersPolicy
from ..sampling import prompt_seed
from .args import parse_model_args
from .cache import cache_identity, check_cache_identity
from .loglik import (TokenRequest, eft_combiner, model_max_length, rolling_requests, score_tokens, tilt,
                     tilt_terms)
from .parallel import Collectives, detect_world, rank_device
from .records import StatsWriter, output_dir_from_argv, result_record, versions

logger = logging.getLogger(__name__)

__all__ = ["W2SLM"]

_SAMPLING_KEYS = {"until", "max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens", "do_sample",
                  "temperature", "top_k", "top_p"}


class W2SLM(TemplateLM):
    """Weak-to-strong search as an lm-eval model (see README.md, lm-eval section for every model arg)."""

    backend = "causal"

    def __init__(self, model_args: Optional[dict] = None, lm_eval_config: Optional[dict] = None, **kwargs: Any):
        super().__init__()
        import torch

        self.args, cli_device = parse_model_args({**(model_args or {}), **kwargs}, lm_eval_config)
        if self.args.trust_remote_code:
            logger.warning("w2s: trust_remote_code is ignored; models load without remote code")
        self.world = detect_world()
        device = self.args.device
        if device is None and cli_device:
            if cli_device.startswith("cuda") and not torch.cuda.is_available():
                logger.info("w2s: --device %s but CUDA is not available: using the CPU", cli_device)
            else:
                device = cli_device
        device = rank_device(device, self.world, torch.cuda.is_available(), torch.cuda.device_count())
        if self.world.distributed and self.args.device_map:
            logger.warning("w2s: device_map with %d data-parallel ranks: every rank spreads its strong model over "
                           "all GPUs it sees; restrict each rank's GPUs (CUDA_VISIBLE_DEVICES) if that is not "
                           "what you want", self.world.world_size)
        self._rank, self._world_size = self.world.rank, self.world.world_size
        self.method = self.args.method_config()
        self.engine = build_engine(**self.args.engine_kwargs(device))
        self.engine.check(self.method)  # a method that cannot run fails here, before any request
        policy = self.engine.policy
        self.strong = policy.lm if isinstance(policy, TransformersPolicy) else None
        self.tokenizer = self.strong.tokenizer if self.strong is not None else getattr(policy, "tokenizer", None)
        self._device = self.strong.device if self.strong is not None else torch.device("cpu")
        self._collectives = Collectives(self.world, self._device)
        self.terms = tilt_terms(self.engine.scorer) if self.method.name in ("bon", "cbs") else []
        self.batch_size = self.args.batch_size
        self._warned: set[str] = set()
        out_dir = self.args.stats_path or output_dir_from_argv()
        self.stats = StatsWriter(out_dir, self.world.rank, {"model_args": self.args.to_dict(), "method": self.method.spec,
                                                            "world": asdict(self.world), "versions": versions()})

    # ------------------------------------------------------------------ lm-eval plumbing

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: Optional[dict] = None) -> "W2SLM":
        # model_args win over lm-eval's --device/--batch_size (the default LM.create_* would pass both)
        return cls(model_args=dict(arg_dict or {}), lm_eval_config=dict(additional_config or {}))

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: Optional[dict] = None) -> "W2SLM":
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def device(self):
        return self._device

    def set_cache_hook(self, cache_hook) -> None:
        """lm-eval attaches its ``--use_cache`` database here: refuse one made with other settings."""
        db = getattr(cache_hook, "dbdict", None)
        if db is not None:
            check_cache_identity(db.filename, cache_identity(self.args.to_dict()))
        super().set_cache_hook(cache_hook)

    def all_gather(self, tensor):
        return self._collectives.all_gather(tensor)

    def gather_object(self, obj, dst=0):
        return self._collectives.gather_object(obj, dst)

    def barrier(self) -> None:
        self._collectives.barrier()

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("w2s: this strong engine exposes no tokenizer; chat templates and loglikelihood need a "
                             "local strong model (strong=PATH_OR_ID)")
        return self.tokenizer

    @property
    def tokenizer_name(self) -> str:
        return self._need_tokenizer().name_or_path.replace("/", "__")

    @property
    def eot_token_id(self) -> int:
        return self._need_tokenizer().eos_token_id

    @property
    def prefix_token_id(self) -> int:
        tok = self._need_tokenizer()
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    @property
    def max_length(self) -> int:
        return model_max_length(self._local_strong())

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, left_truncate_len=None, **kwargs):
        """As lm-eval's hf backend: the tokenizer's special tokens, but no second BOS."""
        tok = self._need_tokenizer()
        kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and has_bos_prefix(string, tok.decode(self.prefix_token_id)):
            kw["add_special_tokens"] = False
        ids = tok.encode(string, **kw)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self._need_tokenizer().apply_chat_template(chat_history, tokenize=False,
                                                          add_generation_prompt=add_generation_prompt,
                                                          continue_final_message=not add_generation_prompt)

    def get_model_info(self) -> dict:
        return {"w2s": {"model_args": self.args.to_dict(), "method": self.method.spec,
                        "stats_file": str(self.stats.path) if self.stats.path else None,
                        "totals_rank0": dict(self.stats.totals), "versions": versions()}}

    def _warn_once(self, key: str, msg: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(msg, *args)

    # ------------------------------------------------------------------ loglikelihood

    def _local_strong(self):
        if self.strong is None:
            raise ValueError("w2s: loglikelihood needs the strong model's token log-probs; with strong_endpoint "
                             "only generate_until tasks run -- use a local strong model (strong=PATH_OR_ID)")
        return self.strong

    @property
    def _ll_batch(self) -> int:
        return self.args.loglik_batch_size or self.batch_size

    def _strong_scores(self, reqs: list[TokenRequest]) -> list[tuple[float, bool]]:
        strong = self._local_strong()
        if isinstance(self.method, EFTMethod):
            lms = [strong, *self.engine.tuned, self.engine.untuned]
            return score_tokens(lms, reqs, self._ll_batch, self.max_length, eft_combiner(self.engine.eft_betas(self.method)))
        return score_tokens([strong], reqs, self._ll_batch, self.max_length)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Local strong model: lm-eval's token path. Endpoint: the server's prompt log-probs
        (``echo``, ``max_tokens=0``) of the continuation, plus the guides' tilt as locally."""
        if self.strong is not None:
            return super().loglikelihood(requests, disable_tqdm)
        from ..endpoint import endpoint_loglikelihoods

        pairs = [tuple(req.args) for req in requests]
        if any(not ctx for ctx, _ in pairs):
            raise ValueError("w2s: an endpoint scores a continuation given a non-empty context; this task has an "
                             "empty context (use a local strong model for loglikelihood_rolling-style tasks)")
        strong = endpoint_loglikelihoods(self.engine.policy, [c for c, _ in pairs], [y for _, y in pairs],
                                         progress=not disable_tqdm and self.rank == 0)
        extra = tilt(self.terms, pairs, self._ll_batch) if self.terms else [0.0] * len(pairs)
        out = []
        for pair, (lp, greedy), t in zip(pairs, strong, extra):
            out.append((lp + t, greedy))
            self.cache_hook.add_partial("loglikelihood", pair, out[-1])
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: ((context, continuation), context_ids, continuation_ids) from TemplateLM.loglikelihood."""
        self._local_strong()
        out: list[tuple[float, bool]] = []
        chunk = max(1, self._ll_batch * 8)  # results reach the request cache chunk by chunk
        bar = tqdm(total=len(requests), desc="w2s loglikelihood", disable=disable_tqdm or self.rank != 0)
        for start in range(0, len(requests), chunk):
            part = requests[start:start + chunk]
            strong = self._strong_scores([TokenRequest(list(c), list(y)) for _, c, y in part])
            extra = tilt(self.terms, [pair for pair, _, _ in part], self._ll_batch) if self.terms else [0.0] * len(part)
            for (pair, _, _), (lp, greedy), t in zip(part, strong, extra):
                answer = (lp + t, greedy)
                out.append(answer)
                if pair is not None:
                    self.cache_hook.add_partial("loglikelihood", pair, answer)
            bar.update(len(part))
        bar.close()
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        strong = self._local_strong()
        out = []
        bar = tqdm(total=len(requests), desc="w2s loglikelihood_rolling", disable=disable_tqdm or self.rank != 0)
        for req in requests:
            (text,) = req.args
            windows = rolling_requests(strong, text, self.max_length, self.prefix_token_id, self.tok_encode)
            total = sum(lp for lp, _ in self._strong_scores(windows)) if windows else 0.0
            if self.terms:
                total += tilt(self.terms, [("", text)], self._ll_batch, rolling=True)[0]
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            bar.update(1)
        bar.close()
        return out

    # ------------------------------------------------------------------ generate_until

    def _sampling(self, gen_kwargs: Any, task: Optional[str]) -> SamplingConfig:
        """The request's generation settings; model args fill what the task leaves open."""
        where = f" (task {task})" if task else ""
        if not isinstance(gen_kwargs, dict):
            raise ValueError(f"w2s: generation kwargs must be a dict{where}, got {gen_kwargs!r}")
        until = gen_kwargs.get("until")
        if until is not None and not (isinstance(until, str) or
                                      (isinstance(until, list) and all(isinstance(s, str) for s in until))):
            raise ValueError(f"w2s: 'until'{where} must be a list of strings (or one string), got {until!r}; "
                             "fix generation_kwargs.until in the task YAML or --gen_kwargs")
        ignored = sorted(set(gen_kwargs) - _SAMPLING_KEYS)
        if ignored:
            self._warn_once(f"ignored:{ignored}", "w2s: ignoring generation kwargs %s (supported: %s)", ignored,
                            ", ".join(sorted(_SAMPLING_KEYS)))
        kw = normalize_gen_kwargs(gen_kwargs, self.args.max_gen_toks)
        stop = tuple(s for s in kw["until"] if s)
        a = self.args
        if gen_kwargs.get("do_sample") is False:
            temperature = 0.0
        elif "temperature" in gen_kwargs:
            temperature = float(gen_kwargs["temperature"])
        elif gen_kwargs.get("do_sample") is True:
            temperature = a.temperature if a.temperature is not None else 1.0
        else:
            temperature = a.temperature if a.temperature is not None else 0.0
        top_k = gen_kwargs.get("top_k", a.top_k or 0)
        top_p = gen_kwargs.get("top_p", 1.0 if a.top_p is None else a.top_p)
        try:
            cfg = SamplingConfig(temperature=temperature, top_k=int(top_k or 0), top_p=float(top_p),
                                 max_new_tokens=int(kw["max_gen_toks"]), stop=stop, seed=a.seed, truncation=a.truncation)
        except ValueError as e:
            raise ValueError(f"w2s: bad generation settings{where}: {e}") from None
        if cfg.greedy and self.method.budget > 1:
            self._warn_once("greedy", "w2s: %s with greedy decoding draws identical candidates; give the task "
                            "do_sample/temperature or the model arg temperature=0.7", self.method.spec)
        return cfg

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        # check every request before generating anything
        plans: dict[SamplingConfig, list[int]] = {}
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            if not isinstance(context, str) or not context:
                raise ValueError(f"w2s: request {i} has an empty or non-text context")
            plans.setdefault(self._sampling(gen_kwargs, getattr(req, "task_name", None)), []).append(i)
        res: list[Optional[str]] = [None] * len(requests)
        seen: dict[tuple, int] = {}
        seeds = []
        for req in requests:  # repeats of one request (lm-eval's `repeats`) get distinct seeds
            key = (req.args[0], repr(sorted(req.args[1].items())))
            j = seen[key] = seen.get(key, -1) + 1
            seeds.append(j)
        bar = tqdm(total=len(requests), desc=f"w2s {self.method.spec}", disable=disable_tqdm or self.rank != 0)
        for cfg, idx in plans.items():
            idx = sorted(idx, key=lambda i: -len(requests[i].args[0]))
            for start in range(0, len(idx), self.batch_size):
                batch = idx[start:start + self.batch_size]
                prompts = [requests[i].args[0] for i in batch]
                batch_seeds = [prompt_seed(cfg.seed, p if seeds[i] == 0 else f"{p}\x00repeat{seeds[i]}")
                               for p, i in zip(prompts, batch)]
                t0 = time.perf_counter()
                results = self.engine.generate(prompts, self.method, cfg, seeds=batch_seeds, batch_size=len(batch))
                rows = []
                for i, r in zip(batch, results):
                    res[i] = r.text
                    self.cache_hook.add_partial("generate_until", requests[i].args, r.text)
                    rows.append(result_record(requests[i], r, "generate_until", self.method.spec, cfg))
                self.stats.add(rows, time.perf_counter() - t0)
                bar.update(len(batch))
        bar.close()
        return res  # type: ignore[return-value]
