"""Training the world's small models with TRL: the untuned guide (SFTTrainer), the tuned
guide (DPOTrainer) and the reward model (RewardTrainer).

The guides share the strong model's tokenizer (so EFT applies). The untuned guide is
a small Llama trained from scratch whose tied embeddings start as a PCA projection
of the strong model's embedding matrix (scaled to std 0.02): a from-scratch model
learns far faster from there than from random embeddings, and a truncated copy of
the strong model starts far worse. Every trainer uses CUDA when it is there
(bfloat16 where supported) and float32 on CPU; gradient checkpointing is off (these
models are tiny, and it only costs time).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from ..checks import check_positive_int
from ..extras import require

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = ["GuideShape", "TrainSettings", "init_guide", "train_sft", "train_dpo", "train_reward_model"]


@dataclass(frozen=True)
class GuideShape:
    """The small Llama of the guides (and of the reward model, which starts from the untuned guide)."""

    layers: int = 4
    hidden: int = 256
    heads: int = 4
    intermediate: int = 1024
    max_positions: int = 1024

    def __post_init__(self):
        for name in ("layers", "hidden", "heads", "intermediate", "max_positions"):
            value = getattr(self, name)
            check_positive_int(f"guide {name}", value)
        if self.hidden % self.heads:
            raise ValueError(f"guide hidden ({self.hidden}) must be a multiple of heads ({self.heads})")


@dataclass(frozen=True)
class TrainSettings:
    """One trainer's optimisation settings (steps=None: run ``epochs`` epochs)."""

    lr: float
    batch_size: int = 16
    epochs: float = 1.0
    steps: Optional[int] = None
    max_length: int = 128
    warmup: float = 0.05  # fraction of the steps

    def __post_init__(self):
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("steps", self.steps, allow_none=True)
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs!r}")


def _precision() -> dict:
    """bfloat16 mixed precision on GPUs that have it, float32 elsewhere (bf16 on CPU is slow here)."""
    import torch

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": cuda and not bf16, "use_cpu": not cuda}


def _no_checkpointing() -> dict:
    """Activation checkpointing off (TRL turns it on by default), under the name this transformers takes
    (``gradient_checkpointing`` is a deprecated alias since 5.x)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": False}


def _common_args(s: TrainSettings, seed: int, out: str, n_examples: int, progress: bool) -> dict:
    steps = s.steps or max(1, int(round(s.epochs * n_examples / s.batch_size)))
    return dict(
        output_dir=out,
        per_device_train_batch_size=s.batch_size,
        learning_rate=s.lr,
        num_train_epochs=s.epochs,
        max_steps=s.steps or -1,
        warmup_steps=int(s.warmup * steps),
        lr_scheduler_type="cosine",
        max_length=s.max_length,
        **_no_checkpointing(),
        save_strategy="no",
        report_to="none",
        logging_steps=max(1, steps // 10),
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
        **_precision(),
    )


def _plain_lm_head(model, metrics: bool) -> None:
    """On the CPU, swap TRL's chunked log-prob head (``fused_lm_head=True``) for a plain one, the same numbers.

    TRL 1.16 patches the model with a chunked kernel that, off Triton devices, scores every position in tiles and
    recomputes the projection in the backward pass: a guide step took 2x a plain forward/backward here. This head
    runs the backbone, projects only the positions that have a label, and takes ``log_softmax``; the metrics TRL
    logs (entropy, mean logit, top-1; ``metrics``) are computed without gradient, as TRL only reads them detached.
    """
    import torch

    require("trl", "world")
    from trl.trainer.utils import FusedCausalLMOutput

    trl_forward = model.forward

    def forward(*args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            return trl_forward(
                *args, labels=labels, shift_labels=shift_labels, num_items_in_batch=num_items_in_batch, **kwargs
            )
        hidden = model.base_model(*args, **{**kwargs, "use_cache": False}).last_hidden_state
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        mask = labels != -100
        logits = model.get_output_embeddings()(hidden[mask]).float()  # [N, V], N labelled positions
        logp = logits.log_softmax(-1)
        picked = logp.gather(-1, labels[mask].unsqueeze(-1)).squeeze(-1)
        fields = {"log_probs": picked}
        if metrics:
            with torch.no_grad():
                fields.update(
                    entropy=-(logp.exp() * logp).sum(-1), mean_logits=logits.mean(-1), is_top1=picked >= logp.amax(-1)
                )
        full = {k: v.new_zeros(mask.shape).masked_scatter(mask, v) for k, v in fields.items()}
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-picked.sum() / count, label_mask=mask, **full)

    model.forward = forward


def _plain_heads(trainer) -> str:
    """Use :func:`_plain_lm_head` for the trainer's model and reference model on the CPU; returns which head ran."""
    if next(trainer.model.parameters()).device.type != "cpu":
        return "trl fused"
    _plain_lm_head(trainer.model, metrics=True)
    if getattr(trainer, "ref_model", None) is not None:
        _plain_lm_head(trainer.ref_model, metrics=False)
    return "plain"


