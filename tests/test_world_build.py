"""The imdb-mini builder on a tiny slice of the data with tiny models (each TRL trainer runs a few steps)."""

import csv
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from w2s_eval.world.build import STEP_NAMES, WorldConfig, build_world, world_dir
from w2s_eval.world.train import GuideShape, TrainSettings

pytestmark = pytest.mark.slow  # processes, servers or training: deselect with -m 'not slow'


def tiny_csv(path: Path, n_per_label: int = 60) -> Path:
    """A slice of the real reviews CSV: IMDB rows of both labels, some Rotten Tomatoes rows, one huge field."""
    from w2s_eval.world.data import csv_file

    csv.field_size_limit(2**31 - 1)
    keep, counts = [], {}
    with csv_file() as src, open(src, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            key = (row["source"], row["label"])
            if counts.get(key, 0) < (n_per_label if row["source"] == "imdb" else 5):
                counts[key] = counts.get(key, 0) + 1
                keep.append(row)
            if len(keep) >= 2 * n_per_label + 10:
                break
    keep[0] = dict(keep[0], text=keep[0]["text"] + " great" * 40_000)  # > the csv module's default field limit
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label", "source"])
        w.writeheader()
        w.writerows(keep)
    return path


def tiny_config(strong: str, csv_path: Path, **kw) -> WorldConfig:
    base = dict(
        strong_source=strong,
        csv_path=str(csv_path),
        n_train=80,
        n_heldout=36,
        n_prompts=12,
        gold_max_features=5000,
        guide=GuideShape(layers=1, hidden=16, heads=2, intermediate=32, max_positions=512),
        sft=TrainSettings(lr=1e-2, batch_size=8, steps=3, max_length=32),
        pair_prefixes=16,
        heldout_pairs=8,
        pair_tokens=5,
        pair_labels="bradley-terry",
        dpo=TrainSettings(lr=1e-3, batch_size=8, steps=2, max_length=128),
        rm=TrainSettings(lr=1e-3, batch_size=8, steps=2, max_length=256),
        validate_prompts=4,
        validate_samples=3,
        sampling_tokens=5,
    )
    base.update(kw)
    return WorldConfig(**base)


@pytest.fixture(scope="module", autouse=True)
def group_umask():
    """Build under umask 002, as for a group-shared cache: every file written must be 0664 (issue 25, item 11)."""
    umask = os.umask(0o002)
    yield
    os.umask(umask)


@pytest.fixture(scope="module")
def tiny_world(group_umask, toy_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    cfg = tiny_config(toy_dirs["strong"], tiny_csv(root / "reviews.csv"))
    home = root / "home"
    path = build_world("imdb-mini", home, cfg, progress=False)
    return {"home": home, "path": path, "cfg": cfg}


def test_build_writes_every_step_and_a_manifest(tiny_world):
    path = tiny_world["path"]
    assert path == world_dir("imdb-mini", tiny_world["home"])
    m = json.loads((path / "manifest.json").read_text())
    assert m["complete"] is True and set(m["steps"]) == set(STEP_NAMES)
    assert m["seed"] == 0 and m["config"]["n_train"] == 80
    for step in STEP_NAMES:
        assert (path / step).is_dir() and (path / ".done" / f"{step}.json").exists()
        assert not (path / f".tmp-{step}").exists()
    steps = m["steps"]
    # each TRL trainer really ran its steps
    assert steps["untuned"]["trainer"] == "trl.SFTTrainer" and steps["untuned"]["steps"] == 3
    assert steps["tuned"]["trainer"] == "trl.DPOTrainer" and steps["tuned"]["steps"] == 2
    assert steps["reward_model"]["trainer"] == "trl.RewardTrainer" and steps["reward_model"]["steps"] == 2
    assert steps["data"]["train"] == 80 and steps["data"]["heldout"] == 36 and steps["data"]["prompts"] == 12
    assert steps["data"]["imdb_reviews"] == 120  # Rotten Tomatoes rows are dropped
    assert steps["pairs"]["train"]["pairs"] == 16 and steps["pairs"]["heldout"]["pairs"] == 8
    q = m["quality"]
    assert 0.0 <= q["gold_heldout_accuracy"] <= 1.0
    for key in ("dpo_heldout_pair_accuracy", "rm_heldout_pair_accuracy"):
        assert q[key] is None or 0.0 <= q[key] <= 1.0
    assert "spearman_implicit_gold" in q and isinstance(q["guidance_works"], bool)
    assert steps["validate"]["prompts"] == 4 and steps["validate"]["samples_per_prompt"] == 3
    # sha256s of inputs and outputs are recorded and match the files
    from w2s_eval.assets import sha256_file

    assert m["inputs"]["imdb_csv_sha256"] == sha256_file(tiny_world["cfg"].csv_path)
    assert steps["gold"]["files"]["gold.pkl"] == sha256_file(path / "gold" / "gold.pkl")
    assert steps["tuned"]["files"]["model.safetensors"] == sha256_file(path / "tuned" / "model.safetensors")
    assert set(m["versions"]) >= {"torch", "transformers", "trl"}


def test_guides_share_the_strong_tokenizer_and_load_as_a_world(tiny_world, toy_dirs, caplog):
    import w2s_eval.world  # noqa: F401  (registers imdb-mini)
    from w2s_eval.world_registry import load_world

    with caplog.at_level("WARNING", logger="w2s_eval.world.loader"):
        world = load_world("imdb-mini", tiny_world["home"])
    # the tiny world is not built with the defaults: loading says so and how to rebuild
    assert "other settings than this version's defaults" in caplog.text and "--force" in caplog.text
    assert world.name == "imdb-mini" and len(world.prompts) == 12
    assert all(text.startswith("Here is a movie review from imdb: ") for _, text in world.prompts)
    heldout = {json.loads(line)["id"] for line in open(tiny_world["path"] / "data" / "heldout.jsonl")}
    train = {json.loads(line)["id"] for line in open(tiny_world["path"] / "data" / "train.jsonl")}
    assert not heldout & train and {pid for pid, _ in world.prompts} <= heldout
    assert world.sampling.temperature == 0.7 and world.sampling.top_k == 50 and world.sampling.max_new_tokens == 5
    g = world.gold(["Here is a movie review from imdb: ", "x"], ["a wonderful great film", "awful boring"])
    j = world.judge(["", ""], ["a wonderful great film", "awful boring waste"])
    assert len(g) == 2 and all(isinstance(v, float) for v in g)
    assert j[0] > 0 > j[1]
    from transformers import AutoTokenizer

    strong = AutoTokenizer.from_pretrained(world.strong)
    for d in (world.tuned, world.untuned, world.reward_model):
        assert AutoTokenizer.from_pretrained(d).get_vocab() == strong.get_vocab()
    # the world's models run through the core engine
    from w2s_eval.engine import build_engine

    eng = build_engine(strong=world.strong, tuned=world.tuned, untuned=world.untuned, dtype="float32", device="cpu")
    res = eng.generate([world.prompts[0][1]], "cbs:w=2,k=2,l=2", world.sampling, seeds=[0])
    assert res[0].stats["strong_tokens"] > 0


def test_rerun_skips_finished_steps_and_resumes(tiny_world, monkeypatch):
    from w2s_eval.world import steps as steps_mod

    path, calls = tiny_world["path"], []
    for name in STEP_NAMES:
        real = steps_mod.STEPS[name]
        monkeypatch.setitem(
            steps_mod.STEPS, name, lambda ctx, out, _n=name, _r=real: (calls.append(_n), _r(ctx, out))[1]
        )
    before = (path / ".done" / "gold.json").stat().st_mtime_ns
    build_world("imdb-mini", tiny_world["home"], tiny_world["cfg"], progress=False)
    assert calls == [] and (path / ".done" / "gold.json").stat().st_mtime_ns == before
    # an interrupted build resumes with the missing step; the steps after it are built again from its output
    (path / ".done" / "reward_model.json").unlink()
    build_world("imdb-mini", tiny_world["home"], tiny_world["cfg"], progress=False)
    assert calls == ["reward_model", "validate"]
    assert json.loads((path / "manifest.json").read_text())["complete"] is True


def test_other_settings_are_refused(tiny_world):
    import dataclasses

    cfg = dataclasses.replace(tiny_world["cfg"], dpo_beta=0.5)
    with pytest.raises(ValueError, match=r"dpo_beta \(built with 0.1, asked for 0.5\).*--force"):
        build_world("imdb-mini", tiny_world["home"], cfg, progress=False)


def test_unbuilt_world_and_bad_cache_dir(tmp_path, toy_dirs):
    import w2s_eval.world  # noqa: F401
    from w2s_eval.world_registry import load_world

    with pytest.raises(FileNotFoundError, match="w2s-eval world build imdb-mini"):
        load_world("imdb-mini", tmp_path / "empty")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="W2S_EVAL_HOME"):
        build_world("imdb-mini", blocker / "home", tiny_config(toy_dirs["strong"], tmp_path / "x.csv"), progress=False)
    with pytest.raises(ValueError, match="unknown world"):
        build_world("imdb-huge", tmp_path)


def test_cli_info_and_errors(tiny_world, capsys):
    from w2s_eval.cli import main

    assert main(["world", "info", "imdb-mini", "--home", str(tiny_world["home"])]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and "gold_heldout_accuracy" in out and "dpo_heldout_pair_accuracy" in out
    assert main(["world", "info", "imdb-mini", "--home", str(tiny_world["home"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is True
    assert main(["world", "info", "nope", "--home", str(tiny_world["home"])]) == 2
    assert "unknown world 'nope'" in capsys.readouterr().err
    assert main(["world", "info", "imdb-mini", "--home", str(tiny_world["home"] / "missing")]) == 2
    assert "w2s-eval world build imdb-mini" in capsys.readouterr().err
    blocker = tiny_world["home"] / "a-file"
    blocker.write_text("x")
    assert main(["world", "build", "imdb-mini", "--home", str(blocker / "home"), "--no-progress"]) == 2
    assert "set W2S_EVAL_HOME to a writable directory" in capsys.readouterr().err


def test_saved_weights_follow_the_umask(tiny_world):
    """Issue 25, item 11: safetensors writes 0600; built under umask 002, every file is 0664 and every folder 0775,
    so the other users of a shared W2S_EVAL_HOME can read the world."""
    path = tiny_world["path"]
    files = [p for p in path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o664)}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in path.rglob("*") if p.is_dir()} == {oct(0o775)}


@pytest.mark.parametrize(
    "edit,named",
    [
        (
            lambda w: (w / "data" / "prompts.jsonl").write_text(
                (w / "data" / "prompts.jsonl").read_text().replace("Here is", "Here was", 1)
            ),
            "data/prompts.jsonl",
        ),
        (lambda w: _overwrite(w / "strong" / "model.safetensors"), "strong/model.safetensors"),
        (lambda w: _overwrite(w / "tuned" / "model.safetensors"), "tuned/model.safetensors"),
    ],
)
def test_world_files_are_checked_against_the_manifest(tiny_world, tmp_path, capsys, edit, named):
    """Issue 25, item 6: an edited prompts.jsonl (same ids, other text) or 16 KB overwritten in a weights file is
    refused when the world loads (``w2s-eval compare`` exits 2 naming the file and the rebuild), not used."""
    from w2s_eval.cli import main

    home = tmp_path / "home"
    shutil.copytree(tiny_world["home"], home)
    edit(home / "worlds" / "imdb-mini")
    assert (
        main(
            [
                "compare",
                "--world",
                "imdb-mini",
                "--world-home",
                str(home),
                "--methods",
                "base",
                "--prompts",
                "1",
                "--out",
                str(tmp_path / "run"),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        f"imdb-mini/{named} does not match the sha256 the world's manifest records (edited or corrupted?); "
        "rebuild the world: w2s-eval world build imdb-mini --force" in err
    ), err
    assert not (tmp_path / "run").exists()


def _overwrite(path):
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 16384)


def test_world_files_are_hashed_once_per_process(tiny_world, tmp_path, monkeypatch):
    import w2s_eval.world  # noqa: F401  (registers imdb-mini)
    from w2s_eval import assets
    from w2s_eval.world_registry import load_world

    home = tmp_path / "home"
    shutil.copytree(tiny_world["home"], home)
    hashed = []
    real = assets.sha256_file
    monkeypatch.setattr(assets, "sha256_file", lambda p: (hashed.append(str(p)), real(p))[1])
    load_world("imdb-mini", home)
    first = len(hashed)
    assert first >= 5 and any(h.endswith("prompts.jsonl") for h in hashed)
    load_world("imdb-mini", home)
    assert len(hashed) == first  # unchanged files (size, mtime): not hashed again
    prompts = home / "worlds" / "imdb-mini" / "data" / "prompts.jsonl"
    os.utime(prompts, ns=(prompts.stat().st_atime_ns, prompts.stat().st_mtime_ns + 10**9))
    load_world("imdb-mini", home)
    assert hashed[first:] == [str(prompts.resolve())]
