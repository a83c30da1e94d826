"""The real lm-eval CLI in subprocesses on the tiny models: ``lm_eval --model w2s`` through the
startup hook, ``--model hf`` in the same environment, the ``--use_cache`` rerun through
``python -m w2s_eval.lm_eval_backend``, and a two-rank data-parallel run (torchrun, gloo on CPU).

Four lm-eval runs in all (module fixtures); each test checks one thing of their outputs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_lm_eval_helpers import (
    LM_EVAL_SCRIPT,
    MC_DOCS,
    env,
    f32_approx,
    free_port,
    hook_python,
    results,
    run,
    samples,
    stats_rows,
    write_tasks,
)

pytestmark = pytest.mark.slow  # processes, servers or training: deselect with -m 'not slow'

LIMIT = "4"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, toy_dirs):
    root = tmp_path_factory.mktemp("lmeval_cli")
    return {"root": root, "tasks": write_tasks(root), "py": hook_python(root), "toy": toy_dirs}


def _w2s_args(toy):
    return f"strong={toy['strong']},method=base,dtype=float32"


@pytest.fixture(scope="module")
def run_w2s(setup):
    """Stock lm_eval script, --model w2s, base method: both test tasks and both w2s tasks."""
    s, out = setup, setup["root"] / "out_w2s"
    p = run(
        [
            s["py"],
            str(LM_EVAL_SCRIPT),
            "--model",
            "w2s",
            "--model_args",
            _w2s_args(s["toy"]),
            "--tasks",
            "t_gen,t_mc,w2s_imdb_sentiment,w2s_instruct",
            "--include_path",
            str(s["tasks"]),
            "--limit",
            LIMIT,
            "--batch_size",
            "3",
            "--output_path",
            str(out),
            "--log_samples",
            "--use_cache",
            str(s["root"] / "cache" / "lm"),
            "--gen_kwargs",
            "max_gen_toks=10",
        ],
        s["root"],
        {"W2S_SENTIMENT_SCORER": f"classifier:{s['toy']['clf']}", "W2S_INSTRUCT_RM": f"rm:{s['toy']['rm']}"},
    )
    return out, p


@pytest.fixture(scope="module")
def run_hf(setup):
    s, out = setup, setup["root"] / "out_hf"
    run(
        [
            s["py"],
            str(LM_EVAL_SCRIPT),
            "--model",
            "hf",
            "--model_args",
            f"pretrained={s['toy']['strong']},dtype=float32",
            "--device",
            "cpu",
            "--tasks",
            "t_gen,t_mc",
            "--include_path",
            str(s["tasks"]),
            "--limit",
            LIMIT,
            "--batch_size",
            "3",
            "--output_path",
            str(out),
            "--log_samples",
            "--gen_kwargs",
            "max_gen_toks=10",
        ],
        s["root"],
    )
    return out


def test_hook_is_cheap_at_startup(setup):
    code = "import sys; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lm_eval', 'w2s_eval'}))"
    out = subprocess.run([setup["py"], "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_w2s_results_and_stats(run_w2s, setup):
    out, _ = run_w2s
    res = results(out)
    assert set(res["results"]) == {"t_gen", "t_mc", "w2s_imdb_sentiment", "w2s_instruct"}
    info = res["config"]["w2s"]
    assert info["method"] == "base" and info["model_args"]["strong"] == setup["toy"]["strong"]
    rows = stats_rows(out)
    assert len(rows) == 1 and len(rows[0]) == 3 * int(LIMIT)  # one row per generate_until request
    assert all(r["strong_tokens"] > 0 and r["samples"] == 1 and r["guide_tokens"] == 0 for r in rows[0])
    assert {r["task"] for r in rows[0]} == {"t_gen", "w2s_imdb_sentiment", "w2s_instruct"}


@pytest.mark.parametrize("task,spec_key", [("w2s_imdb_sentiment", "clf"), ("w2s_instruct", "rm")])
def test_w2s_task_metric_is_the_scorer_mean(run_w2s, setup, task, spec_key):
    from w2s_eval.lm_eval_backend.scorer_spec import load_scorer

    out, _ = run_w2s
    docs = samples(out, task)
    assert len(docs) == int(LIMIT)
    kind = "classifier" if spec_key == "clf" else "rm"
    scorer = load_scorer(f"{kind}:{setup['toy'][spec_key]}")
    texts = [d["resps"][0][0] for d in docs.values()]
    expected = scorer([d["doc"]["prompt"] for d in docs.values()], texts)
    got = results(out)["results"][task]["reward,gold" if task == "w2s_imdb_sentiment" else "reward,rm"]
    assert got == pytest.approx(sum(expected) / len(expected), abs=1e-4)
    assert all(d["doc"]["scorer"] == f"{kind}:{setup['toy'][spec_key]}" for d in docs.values())


def test_hf_resolves_and_base_generation_equals_hf(run_w2s, run_hf):
    w2s, hf = samples(run_w2s[0], "t_gen"), samples(run_hf, "t_gen")
    assert sorted(w2s) == sorted(hf) and len(w2s) == int(LIMIT)
    for i in w2s:
        assert w2s[i]["resps"][0][0] == hf[i]["resps"][0][0]
    assert any(w2s[i]["resps"][0][0] for i in w2s)  # not all empty


def test_base_loglikelihoods_equal_hf(run_w2s, run_hf):
    w2s, hf = samples(run_w2s[0], "t_mc"), samples(run_hf, "t_mc")
    assert sorted(w2s) == sorted(hf)
    for i in w2s:
        a = [float(r[0][0]) for r in w2s[i]["resps"]]
        b = [float(r[0][0]) for r in hf[i]["resps"]]
        assert a == f32_approx(b)
        assert [r[0][1] for r in w2s[i]["resps"]] == [r[0][1] for r in hf[i]["resps"]]  # is_greedy


def test_use_cache_rerun_computes_nothing(run_w2s, setup):
    """A rerun with the same --use_cache (through the python -m fallback) reads every
    request from lm-eval's cache: no generation, same answers."""
    s, out = setup, setup["root"] / "out_rerun"
    p = run(
        [
            sys.executable,
            "-m",
            "w2s_eval.lm_eval_backend",
            "--model",
            "w2s",
            "--model_args",
            _w2s_args(s["toy"]),
            "--tasks",
            "t_gen,t_mc",
            "--include_path",
            str(s["tasks"]),
            "--limit",
            LIMIT,
            "--batch_size",
            "3",
            "--output_path",
            str(out),
            "--log_samples",
            "--use_cache",
            str(s["root"] / "cache" / "lm"),
            "--gen_kwargs",
            "max_gen_toks=10",
        ],
        s["root"],
    )
    log = p.stdout + p.stderr
    assert f"Cached requests: {LIMIT}, Requests remaining: 0" in log  # generate_until
    n_choices = sum(len(d["choices"]) for d in MC_DOCS[: int(LIMIT)])
    assert f"Cached requests: {n_choices}, Requests remaining: 0" in log  # loglikelihood
    assert stats_rows(out) == [[]]  # nothing generated
    first, again = samples(run_w2s[0], "t_gen"), samples(out, "t_gen")
    assert {i: d["resps"] for i, d in first.items()} == {i: d["resps"] for i, d in again.items()}


