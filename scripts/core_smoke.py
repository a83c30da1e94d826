"""The core install (``pip install w2s-eval``, no extras) runs CBS from Python, and a front end whose extra is
missing says which extra to install. CI runs this in a venv with the core alone:

    python3 -m venv /tmp/core && /tmp/core/bin/pip install torch==2.13.0 . && /tmp/core/bin/python scripts/core_smoke.py
"""

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # devtools/ (after site-packages: the installed w2s_eval)

OPTIONAL = ("lm_eval", "alpaca_eval", "trl", "fastapi", "openai", "sklearn", "matplotlib", "datasets")


def main() -> int:
    present = [m for m in OPTIONAL if importlib.util.find_spec(m) is not None]
    assert not present, f"not a core-only install: {present} are installed"
    import w2s_eval
    from devtools.toy import build_causal_lm, build_tokenizer
    from w2s_eval import SamplingConfig, build_engine
    from w2s_eval.extras import MissingExtraError

    with tempfile.TemporaryDirectory() as tmp:
        tok = f"{tmp}/tok"
        build_tokenizer(tok)
        dirs = {
            name: build_causal_lm(f"{tmp}/{name}", tok, seed=seed)
            for seed, name in enumerate(("strong", "tuned", "untuned"))
        }
        engine = build_engine(
            dirs["strong"], tuned=dirs["tuned"], untuned=dirs["untuned"], dtype="float32", device="cpu"
        )
        cfg = SamplingConfig(max_new_tokens=12, seed=0)
        [cbs] = engine.generate(["The film was"], "cbs:w=2,k=2,l=4", cfg)
        [eft] = engine.generate(["The film was"], "eft:beta=1", cfg)
        assert cbs.stats["samples"] > 1 and len(cbs.beams) == 2 and eft.text is not None
    for module, extra in (
        ("w2s_eval.lm_eval_backend", "lm-eval"),
        ("w2s_eval.serve", "serve"),
        ("w2s_eval.tilt", "lm-eval"),
    ):
        try:
            importlib.import_module(module)
        except MissingExtraError as e:
            assert f"w2s-eval[{extra}]" in str(e), str(e)
        else:
            raise AssertionError(f"{module} imported without its extra [{extra}]")
    out = subprocess.run([sys.executable, "-m", "w2s_eval.cli", "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 2 and "w2s-eval[serve]" in out.stderr, (out.returncode, out.stderr[-2000:])
    print(f"core install {w2s_eval.__version__}: CBS and EFT ran; front ends name their extras")
    return 0


if __name__ == "__main__":
    sys.exit(main())
