"""Shared helpers of the lm-eval backend tests: test tasks, a Python with the startup hook, CLI runs."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LM_EVAL_SCRIPT = Path(sys.executable).with_name("lm_eval")  # the stock console script of lm-eval

GEN_DOCS = [
    {"prompt": p, "target": "x"}
    for p in ["The movie was", "I loved the", "Hello, world! It's", "This film is a", "The actor and the director"]
]
MC_DOCS = [
    {"question": q, "choices": c, "label": y}
    for q, c, y in [
        ("The movie was", [" great", " bad", " boring"], 0),
        ("I", [" loved it", " hated it"], 1),
        ("The plot ", ["was good", "was awful and sad"], 0),  # trailing space moves to the continuation
        ("We", [" film", " scene"], 1),
    ]
]

GEN_YAML = """task: t_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{target}}}}"
generation_kwargs:
  until: ["\\n\\n", "."]
  max_gen_toks: 10
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""

MC_YAML = """task: t_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def task_utils(task: str):
    """A task folder's ``utils.py`` (tasks/<task>/utils.py), loaded as lm-eval loads it for ``!function utils.x``."""
    spec = importlib.util.spec_from_file_location(f"{task}_utils", REPO / "tasks" / task / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tasks(root: Path) -> Path:
    """The repo's tasks/ plus the two test tasks (t_gen: generate_until, t_mc: multiple choice)."""
    tasks = root / "tasks"
    shutil.copytree(REPO / "tasks", tasks, ignore=shutil.ignore_patterns("__pycache__"))
    for name, docs, yaml in (("gen", GEN_DOCS, GEN_YAML), ("mc", MC_DOCS, MC_YAML)):
        data = root / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
        (tasks / f"t_{name}.yaml").write_text(yaml.format(data=data), encoding="utf-8")
    return tasks


def hook_python(root: Path) -> str:
    """A venv whose site-packages holds the w2s .pth hook (as a wheel install puts it) and
    path entries to this environment's packages; its python runs the stock lm_eval script."""
    import sysconfig

    from w2s_eval.lm_eval_backend import install_hook

    venv = root / "hookvenv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    paths = [sysconfig.get_paths()["purelib"], str(REPO)]
    (Path(site) / "_w2s_test_paths.pth").write_text("\n".join(paths) + "\n", encoding="utf-8")
    install_hook(site)
    return str(py)


def env(extra: dict | None = None) -> dict:
    e = dict(os.environ)
    e.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    e.pop("W2S_SENTIMENT_SCORER", None)
    e.pop("W2S_INSTRUCT_RM", None)
    e.update(extra or {})
    return e


def run(cmd: list[str], cwd: Path, extra_env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=str(cwd), env=env(extra_env), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(
            f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
        )
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def results(out: Path) -> dict:
    files = sorted(glob.glob(str(out / "**" / "results_*.json"), recursive=True))
    assert files, f"no results JSON under {out}"
    return json.loads(Path(files[-1]).read_text(encoding="utf-8"))


def samples(out: Path, task: str) -> dict[int, dict]:
    files = sorted(glob.glob(str(out / "**" / f"samples_{task}_*.jsonl"), recursive=True))
    assert files, f"no samples of {task} under {out}"
    return {r["doc_id"]: r for r in map(json.loads, Path(files[-1]).read_text(encoding="utf-8").splitlines())}


def stats_rows(out: Path) -> list[list[dict]]:
    """Per stats file (one per rank, in rank order): its request rows (header dropped)."""
    files = sorted(glob.glob(str(out / "w2s_requests_*.jsonl")))
    by_rank = {}
    for f in files:
        lines = [json.loads(x) for x in Path(f).read_text(encoding="utf-8").splitlines()]
        assert lines[0].get("header") is True and f.endswith(f"_rank{lines[0]['world']['rank']}.jsonl")
        by_rank[lines[0]["world"]["rank"]] = lines[1:]
    return [by_rank[r] for r in sorted(by_rank)]


# Two code paths (or two machines) add the float32 log-probs of a continuation in another order; the sums
# agree to a few float32 ulps of the summed magnitudes (a sum of -39 differs by ~1e-5 between CPUs), so
# equality claims use a tolerance relative to the magnitude of what was summed, never a fixed absolute one.
F32_REL = 1e-6


def f32_approx(expected, *terms, rel: float = F32_REL):
    """``pytest.approx`` for float32 sums: ``expected`` (a number or a list) within ``rel`` of the summed
    magnitude (``terms``: the magnitudes of the parts when ``expected`` is a combination; default itself)."""
    if isinstance(expected, (list, tuple)):
        return [f32_approx(e, rel=rel) for e in expected]
    scale = sum(abs(t) for t in terms) if terms else abs(expected)
    return pytest.approx(expected, rel=0, abs=rel * max(scale, 1.0))
