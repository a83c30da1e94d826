"""Bad input to AlpacaEval generation and judging (issue 12): refused before anything is written,
with the flag named and the hint that applies; strict JSON; file modes kept; configs.yaml is data."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _alpaca_fixtures import write_instructions

from w2s_eval.alpaca.decoder import DECODER_PATH, load_model_configs, w2s_completions
from w2s_eval.alpaca.generate import OUTPUTS_FILE, RUN_CONFIG_FILE
from w2s_eval.alpaca.judge import stack_leaderboard

pytestmark = pytest.mark.slow  # processes, servers or training: deselect with -m 'not slow'

REPO = Path(__file__).resolve().parents[1]
INSTRUCTIONS = [
    {"instruction": "Write a short movie review.", "dataset": "toy"},
    {"instruction": "Is the film good?", "dataset": "toy"},
]


def _cli(args, umask=None):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    code = "import os, sys; from w2s_eval.cli import main; "
    code += (f"os.umask({umask}); " if umask is not None else "") + "sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


def _generate(toy_dirs, ins_file, out, *extra, umask=None):
    return _cli(
        [
            "alpaca-eval",
            "generate",
            "--strong",
            toy_dirs["strong"],
            "--tuned",
            toy_dirs["tuned"],
            "--untuned",
            toy_dirs["untuned"],
            "--method",
            "bon:n=2",
            "--instructions",
            str(ins_file),
            "--out",
            str(out),
            "--max-new-tokens",
            "4",
            "--temperature",
            "1.0",
            "--top-k",
            "0",
            "--dtype",
            "float32",
            "--device",
            "cpu",
            "--no-progress",
            *extra,
        ],
        umask=umask,
    )


def _main(toy_dirs, ins_file, out, *extra):
    from w2s_eval.cli import main

    return main(
        [
            "alpaca-eval",
            "generate",
            "--strong",
            toy_dirs["strong"],
            "--tuned",
            toy_dirs["tuned"],
            "--untuned",
            toy_dirs["untuned"],
            "--method",
            "bon:n=2",
            "--instructions",
            str(ins_file),
            "--out",
            str(out),
            "--max-new-tokens",
            "4",
            "--dtype",
            "float32",
            "--device",
            "cpu",
            "--no-progress",
            *extra,
        ]
    )


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def ins_file(tmp_path):
    return write_instructions(tmp_path, INSTRUCTIONS)


def test_bad_settings_never_block_their_own_out_directory(toy_dirs, ins_file, tmp_path, capsys):
    """items 2, 3, 5, 6, 9: each bad run fails before run_config.json exists, naming the flag; the corrected
    rerun into the same --out then works, writes strict JSON, and its new files get the process umask."""
    out = tmp_path / "run"
    in_process = [  # through the command's own entry point (argv as typed)
        (("--beta", "inf"), "beta must be a finite number, got inf"),
        (("--rm-weight", "nan"), "--rm-weight must be a finite number, got nan; e.g. --rm-weight 1.0"),
        (("--reward-model", str(tmp_path)), f"--reward-model '{tmp_path}' is a directory but not a model"),
        (("--tuned-template", "x {prompt} {"), "--tuned-template 'x {prompt} {' is not a valid format string"),
    ]
    for extra, needle in in_process:
        assert _main(toy_dirs, ins_file, out, *extra) == 2
        err = capsys.readouterr().err
        assert needle in err, (extra, err)
        assert not out.exists(), extra
    in_subprocess = [  # the real command line, for the failures that used to happen after run_config.json
        (("--beta", "nan"), "beta must be a finite number, got nan"),
        (("--untuned", str(tmp_path / "nope")), f"--untuned '{tmp_path / 'nope'}' does not exist"),
        (
            ("--max-new-tokens", "600"),
            "--max-new-tokens=600 leaves no room for the prompt: lower --max-new-tokens below",
        ),
    ]
    for extra, needle in in_subprocess:
        p = _generate(toy_dirs, ins_file, out, *extra)
        assert p.returncode == 2 and needle in p.stderr, (extra, p.stderr[-2000:])
        assert "truncation" not in p.stderr  # alpaca-eval generate has no such option
        assert not (out / RUN_CONFIG_FILE).exists(), extra
    p = _generate(toy_dirs, ins_file, out, umask=0o002)
    assert p.returncode == 0, p.stderr[-2000:]
    run_config = _strict((out / RUN_CONFIG_FILE).read_text())
    assert run_config["engine"]["strong"] == toy_dirs["strong"] and run_config["engine"]["device"] == "cpu"
    assert run_config["identity"]["beta"] == 1.0 and "device" not in run_config["identity"]
    assert len(_strict((out / OUTPUTS_FILE).read_text())) == 2
    for name in (OUTPUTS_FILE, RUN_CONFIG_FILE, "configs.yaml", "search_stats.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o664, name


def test_an_unwritable_out_is_named(toy_dirs, ins_file, tmp_path, capsys):
    """item 9: --out under a file is refused plainly, before any model loads."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _main(toy_dirs, ins_file, blocker / "run", "--method", "base") == 2
    err = capsys.readouterr().err
    assert f"--out {blocker / 'run'}: cannot write there ({blocker} is not a directory)" in err
    assert "Errno" not in err


