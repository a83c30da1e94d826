"""Run identity: the committed reference run keeps its hash, --strong NAME is part of the identity, a failed
run never blocks its corrected rerun, output files keep their modes (issue 11 items 1/4, 12 items 2/5/6, 14)."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from harness_toyworld import make_world, write_home

from w2s_eval.cli import main
from w2s_eval.config import SamplingConfig
from w2s_eval.harness.plan import make_run_config
from w2s_eval.harness.records import CONFIG_FILE, RECORDS_FILE, open_run_dir, read_records
from w2s_eval.world_registry import World, register_world, unregister_world

REFERENCE = Path(__file__).parents[1] / "results" / "imdb-mini"
TESTS = Path(__file__).parent


def _reference_world(toy_dirs) -> World:
    """A World with the committed reference run's manifest and sampling (the models are toys: paths are not
    part of a run's identity; the manifest's fingerprint stands for them)."""
    manifest = json.loads((REFERENCE / "world_manifest.json").read_text())
    c = manifest["config"]
    return World(
        name="imdb-mini",
        strong=toy_dirs["strong"],
        tuned=toy_dirs["tuned"],
        untuned=toy_dirs["untuned"],
        reward_model=toy_dirs["rm"],
        prompts=tuple((f"p{i}", "x") for i in range(64)),
        sampling=SamplingConfig(
            temperature=c["temperature"], top_k=c["top_k"], max_new_tokens=c["sampling_tokens"], seed=c["seed"]
        ),
        gold=lambda p, r: [0.0] * len(r),
        judge=lambda p, r: [0.0] * len(r),
        manifest=manifest,
        strong_name="smollm2-135m",
    )


def test_the_committed_reference_run_keeps_its_identity(toy_dirs, monkeypatch, tmp_path):
    stored = json.loads((REFERENCE / "run_config.json").read_text())
    world = _reference_world(toy_dirs)
    grid = stored["grid"]
    for strong in (None, "smollm2-135m"):  # the default and the world's own strong model by name
        cfg = make_run_config(world, grid["methods"], grid["n_prompts"], len(grid["seeds"]), strong=strong)
        assert cfg.identity() == stored["identity"]
        assert cfg.config_hash == stored["config_hash"] == "38d80bad8d94cdde"
    # another strong model is another identity: the reference directory refuses it, naming the field
    import w2s_eval.world.strong as strong_mod

    monkeypatch.setattr(strong_mod, "resolve_strong_model", lambda name, cache_dir=None: Path(toy_dirs["strong"]))
    other = make_run_config(world, grid["methods"], 64, 3, strong="gemma3-270m", home=tmp_path)
    assert other.identity()["strong"] == "gemma3-270m" and other.config_hash != stored["config_hash"]
    run = tmp_path / "ref"
    run.mkdir()
    shutil.copy(REFERENCE / "run_config.json", run / CONFIG_FILE)
    with pytest.raises(ValueError, match="strong is '<missing>' there but 'gemma3-270m' now"):
        open_run_dir(run, other)


def _cli(home, out, *extra, umask=None, methods="base,bon:n=2"):
    env = dict(
        os.environ,
        W2S_EVAL_WORLD_MODULES="harness_toyworld",
        PYTHONPATH=str(TESTS),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "w2s_eval.cli",
        "compare",
        "--world",
        "toy",
        "--world-home",
        str(home),
        "--methods",
        methods,
        "--prompts",
        "2",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]
    return subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


def test_a_failed_run_does_not_block_the_corrected_rerun(tmp_path, toy_dirs):
    home, out = write_home(tmp_path / "home", toy_dirs), tmp_path / "run"
    bad = _cli(home, out, "--guide-beta", "nan")
    assert bad.returncode == 2 and "beta must be a finite number, got nan" in bad.stderr
    long = _cli(home, out, "--max-new-tokens", "600")
    assert long.returncode == 2, long.stderr
    assert "exceeds the strong model's context of 512" in long.stderr and "--max-new-tokens" in long.stderr
    assert "truncation" not in long.stderr  # no hint at an option compare does not have
    write_home(home, {**toy_dirs, "tuned": str(tmp_path / "nope")})
    missing = _cli(home, out, "--max-new-tokens", "4")
    assert missing.returncode == 2 and "nope" in missing.stderr
    assert not (out / CONFIG_FILE).exists() and not (out / RECORDS_FILE).exists()
    write_home(home, toy_dirs)
    good = _cli(home, out, "--max-new-tokens", "4", "--no-report")
    assert good.returncode == 0, good.stderr
    assert len(read_records(out / RECORDS_FILE)[0]) == 4
    assert json.loads((out / CONFIG_FILE).read_text())["identity"]["guide_beta"] == 1.0


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_output_files_get_the_umask_and_keep_their_mode(tmp_path, toy_dirs):
    home, out = write_home(tmp_path / "home", toy_dirs), tmp_path / "run"
    run = _cli(home, out, "--max-new-tokens", "3", umask=0o002)
    assert run.returncode == 0, run.stderr
    for name in (CONFIG_FILE, RECORDS_FILE, "report.md", "report.csv", "report.tex", "gold_by_method.png"):
        assert _mode(out / name) == 0o664, name  # not 0600
    os.chmod(out / "report.csv", 0o640)
    os.chmod(out / CONFIG_FILE, 0o660)
    again = _cli(home, out, "--max-new-tokens", "3", umask=0o077)
    assert again.returncode == 0, again.stderr
    assert _mode(out / "report.csv") == 0o640 and _mode(out / CONFIG_FILE) == 0o660


@pytest.fixture
def strong_models(toy_dirs, monkeypatch):
    """--strong NAME resolves to a toy model: 'same-vocab' shares the guides' tokenizer, 'other-vocab' does not."""
    import w2s_eval.world.strong as strong_mod

    dirs = {"same-vocab": toy_dirs["tuned"], "other-vocab": toy_dirs["tuned_b"]}

    def resolve(name, cache_dir=None):
        if name not in dirs:
            raise ValueError(f"unknown strong model {name!r}; known: {', '.join(dirs)}")
        return Path(dirs[name])

    monkeypatch.setattr(strong_mod, "resolve_strong_model", resolve)
    register_world("toy-strong", lambda home: make_world(toy_dirs, name="toy-strong"))
    yield
    unregister_world("toy-strong")


