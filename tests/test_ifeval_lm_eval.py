"""IFEval through the real lm-eval CLI, offline, on the tiny models (subprocesses).

Three runs (module fixtures): ``--model w2s method=base`` and ``--model hf`` on the bundled ``w2s_ifeval`` task and on
lm-eval's own ``ifeval`` definition pointed at the local prompts (``ifeval_local``, written by
:func:`w2s_eval.world.ifeval_data.write_lm_eval_task_yaml`); and CBS with ``--apply_chat_template`` (the toy
tokenizer carries a chat template, as an instruct model's does).
"""

from __future__ import annotations

import pytest
from test_lm_eval_helpers import LM_EVAL_SCRIPT, hook_python, results, run, samples, stats_rows, write_tasks

from w2s_eval.world import ifeval_data as d

pytestmark = pytest.mark.slow

LIMIT = 3
TASKS = ("w2s_ifeval", "ifeval_local")
GEN = ["--gen_kwargs", "max_gen_toks=16"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, toy_dirs, ifeval_home):
    root = tmp_path_factory.mktemp("ifeval_cli")
    tasks = write_tasks(root)
    d.write_lm_eval_task_yaml(tasks, d.ifeval_data_path(cache=ifeval_home))
    env = {"W2S_EVAL_HOME": str(ifeval_home), "NLTK_DATA": str(d.nltk_data_dir(ifeval_home))}
    return {"root": root, "tasks": tasks, "py": hook_python(root), "toy": toy_dirs, "env": env}


def _lm_eval(s, out, model, model_args, tasks, *extra, gen=GEN):
    return run(
        [
            s["py"],
            str(LM_EVAL_SCRIPT),
            "--model",
            model,
            "--model_args",
            model_args,
            "--tasks",
            ",".join(tasks),
            "--include_path",
            str(s["tasks"]),
            "--limit",
            str(LIMIT),
            "--batch_size",
            "2",
            "--output_path",
            str(out),
            "--log_samples",
            *gen,
            *extra,
        ],
        s["root"],
        s["env"],
    )


@pytest.fixture(scope="module")
def run_w2s(setup):
    out = setup["root"] / "out_w2s"
    _lm_eval(setup, out, "w2s", f"strong={setup['toy']['strong']},method=base,dtype=float32", TASKS)
    return out


@pytest.fixture(scope="module")
def run_hf(setup):
    out = setup["root"] / "out_hf"
    _lm_eval(setup, out, "hf", f"pretrained={setup['toy']['strong']},dtype=float32", TASKS, "--device", "cpu")
    return out


@pytest.fixture(scope="module")
def run_cbs_chat(setup):
    t, out = setup["toy"], setup["root"] / "out_cbs"
    _lm_eval(
        setup,
        out,
        "w2s",
        f"strong={t['strong']},tuned={t['tuned']},untuned={t['untuned']},method=cbs,w=2,k=2,l=4,seed=0,dtype=float32",
        ("w2s_ifeval",),
        "--apply_chat_template",
        gen=["--gen_kwargs", "max_gen_toks=16,do_sample=True,temperature=0.7"],
    )  # IFEval is greedy: search samples
    return out


@pytest.mark.parametrize("task", TASKS)
def test_w2s_base_equals_hf_samples_and_metrics(run_w2s, run_hf, task):
    w2s, hf = samples(run_w2s, task), samples(run_hf, task)
    assert sorted(w2s) == sorted(hf) == list(range(LIMIT))
    for i in w2s:
        assert w2s[i]["arguments"] == hf[i]["arguments"]
        assert w2s[i]["resps"] == hf[i]["resps"] and w2s[i]["resps"][0][0]
        for metric in d.METRICS:
            assert w2s[i][metric] == hf[i][metric]
    rw, rh = results(run_w2s)["results"][task], results(run_hf)["results"][task]
    for metric in d.METRICS:
        assert rw[f"{metric},none"] == rh[f"{metric},none"]


def test_bundled_task_scores_as_lm_evals_own_definition(run_w2s):
    """Same prompts, same generation settings, lm-eval's process_results: w2s_ifeval == lm-eval's ifeval."""
    ours, own = samples(run_w2s, "w2s_ifeval"), samples(run_w2s, "ifeval_local")
    for i in ours:
        assert ours[i]["doc"]["prompt"] == own[i]["doc"]["prompt"]
        assert ours[i]["resps"] == own[i]["resps"]
        assert [ours[i][m] for m in d.METRICS] == [own[i][m] for m in d.METRICS]
    cfg = results(run_w2s)["configs"]
    assert cfg["w2s_ifeval"]["generation_kwargs"] == cfg["ifeval_local"]["generation_kwargs"]


def test_metrics_are_the_checkers_verdicts(run_w2s, ifeval_home):
    """Each sample's metrics are what check() (lm-eval's process_results) gives its response, and the task's
    aggregates are their means."""
    docs = samples(run_w2s, "w2s_ifeval")
    rows = {r["key"]: r for r in d.load_ifeval_prompts(cache=ifeval_home)}
    flat = {m: [] for m in d.METRICS}
    for s in docs.values():
        got = d.check(rows[s["doc"]["key"]], s["resps"][0][0])
        for m in d.METRICS:
            assert s[m] == got[m]
            flat[m] += got[m] if isinstance(got[m], list) else [got[m]]
    res = results(run_w2s)["results"]["w2s_ifeval"]
    for m in d.METRICS:
        assert res[f"{m},none"] == pytest.approx(sum(flat[m]) / len(flat[m]))


def test_cbs_with_chat_template_runs_and_records_its_statistics(run_cbs_chat, setup):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(setup["toy"]["strong"])
    docs = samples(run_cbs_chat, "w2s_ifeval")
    assert len(docs) == LIMIT
    for s in docs.values():
        chat = [{"role": "user", "content": s["doc"]["prompt"]}]
        assert s["arguments"]["gen_args_0"]["arg_0"] == tok.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=True
        )
    [rows] = stats_rows(run_cbs_chat)
    assert len(rows) == LIMIT and {r["task"] for r in rows} == {"w2s_ifeval"}
    assert all(r["method"] == "cbs:w=2,k=2,l=4" and r["strong_tokens"] > 0 and r["guide_tokens"] > 0 for r in rows)
    assert all(r["sampling"]["temperature"] == 0.7 and r["rounds"] >= 1 and r["samples"] >= 4 for r in rows)
    res = results(run_cbs_chat)
    assert res["config"]["w2s"]["method"] == "cbs:w=2,k=2,l=4"
    assert all(0 <= res["results"]["w2s_ifeval"][f"{m},none"] <= 1 for m in d.METRICS)