def _log_history(trainer) -> list[dict]:
    keep = ("step", "loss", "train_loss", "rewards/accuracies", "rewards/margins", "accuracy", "train_runtime")
    return [
        {k: round(v, 4) if isinstance(v, float) else v for k, v in h.items() if k in keep}
        for h in trainer.state.log_history
    ]


def init_guide(tokenizer, strong_embeddings: Optional[torch.Tensor], shape: GuideShape, seed: int):
    """A fresh Llama guide for ``tokenizer``; embeddings from a PCA of ``strong_embeddings`` [V, H]."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True,
        initializer_range=0.02,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    if strong_embeddings is not None:
        if strong_embeddings.shape[0] != len(tokenizer):
            raise ValueError(
                f"strong embeddings have {strong_embeddings.shape[0]} rows but the tokenizer has "
                f"{len(tokenizer)} tokens; the guide must share the strong model's tokenizer"
            )
        E = strong_embeddings.float()
        q = min(shape.hidden, E.shape[1], E.shape[0])
        centred = E - E.mean(0)
        vh = torch.linalg.svd(centred, full_matrices=False).Vh  # exact principal directions (deterministic)
        proj = centred @ vh[:q].T
        proj = proj * (0.02 / proj.std())
        emb = torch.randn(E.shape[0], shape.hidden) * 0.02
        emb[:, :q] = proj
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(emb)
        model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def train_sft(
    model, tokenizer, texts: Sequence[str], settings: TrainSettings, seed: int, out_dir: Path, progress: bool = True
) -> dict:
    """Train ``model`` on ``texts`` with TRL's SFTTrainer (language modelling, first max_length tokens)."""
    require("datasets", "world")
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            **_common_args(settings, seed, scratch, len(texts), progress),
            packing=False,
            dataset_text_field="text",
            dataset_num_proc=None,
        )
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=Dataset.from_dict({"text": list(texts)}), processing_class=tokenizer
        )
        head = _plain_heads(trainer)
        result = trainer.train()
        trainer.model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return {
        "trainer": "trl.SFTTrainer",
        "lm_head": head,
        "examples": len(texts),
        "steps": trainer.state.global_step,
        "train_loss": round(float(result.training_loss), 4),
        "runtime_s": round(result.metrics["train_runtime"], 1),
        "log": _log_history(trainer),
    }


def train_dpo(
    untuned_dir: Path,
    pairs: Sequence[dict],
    settings: TrainSettings,
    beta: float,
    seed: int,
    out_dir: Path,
    progress: bool = True,
) -> dict:
    """The tuned guide: the untuned guide trained with TRL's DPOTrainer on (prompt, chosen, rejected) text pairs."""
    import torch

    require("datasets", "world")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(untuned_dir)
    model = AutoModelForCausalLM.from_pretrained(untuned_dir, dtype=torch.float32)
    data = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs])
    with tempfile.TemporaryDirectory() as scratch:
        common = _common_args(settings, seed, scratch, len(pairs), progress)
        common["lr_scheduler_type"] = "linear"
        args = DPOConfig(**common, beta=beta, dataset_num_proc=None)
        trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        head = _plain_heads(trainer)
        result = trainer.train()
        trainer.model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
    return {
        "trainer": "trl.DPOTrainer",
        "lm_head": head,
        "pairs": len(pairs),
        "beta": beta,
        "steps": trainer.state.global_step,
        "train_loss": round(float(result.training_loss), 4),
        "runtime_s": round(result.metrics["train_runtime"], 1),
        "log": _log_history(trainer),
    }


def rm_example(prompt: str, chosen: str, rejected: str, chat: bool) -> dict:
    """A RewardTrainer example in the form :class:`w2s_eval.scorers.RewardModelScorer` reads at scoring time:
    conversational (user prompt, assistant response) when the tokenizer has a chat template, else plain text."""
    if chat:
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def train_reward_model(
    untuned_dir: Path, pairs: Sequence[dict], settings: TrainSettings, seed: int, out_dir: Path, progress: bool = True
) -> dict:
    """A one-output reward model (initialised from the untuned guide) trained with TRL's RewardTrainer."""
    import torch

    require("datasets", "world")
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tok = AutoTokenizer.from_pretrained(untuned_dir)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(untuned_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    chat = bool(getattr(tok, "chat_template", None))
    if not chat:
        # RewardTrainer appends EOS to plain text; with pad == EOS the model would pool elsewhere than at scoring
        logger.warning("reward-model tokenizer has no chat template: scoring reads prompt+response plain")
    data = Dataset.from_list([rm_example(p["prompt"], p["chosen"], p["rejected"], chat) for p in pairs])
    with tempfile.TemporaryDirectory() as scratch:
        args = RewardConfig(**_common_args(settings, seed, scratch, len(pairs), progress), dataset_num_proc=None)
        trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        result = trainer.train()
        trainer.model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
    return {
        "trainer": "trl.RewardTrainer",
        "pairs": len(pairs),
        "init": "untuned guide",
        "chat_format": chat,
        "steps": trainer.state.global_step,
        "train_loss": round(float(result.training_loss), 4),
        "runtime_s": round(result.metrics["train_runtime"], 1),
        "log": _log_history(trainer),
    }
