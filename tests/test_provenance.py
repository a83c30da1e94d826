"""The one provenance module: atomic strict-JSON writes with kept file modes, versions, hashes, identity checks."""

import json
import math
import os
import stat
import subprocess
import sys

import pytest

from w2s_eval import provenance as P


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_files_get_the_umask_and_existing_files_keep_their_mode(tmp_path):
    old = os.umask(0o027)
    try:
        new = P.atomic_write_text(tmp_path / "sub" / "a.txt", "x\n")
        assert new.read_text() == "x\n" and _mode(new) == 0o640  # 0o666 & ~0o027, not mkstemp's 0600
        shared = tmp_path / "board.csv"
        shared.write_text("a\n")
        os.chmod(shared, 0o664)
        P.atomic_write_text(shared, "a\nb\n")
        assert shared.read_text() == "a\nb\n" and _mode(shared) == 0o664
        os.chmod(shared, 0o600)
        P.atomic_write_json(shared, {"k": 1})
        assert _mode(shared) == 0o600
    finally:
        os.umask(old)
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind


def test_umask_is_read_as_the_process_sees_it(tmp_path):
    # in a child with another umask (so /proc/self/status is that process's)
    code = (
        "import os; os.umask(0o077); from w2s_eval.provenance import atomic_write_text as w; "
        f"w({str(tmp_path / 'f')!r}, 'x')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert _mode(tmp_path / "f") == 0o600


def test_json_is_strict_and_names_the_non_finite_field(tmp_path):
    path = tmp_path / "config.json"
    P.atomic_write_json(path, {"b": [1, 2], "a": {"x": 0.5}})
    assert json.loads(path.read_text()) == {"a": {"x": 0.5}, "b": [1, 2]} and path.read_text().endswith("\n")
    for bad, field in (
        ({"identity": {"guide_beta": math.nan}}, "identity.guide_beta"),
        ({"xs": [1.0, math.inf]}, "xs.1"),
    ):
        with pytest.raises(ValueError, match=rf"refusing to write .*config\.json: {field} is (nan|inf)"):
            P.atomic_write_json(path, bad)
    assert json.loads(path.read_text()) == {"a": {"x": 0.5}, "b": [1, 2]}  # the old file is untouched


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(P.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        P.atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_fingerprint_is_the_committed_canonical_form():
    # the hash of results/imdb-mini's identity depends on exactly this form
    assert P.fingerprint({"b": 1, "a": [1, "x"]}) == P.fingerprint({"a": [1, "x"], "b": 1})
    import hashlib

    assert P.fingerprint({"a": 1.0}) == hashlib.sha256(b'{"a":1.0}').hexdigest()[:16]


def test_diff_fields_first_field_in_the_new_configs_order():
    old = {"world": "w", "sampling": {"temperature": 1.0, "top_k": 50}, "dtype": "float32", "gone": 1}
    new = {"world": "w", "sampling": {"temperature": 0.5, "top_k": 50}, "dtype": "bfloat16", "extra": [1]}
    assert P.diff_fields(old, new) == [
        ("sampling.temperature", 1.0, 0.5),
        ("dtype", "float32", "bfloat16"),
        ("extra", P.MISSING, [1]),
        ("gone", 1, P.MISSING),
    ]
    assert P.diff_fields(old, old) == []
    msg = P.mismatch_message("results directory R", P.diff_fields(old, new))
    assert msg.startswith(
        "results directory R was made with a different config: sampling.temperature is 1.0 "
        "there but 0.5 now (and 3 more field(s): dtype, extra, gone)"
    )


def test_check_identity(tmp_path):
    path = tmp_path / "config.json"
    assert P.check_identity(path, {"a": 1}, "dir D") is None
    P.atomic_write_json(path, {"identity": {"a": 1, "b": {"c": 2}}, "grid": [1]})
    assert P.check_identity(path, {"a": 1, "b": {"c": 2}}, "dir D")["grid"] == [1]
    with pytest.raises(ValueError, match="dir D was made with a different config: b.c is 2 there but 3 now"):
        P.check_identity(path, {"a": 1, "b": {"c": 3}}, "dir D")
    path.write_text("NaN")
    with pytest.raises(ValueError, match="not a w2s-eval run config"):
        P.check_identity(path, {"a": 1}, "dir D")


def test_mean_se_small_samples_and_a_hand_computation():
    assert P.mean_se([]) == (None, None)
    assert P.mean_se([2.5]) == (2.5, None)
    m, se = P.mean_se([1.0, 2.0, 4.0])
    assert m == pytest.approx(7 / 3, rel=1e-12)
    assert se == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2 / 3), rel=1e-12)