def test_a_shared_leaderboard_keeps_its_mode(tmp_path):
    """item 6: adding a row to a 0664 leaderboard leaves it 0664."""
    board = tmp_path / "leaderboard.csv"
    row = {"win_rate": 50.0, "standard_error": 1.0, "annotator": "rm:x", "reference": "ref"}
    stack_leaderboard(board, "a", row)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(board.stat().st_mode) == 0o666 & ~umask
    os.chmod(board, 0o664)
    stack_leaderboard(board, "b", {**row, "win_rate": 60.0})
    assert stat.S_IMODE(board.stat().st_mode) == 0o664
    assert board.read_text().count("\n") == 3


def test_a_bare_string_is_not_a_list_of_prompts():
    """item 4."""
    with pytest.raises(TypeError, match=r"w2s_completions takes a list of prompts, got one string \('hi'\)"):
        w2s_completions("hi", strong="s", method="base")


def test_configs_yaml_never_names_code_to_import(tmp_path):
    """item 8: only the w2s decoder and AlpacaEval's own decoder names."""

    def load(fn):
        (tmp_path / "configs.yaml").write_text(
            yaml.safe_dump({"m": {"prompt_template": "p.txt", "fn_completions": fn}})
        )
        return load_model_configs(tmp_path)["m"]["fn_completions"]

    assert load(DECODER_PATH) is w2s_completions
    assert load("openai_completions") == "openai_completions"
    for bad in ("os.system", "subprocess.check_output", "builtins.eval", "w2s_eval.alpaca.decoder._decoder"):
        with pytest.raises(ValueError, match=f"fn_completions '{bad}' is not accepted"):
            load(bad)


def test_judge_names_what_is_wrong_with_the_reward_model(toy_dirs, tmp_path, capsys):
    """item 9: a causal LM or a folder that is no model, given as --reward-model; nothing written."""
    from w2s_eval.cli import main

    outputs = tmp_path / "m.json"
    outputs.write_text(json.dumps([{**r, "output": "fine", "generator": "m"} for r in INSTRUCTIONS]))
    args = [
        "alpaca-eval",
        "judge",
        "--model-outputs",
        str(outputs),
        "--reference-outputs",
        str(outputs),
        "--out",
        str(tmp_path / "j"),
        "--device",
        "cpu",
        "--no-progress",
        "--reward-model",
    ]
    assert main([*args, toy_dirs["strong"]]) == 2
    assert "is not a sequence-classification model (its config names LlamaForCausalLM)" in capsys.readouterr().err
    assert main([*args, str(tmp_path)]) == 2
    assert f"--reward-model '{tmp_path}' is a directory but not a model" in capsys.readouterr().err
    assert not (tmp_path / "j").exists()


def test_a_second_writer_of_one_out_is_refused(toy_dirs, ins_file, tmp_path, capsys):
    """Issue 25, item 5: while another process holds --out (here a child holding its lock, as a running
    ``alpaca-eval generate`` does), a second ``generate`` into it is refused naming that process; nothing of the
    second is written."""
    import signal

    from w2s_eval.provenance import LOCK_FILE

    out = tmp_path / "run"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from w2s_eval.provenance import run_dir_lock\n"
            f"with run_dir_lock({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "locked\n"
        assert _main(toy_dirs, ins_file, out, "--method", "base") == 2
        err = capsys.readouterr().err
        assert f"error: --out {out} is in use: pid {child.pid} (" in err and "give another --out" in err, err
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
