"""Sharded compare runs (`compare --shard I/N`, `w2s-eval merge`) on the toy world: the shards' records, merged, are
the records of one process byte for byte (the clock held still); a killed shard resumes alone."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from harness_toyworld import InterruptingGold, gold_e_count, make_world, write_home

import w2s_eval.harness.compare as compare_module
import w2s_eval.harness.records as records_module
import w2s_eval.search as search_module
from w2s_eval.cli import main
from w2s_eval.harness.records import RECORDS_FILE, read_records
from w2s_eval.sharding import Shard, ShardBusyError, file_lock, shard_files
from w2s_eval.world_registry import register_world, unregister_world

TESTS = Path(__file__).parent
CLOCK = ("time", "wall_time_s", "batch_wall_time_s")


def test_shard_parse_select_and_names(tmp_path):
    assert Shard.parse("1/3") == Shard(1, 3) and str(Shard(1, 3)) == "1/3"
    assert Shard.parse(None) is None and Shard.parse("") is None
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="give I/N with 0 <= I < N"):
            Shard.parse(bad)
    slurm = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert Shard.parse("auto", slurm) == Shard(1, 3)
    assert Shard.parse("auto", {"RANK": "1", "WORLD_SIZE": "2"}) == Shard(1, 2)
    assert Shard.parse("auto", {}) is None and Shard.parse("auto", {"WORLD_SIZE": "1"}) is None
    # whole batches as one process cuts them: batches of 2 over 7 items, every 2nd batch from batch 1
    assert Shard(1, 2).select(list(range(7)), 2) == [2, 3, 6]
    assert Shard(0, 2).select(list(range(7)), 2) == [0, 1, 4, 5]
    assert Shard(1, 2).file("records.jsonl") == "records.shard-1-of-2.jsonl"
    for s in (Shard(1, 2), Shard(0, 2), Shard(0, 10)):
        (tmp_path / s.file("records.jsonl")).write_text("")
    (tmp_path / "records.jsonl").write_text("")
    assert [s for s, _ in shard_files(tmp_path, "records.jsonl")] == [Shard(0, 2), Shard(1, 2), Shard(0, 10)]


def test_a_held_lock_is_refused_at_once(tmp_path):
    with file_lock(tmp_path / "f", "shard 0/2"):
        with pytest.raises(ShardBusyError, match="shard 0/2 is in use by another process"):
            with file_lock(tmp_path / "f", "shard 0/2"):
                pass
    with file_lock(tmp_path / "f", "shard 0/2"):  # released
        pass


@pytest.fixture
def still_clock(monkeypatch):
    """Every clock a record reads, held still, so that runs can be compared byte for byte."""
    monkeypatch.setattr(search_module, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))
    monkeypatch.setattr(compare_module, "utc_now", lambda: "2026-01-01T00:00:00+00:00")
    monkeypatch.setattr(records_module, "utc_now", lambda: "2026-01-01T00:00:00+00:00")


def _compare(home, out, *extra, world="toy"):
    return main(
        [
            "compare",
            "--world",
            world,
            "--world-home",
            str(home),
            "--methods",
            "base,bon:n=2,cbs:w=1,k=2,l=3",
            "--prompts",
            "5",
            "--seeds",
            "2",
            "--batch-size",
            "2",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--max-new-tokens",
            "5",
            "--no-progress",
            "--no-report",
            *extra,
        ]
    )


def test_two_shards_merge_to_the_bytes_of_one_process(tmp_path, toy_dirs, monkeypatch, still_clock, capsys):
    monkeypatch.setenv("W2S_EVAL_WORLD_MODULES", "harness_toyworld")
    home = write_home(tmp_path / "home", toy_dirs)
    one, two = tmp_path / "one", tmp_path / "two"
    assert _compare(home, one) == 0
    assert _compare(home, two, "--shard", "1/2") == 0  # in either order
    assert (
        "shard 1/2: 12 new records" in capsys.readouterr().out
    )  # batch 1 of 0..2 (batches of 2): 2 prompts x 3 methods x 2 seeds
    assert _compare(home, two, "--shard", "0/2") == 0
    assert not (two / RECORDS_FILE).exists()
    assert main(["merge", str(two)]) == 0
    assert (two / RECORDS_FILE).read_bytes() == (one / RECORDS_FILE).read_bytes()
    assert not shard_files(two, RECORDS_FILE) and not list(two.glob("*.shard-*"))
    records = read_records(two / RECORDS_FILE)[0]
    assert len(records) == 5 * 3 * 2 and sorted({r["prompt_index"] for r in records}) == [0, 1, 2, 3, 4]
    assert json.loads((two / "model_shapes.json").read_text()) == json.loads((one / "model_shapes.json").read_text())
    # a later compare without --shard finds everything recorded
    assert _compare(home, two) == 0 and "0 new records" in capsys.readouterr().out


def test_a_killed_shard_resumes_alone_and_report_merges(tmp_path, toy_dirs, still_clock, capsys):
    state = {"gold": InterruptingGold(after=3)}
    register_world(
        "toy-kill", lambda home: make_world(toy_dirs, gold=lambda p, r: state["gold"](p, r), name="toy-kill")
    )
    try:
        ref = tmp_path / "ref"
        state["gold"] = gold_e_count
        assert _compare(tmp_path, ref, world="toy-kill") == 0
        out = tmp_path / "run"
        state["gold"] = InterruptingGold(after=3)
        assert _compare(tmp_path, out, "--shard", "0/2", world="toy-kill") == 130  # killed (Ctrl-C) mid-run
        kept = read_records(out / Shard(0, 2).file(RECORDS_FILE))[0]
        assert 0 < len(kept) < 18
        state["gold"] = gold_e_count
        assert _compare(tmp_path, out, "--shard", "1/2", world="toy-kill") == 0  # the other shard runs untouched
        # the report merges what has finished; the killed shard's records are merged too, and it resumes alone
        assert main(["merge", str(out)]) == 0
        assert len(read_records(out / RECORDS_FILE)[0]) == len(kept) + 12
        assert _compare(tmp_path, out, "--shard", "0/2", world="toy-kill") == 0
        assert f"{18 - len(kept)} new records" in capsys.readouterr().out
        assert main(["report", str(out), "--no-plots"]) == 0
        want = {_key(r): _clockless(r) for r in read_records(ref / RECORDS_FILE)[0]}
        got = {_key(r): _clockless(r) for r in read_records(out / RECORDS_FILE)[0]}
        assert got == want and len(got) == 30
    finally:
        unregister_world("toy-kill")


def test_a_running_shard_is_refused_and_left_out_of_a_merge(tmp_path, toy_dirs, monkeypatch, capsys):
    monkeypatch.setenv("W2S_EVAL_WORLD_MODULES", "harness_toyworld")
    home = write_home(tmp_path / "home", toy_dirs)
    out = tmp_path / "run"
    assert _compare(home, out, "--shard", "1/2") == 0
    path = out / Shard(1, 2).file(RECORDS_FILE)
    with file_lock(path, "shard 1/2"):  # as if it were still running
        assert _compare(home, out, "--shard", "1/2") == 2
        assert "is in use by another process" in capsys.readouterr().err
        assert main(["merge", str(out)]) == 1  # nothing merged while it runs
        assert path.exists() and not (out / RECORDS_FILE).exists()
    assert main(["merge", str(out)]) == 0 and not path.exists()


def _key(r):
    return (r["prompt_id"], r["method"], r["seed"])


def _clockless(r):
    return {k: v for k, v in r.items() if k not in CLOCK}


@pytest.mark.slow
def test_cli_shards_as_a_slurm_array_and_under_torchrun(tmp_path, toy_dirs):
    """The docs' commands, on CPU: two shards as the tasks of a SLURM array would see them (--shard auto), then
    under torchrun (RANK/WORLD_SIZE, what accelerate launch sets too); each merged by `w2s-eval report`, each equal
    to one process's records but for the clock."""
    home = write_home(tmp_path / "home", toy_dirs)
    env = dict(
        os.environ,
        W2S_EVAL_WORLD_MODULES="harness_toyworld",
        PYTHONPATH=str(TESTS),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    args = [
        "compare",
        "--world",
        "toy",
        "--world-home",
        str(home),
        "--methods",
        "base,cbs:w=1,k=2,l=3",
        "--prompts",
        "4",
        "--seeds",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--max-new-tokens",
        "4",
        "--no-progress",
        "--no-report",
    ]
    cli = [sys.executable, "-m", "w2s_eval.cli"]
    subprocess.run(cli + args + ["--out", str(tmp_path / "one")], env=env, check=True, timeout=300)
    slurm = [
        subprocess.Popen(
            cli + args + ["--out", str(tmp_path / "slurm"), "--shard", "auto"],
            env=dict(env, SLURM_ARRAY_TASK_ID=str(i), SLURM_ARRAY_TASK_COUNT="2"),
        )
        for i in range(2)
    ]
    assert [p.wait(timeout=300) for p in slurm] == [0, 0]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "w2s_eval.cli"]
    subprocess.run(
        torchrun + args + ["--out", str(tmp_path / "torchrun"), "--shard", "auto"], env=env, check=True, timeout=300
    )
    want = [_clockless(r) for r in read_records(tmp_path / "one" / RECORDS_FILE)[0]]
    for name in ("slurm", "torchrun"):
        assert len(shard_files(tmp_path / name, RECORDS_FILE)) == 2
        subprocess.run(cli + ["report", str(tmp_path / name), "--no-plots"], env=env, check=True, timeout=300)
        assert [_clockless(r) for r in read_records(tmp_path / name / RECORDS_FILE)[0]] == want