def test_package_versions_and_git_revision(tmp_path):
    v = P.package_versions()
    assert v["python"] and v["torch"] and v["transformers"] and v["w2s-eval"]
    assert P.package_versions(("no-such-package-xyz",))["no-such-package-xyz"] is None
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text("a" * 40 + "\n")
    sub = tmp_path / "repo" / "pkg"
    sub.mkdir()
    assert P.git_revision(sub) == "a" * 40


def test_the_committed_reference_run_hashes_to_its_recorded_config_hash():
    from pathlib import Path

    stored = json.loads((Path(__file__).parents[1] / "results" / "imdb-mini" / "run_config.json").read_text())
    assert P.fingerprint(stored["identity"]) == stored["config_hash"] == "38d80bad8d94cdde"


def test_append_jsonl_appends_whole_lines_in_order(tmp_path):
    path = tmp_path / "stats.jsonl"
    assert P.append_jsonl(path, [{"a": 1, "p": tmp_path}], default=str) == path
    P.append_jsonl(path, [{"b": "ü"}, {"c": float("nan")}])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines[:2]] == [{"a": 1, "p": str(tmp_path)}, {"b": "ü"}]
    assert len(lines) == 3 and math.isnan(json.loads(lines[2])["c"])  # stats lines are not strict JSON
    with pytest.raises(TypeError):
        P.append_jsonl(path, [{"p": tmp_path}])  # no default: a path is not JSON


# ----------------------------------------------------------------------------- issue 25, item 5: one writer


def test_run_dir_lock_refuses_a_second_writer_and_takes_over_after_a_dead_one(tmp_path):
    """A child process holds the lock (flock): another writer is refused naming the child's pid; once the child
    is killed (SIGKILL: no clean-up), its lock file is left behind and taken over. A refused or finished run
    leaves no lock file, and no folder it made for nothing."""
    import signal
    import subprocess
    import sys

    from w2s_eval.provenance import LOCK_FILE, RunDirBusy, run_dir_lock

    out = tmp_path / "runs" / "one"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from w2s_eval.provenance import run_dir_lock\n"
            f"with run_dir_lock({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(
            RunDirBusy,
            match=rf"--out {out} is in use: pid {child.pid} \(.*\) is writing there; "
            r"wait for it to finish, or give another --out",
        ):
            with run_dir_lock(out):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert (out / LOCK_FILE).exists()  # the dead writer's
    with run_dir_lock(out) as d:
        assert json.loads((d / LOCK_FILE).read_text())["pid"] == os.getpid()
        (d / "records.jsonl").write_text("")
    assert sorted(p.name for p in out.iterdir()) == ["records.jsonl"]
    with run_dir_lock(tmp_path / "a" / "b"):
        pass
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        with run_dir_lock(tmp_path / "file"):
            pass


def test_follow_umask_gives_saved_files_the_umask_mode(tmp_path):
    from w2s_eval.provenance import follow_umask

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "w.safetensors").write_bytes(b"x")
    os.chmod(tmp_path / "d" / "w.safetensors", 0o600)  # as safetensors writes it
    old = os.umask(0o002)
    try:
        follow_umask(tmp_path / "d")
    finally:
        os.umask(old)
    assert oct(os.stat(tmp_path / "d" / "w.safetensors").st_mode & 0o777) == oct(0o664)
    assert oct(os.stat(tmp_path / "d").st_mode & 0o777) == oct(0o775)