def test_use_cache_of_other_settings_is_refused(run_w2s, setup):
    """Issue 12 item 1: another strong model into the first run's --use_cache (stock lm_eval CLI) must not
    get the first run's answers: refused before any request, naming the first differing model arg."""
    s = setup
    cmd = [
        s["py"],
        str(LM_EVAL_SCRIPT),
        "--model",
        "w2s",
        "--model_args",
        f"strong={s['toy']['tuned']},method=base,dtype=float32",
        "--tasks",
        "t_gen,t_mc",
        "--include_path",
        str(s["tasks"]),
        "--limit",
        LIMIT,
        "--batch_size",
        "3",
        "--output_path",
        str(s["root"] / "out_other"),
        "--use_cache",
        str(s["root"] / "cache" / "lm"),
        "--gen_kwargs",
        "max_gen_toks=10",
    ]
    p = subprocess.run(cmd, cwd=str(s["root"]), env=env(), capture_output=True, text=True, timeout=600)
    log = p.stdout + p.stderr
    assert p.returncode != 0, log[-3000:]
    assert f"strong is '{s['toy']['strong']}' there but '{s['toy']['tuned']}' now" in log, log[-3000:]
    assert "Cached requests" not in log


def test_data_parallel_two_ranks(run_w2s, setup):
    """torchrun with two ranks on CPU: each rank takes every other document; rank 0 gathers
    results equal to the single-process run."""
    s, out = setup, setup["root"] / "out_dp"
    run(
        [
            s["py"],
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(free_port()),
            "-m",
            "lm_eval",
            "--model",
            "w2s",
            "--model_args",
            _w2s_args(s["toy"]),
            "--tasks",
            "t_gen,t_mc",
            "--include_path",
            str(s["tasks"]),
            "--limit",
            LIMIT,
            "--batch_size",
            "2",
            "--output_path",
            str(out),
            "--log_samples",
            "--gen_kwargs",
            "max_gen_toks=10",
        ],
        s["root"],
    )
    per_rank = stats_rows(out)
    assert len(per_rank) == 2
    assert sorted(r["doc_id"] for r in per_rank[0]) == [0, 2] and sorted(r["doc_id"] for r in per_rank[1]) == [1, 3]
    single = samples(run_w2s[0], "t_gen")
    dp = samples(out, "t_gen")
    assert {i: d["resps"][0] for i, d in dp.items()} == {i: d["resps"][0] for i, d in single.items()}
    single_mc, dp_mc = samples(run_w2s[0], "t_mc"), samples(out, "t_mc")
    for i in single_mc:
        a = [float(r[0][0]) for r in single_mc[i]["resps"]]
        b = [float(r[0][0]) for r in dp_mc[i]["resps"]]  # a rank may hold a padding duplicate: take the first
        assert a == f32_approx(b)
