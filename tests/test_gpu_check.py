"""The GPU check's rehearsal: `bash bench/gpu_check.sh --rehearse` runs every step of the GPU check with shrunk sizes
on the CPU, so the script cannot fail for a typo on the day a GPU is lent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_rehearsal_passes_every_step(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), OMP_NUM_THREADS="1", PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--rehearse"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert doc["rehearse"] is True
    assert set(doc["steps"]) == {"tests", "guide", "sampling", "oom", "speed smollm2-135m", "speed qwen2.5-0.5b"}
    assert all(step["ok"] for step in doc["steps"].values()), doc["steps"]
    assert doc["steps"]["tests"]["counts"]["passed"] >= 2
    for name in ("speed smollm2-135m", "speed qwen2.5-0.5b"):
        results = doc["steps"][name]["results"]
        assert set(results) == {"seed path", "w2s CBS(4,4,5)", "w2s BoN(16)", "sample 16"}
        assert all(r["peak_memory_gib"] > 0 and r["per_prompt"]["gflop"] for r in results.values())
    md = (tmp_path / "gpu_check.md").read_text()
    assert "REHEARSAL" in md and "| oom | pass" in md and "speed-up vs seed path" in md
    assert (tmp_path / "gpu_check.log").exists()
