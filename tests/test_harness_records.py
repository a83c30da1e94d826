"""Records, run-directory config, method/seed parsing and the world registry (no models needed)."""

import json

import pytest

from w2s_eval.config import SamplingConfig
from w2s_eval.harness import records as R
from w2s_eval.harness.records import parse_seeds, split_methods
from w2s_eval.spec import EngineSpec
from w2s_eval.world_registry import World, load_world, register_world, unregister_world, world_names


def _cfg(**kw):
    engine = {k: kw.pop(k) for k in ("device", "dtype", "beta") if k in kw}
    base = dict(
        world="toy",
        world_fingerprint="abc",
        methods=("base", "bon:n=4"),
        n_prompts=3,
        seeds=(0, 1),
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=8),
        engine=EngineSpec(strong="s", tuned=("t",), untuned="u", **{"dtype": "float32", **engine}),
    )
    base.update(kw)
    return R.RunConfig(**base)


def _rec(pid, method="base", seed=0, **kw):
    return {"prompt_id": pid, "method": method, "seed": seed, "gold": 1.0, **kw}


def test_split_methods_keeps_commas_inside_a_method():
    assert split_methods("base,bon:n=16,eft:beta=1.0,cbs:w=4,k=4,l=5") == [
        "base",
        "bon:n=16",
        "eft:beta=1",
        "cbs:w=4,k=4,l=5",
    ]
    assert split_methods(["base", "cbs:w=2,k=2,l=inf"]) == ["base", "cbs:w=2,k=2,l=inf"]
    assert split_methods("bon:n=4; cbs:w=1, k=4") == ["bon:n=4", "cbs:w=1,k=4,l=5"]
    with pytest.raises(ValueError, match="unknown method"):
        split_methods("base,beam:n=3")
    with pytest.raises(ValueError, match="before any method"):
        split_methods("n=4,base")
    with pytest.raises(ValueError, match="twice"):
        split_methods("bon:n=4,bon:n=4")


def test_parse_seeds():
    assert parse_seeds("3") == (0, 1, 2)
    assert parse_seeds(2) == (0, 1)
    assert parse_seeds("0,5,7") == (0, 5, 7)
    with pytest.raises(ValueError, match="seeds"):
        parse_seeds("three")
    with pytest.raises(ValueError, match=">= 1"):
        parse_seeds("0")


def test_run_config_identity_and_hash():
    a, b = _cfg(), _cfg(seeds=(0, 1, 2), methods=("cbs:w=2,k=2,l=3",), batch_size=3, device="cpu")
    assert a.config_hash == b.config_hash  # the grid and performance knobs are not the identity
    c = _cfg(sampling=SamplingConfig(temperature=0.5, max_new_tokens=8))
    assert c.config_hash != a.config_hash
    assert R.diff_fields(a.identity(), c.identity()) == [("sampling.temperature", 1.0, 0.5)]
    assert a.resolved("bon:n=4", 1)["seed"] == 1
    with pytest.raises(ValueError, match="guide"):
        _cfg(guide="oracle")
    with pytest.raises(ValueError, match="n_prompts"):
        _cfg(n_prompts=0)


def test_read_records_truncated_last_line_is_reported_not_fatal(tmp_path):
    path = tmp_path / R.RECORDS_FILE
    good = [json.dumps(_rec(f"p{i}")) for i in range(3)]
    path.write_text("\n".join(good) + "\n" + good[0][:17])
    records, tail = R.read_records(path)
    assert [r["prompt_id"] for r in records] == ["p0", "p1", "p2"]
    assert tail == good[0][:17]
    # a complete last record without its newline is a record, not a truncation
    path.write_text("\n".join(good))
    records, tail = R.read_records(path)
    assert len(records) == 3 and tail is None
    # a corrupt line in the middle is an error naming the line
    path.write_text(good[0] + "\n{oops\n" + good[1] + "\n")
    with pytest.raises(ValueError, match="line 2"):
        R.read_records(path)


def test_record_log_sets_truncated_tail_aside_and_appends_cleanly(tmp_path):
    path = tmp_path / R.RECORDS_FILE
    path.write_text(json.dumps(_rec("p0")) + "\n" + json.dumps(_rec("p1"))[:10])
    log = R.RecordLog(tmp_path)
    assert log.truncated is not None and ("p0", "base", 0) in log and ("p1", "base", 0) not in log
    assert (tmp_path / "records.truncated.txt").read_text().strip() == json.dumps(_rec("p1"))[:10]
    log.append(_rec("p1"))
    with pytest.raises(ValueError, match="already"):
        log.append(_rec("p1"))
    records, tail = R.read_records(path)
    assert tail is None and [r["prompt_id"] for r in records] == ["p0", "p1"]
    # an unterminated but complete last record is terminated, not discarded
    path.write_text(json.dumps(_rec("p0")))
    log = R.RecordLog(tmp_path)
    log.append(_rec("p2"))
    assert [r["prompt_id"] for r in R.read_records(path)[0]] == ["p0", "p2"]