def _compare(home, out, *extra, methods="base,bon:n=2,eft:beta=1"):
    return main(
        [
            "compare",
            "--world",
            "toy-strong",
            "--world-home",
            str(home),
            "--methods",
            methods,
            "--prompts",
            "2",
            "--seeds",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--max-new-tokens",
            "4",
            "--no-progress",
            *extra,
        ]
    )


def test_strong_by_name_is_its_own_run_and_eft_is_na_across_vocabularies(strong_models, toy_dirs, tmp_path, capsys):
    out = tmp_path / "other"
    assert _compare(tmp_path, out, "--strong", "other-vocab") == 0
    captured = capsys.readouterr()
    assert "eft:beta=1 is not run (vocabulary differs" in captured.err
    both = (
        f"strong model's tokenizer '{toy_dirs['tuned_b']}' (500 tokens) differs from the guide's tokenizer "
        f"'{toy_dirs['tuned']}' (502 tokens)"
    )
    assert both in captured.err  # both tokenizers named
    records = read_records(out / RECORDS_FILE)[0]
    assert sorted({r["method"] for r in records}) == ["base", "bon:n=2"]
    assert all(r["config"]["strong"] == "other-vocab" for r in records)
    report = (out / "report.md").read_text()
    assert "| eft:beta=1 | 0 | n/a (vocabulary differs) |" in report
    assert "eft:beta=1," in (out / "report.csv").read_text() and "n/a (vocabulary differs)" in captured.out
    # a rerun has nothing to do: EFT stays n/a as recorded, and no model is loaded to find that out again
    import w2s_eval.engine

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(w2s_eval.engine, "build_engine", lambda spec: pytest.fail("a model was loaded"))
        assert _compare(tmp_path, out, "--strong", "other-vocab") == 0
    assert "(0 new, 4 recorded before)" in capsys.readouterr().out
    assert "| eft:beta=1 | 0 | n/a (vocabulary differs) |" in (out / "report.md").read_text()
    # the same directory refuses the world's own strong model and another named one, naming the field
    assert _compare(tmp_path, out) == 2
    assert "strong is 'other-vocab' there but '<missing>' now" in capsys.readouterr().err
    assert _compare(tmp_path, out, "--strong", "same-vocab") == 2
    assert "strong is 'other-vocab' there but 'same-vocab' now" in capsys.readouterr().err
    # a strong model of the guides' vocabulary runs EFT; an unknown name lists the known ones
    same = tmp_path / "same"
    assert _compare(tmp_path, same, "--strong", "same-vocab", methods="eft:beta=1") == 0
    assert {r["method"] for r in read_records(same / RECORDS_FILE)[0]} == {"eft:beta=1"}
    assert _compare(tmp_path, tmp_path / "x", "--strong", "nope") == 2
    assert "unknown strong model 'nope'; known: same-vocab, other-vocab" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # only EFT asked for, across vocabularies: refused before anything runs, naming both tokenizers
    assert _compare(tmp_path, tmp_path / "y", "--strong", "other-vocab", methods="eft:beta=1") == 2
    err = capsys.readouterr().err
    assert "vocabulary differs" in err and both in err and not (tmp_path / "y").exists()
