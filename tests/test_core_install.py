"""``pip install w2s-eval`` without extras: a fresh venv with the core dependencies alone runs CBS and EFT from
Python, and the front ends name the extra they need (scripts/core_smoke.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_core_install_runs_cbs_and_names_missing_extras(tmp_path):
    venv = tmp_path / "core"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    pip = subprocess.run(
        [py, "-m", "pip", "install", "-q", "torch==2.13.0", str(ROOT)], capture_output=True, text=True, timeout=900
    )
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-3000:]
    out = subprocess.run(
        [py, str(ROOT / "scripts" / "core_smoke.py")], capture_output=True, text=True, timeout=600, cwd=str(tmp_path)
    )  # not the repo root: the installed package, not the source tree
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "CBS and EFT ran" in out.stdout