def test_open_run_dir_refuses_another_config_and_grows_the_grid(tmp_path):
    R.open_run_dir(tmp_path, _cfg())
    with pytest.raises(ValueError, match=r"sampling\.max_new_tokens is 8 there but 16 now"):
        R.open_run_dir(tmp_path, _cfg(sampling=SamplingConfig(temperature=1.0, max_new_tokens=16)))
    with pytest.raises(ValueError, match="world_fingerprint"):
        R.open_run_dir(tmp_path, _cfg(world_fingerprint="rebuilt"))
    R.open_run_dir(tmp_path, _cfg(methods=("cbs:w=2,k=2,l=3",), seeds=(2,), n_prompts=5))
    grid = json.loads((tmp_path / R.CONFIG_FILE).read_text())["grid"]
    assert grid == {"methods": ["base", "bon:n=4", "cbs:w=2,k=2,l=3"], "n_prompts": 5, "seeds": [0, 1, 2]}
    # a record of another config in the records file is refused too
    other = _cfg(guide="rm")
    (tmp_path / R.RECORDS_FILE).write_text(
        json.dumps(_rec("p0", config=other.resolved("base", 0), config_hash=other.config_hash)) + "\n"
    )
    with pytest.raises(ValueError, match="guide is 'rm' there but 'implicit' now"):
        R.open_run_dir(tmp_path, _cfg())


def test_git_revision_reads_head_without_git(tmp_path):
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text("a" * 40 + "\n")
    sub = tmp_path / "repo" / "pkg" / "mod"
    sub.mkdir(parents=True)
    assert R.git_revision(sub) == "a" * 40
    (git / "refs" / "heads" / "main").unlink()
    (git / "packed-refs").write_text("# pack-refs\n" + "b" * 40 + " refs/heads/main\n")
    assert R.git_revision(sub) == "b" * 40
    (git / "HEAD").write_text("c" * 40 + "\n")  # detached
    assert R.git_revision(sub) == "c" * 40
    versions = R.package_versions()
    assert versions["torch"] and versions["transformers"] and versions["w2s-eval"]


def _world(**kw):
    args = dict(
        name="w",
        strong="s",
        tuned="t",
        untuned="u",
        reward_model=None,
        prompts=(("a", "x"), ("b", "y")),
        sampling=SamplingConfig(),
        gold=lambda p, r: [0.0] * len(r),
        judge=lambda p, r: [0.0] * len(r),
        manifest={},
    )
    args.update(kw)
    return World(**args)


def test_world_validates_and_registry_finds_worlds(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="duplicate prompt ids"):
        _world(prompts=(("a", "x"), ("a", "y")))
    with pytest.raises(ValueError, match="no evaluation prompts"):
        _world(prompts=())
    with pytest.raises(ValueError, match="gold"):
        _world(gold=None)
    with pytest.raises(ValueError, match="unknown world 'nope'"):
        load_world("nope", tmp_path)
    # a module named in W2S_EVAL_WORLD_MODULES is imported and registers its world
    (tmp_path / "my_worlds_mod.py").write_text(
        "from w2s_eval.world_registry import register_world\n"
        "from test_harness_records import _world\n"
        "register_world('plug', lambda home: _world(name='plug', strong=str(home)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("W2S_EVAL_WORLD_MODULES", "my_worlds_mod")
    try:
        assert "plug" in world_names()
        assert load_world("plug", tmp_path / "h").strong == str(tmp_path / "h")
    finally:
        unregister_world("plug")
    monkeypatch.setenv("W2S_EVAL_WORLD_MODULES", "no_such_module_xyz")
    with pytest.raises(ValueError, match="no_such_module_xyz"):
        load_world("nope2", tmp_path)
    register_world("bad", lambda home: "not a world")
    try:
        with pytest.raises(TypeError, match="not a World"):
            load_world("bad", tmp_path)
    finally:
        unregister_world("bad")


def test_worlds_register_without_an_import_cycle():
    import subprocess
    import sys

    code = (
        "import sys, {a}; from w2s_eval.world_registry import world_names; assert 'imdb-mini' in world_names(); "
        "bad = [m for m in sys.modules if m.startswith('{b}')]; assert not bad, bad"
    )
    # the world builders sit below the harness (the layer contract, tests/test_layers.py): they never import it
    subprocess.run([sys.executable, "-c", code.format(a="w2s_eval.world", b="w2s_eval.harness")], check=True)
    from w2s_eval import world_registry as worlds

    assert World is worlds.World and load_world is worlds.load_world  # the harness's names are the registry's


def test_an_unwritable_out_is_refused_before_anything_runs(tmp_path, monkeypatch):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # root may write anywhere, so the folder's permission is simulated where the check asks for it
    monkeypatch.setattr(R.os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    with pytest.raises(PermissionError, match=r"locked is not writable\); choose a writable --out"):
        R.check_run_dir(locked / "run", _cfg())
    monkeypatch.undo()
    assert R.check_run_dir(tmp_path / "new" / "run", _cfg())[0] == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()  # checking writes nothing
