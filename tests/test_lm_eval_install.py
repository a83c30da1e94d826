"""An editable install (``pip install -e .``) must make the stock ``lm_eval --model w2s`` resolve (issue 12
item 11): the build backend puts the startup hook into editable installs too. An editable install of a copy of
the source tree into a fresh venv (no dependencies installed: they come from this environment by a path entry,
whose own .pth files Python does not run), then lm-eval's registry resolves ``w2s`` from that install."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from test_lm_eval_helpers import REPO, env

pytestmark = pytest.mark.slow  # processes, servers or training: deselect with -m 'not slow'

PACKAGING = ("pyproject.toml", "README.md", "MANIFEST.in", "compat", "w2s_eval")


def test_editable_install_resolves_model_w2s(tmp_path):
    from w2s_eval.lm_eval_backend import PTH_NAME, pth_line

    src = tmp_path / "src"
    src.mkdir()
    for rel in PACKAGING:
        (shutil.copytree if (REPO / rel).is_dir() else shutil.copy)(REPO / rel, src / rel)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    py = str(tmp_path / "venv" / "bin" / "python")
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    pip = subprocess.run(
        [py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-e", str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
    )
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-3000:]
    assert (Path(site) / PTH_NAME).read_text(encoding="utf-8") == pth_line()
    code = (
        "import sys; assert 'lm_eval' not in sys.modules\n"
        "import lm_eval.api.registry as r\n"
        "import w2s_eval\n"
        "m = r.get_model('w2s'); print(m.__module__, m.__name__, w2s_eval.__file__)\n"
    )
    out = subprocess.run(
        [py, "-c", code], capture_output=True, text=True, timeout=300, env=env(), cwd=str(tmp_path)
    )  # not the repo: its w2s_eval/ would shadow the install
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["w2s_eval.lm_eval_backend.backend", "W2SLM", str(src / "w2s_eval" / "__init__.py")]
    uninstall = subprocess.run(
        [py, "-m", "pip", "uninstall", "-y", "w2s-eval"], capture_output=True, text=True, timeout=120, env=env()
    )
    assert uninstall.returncode == 0 and not (Path(site) / PTH_NAME).exists()  # the RECORD lists the hook


def test_regular_wheel_ships_the_hook_at_its_root(tmp_path):
    """``pip install w2s-eval`` (a regular wheel) gets the same startup hook as an editable install."""
    import zipfile

    from w2s_eval.lm_eval_backend import PTH_NAME, pth_line

    src = tmp_path / "src"
    src.mkdir()
    for rel in PACKAGING:
        (shutil.copytree if (REPO / rel).is_dir() else shutil.copy)(REPO / rel, src / rel)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert z.read(PTH_NAME).decode("utf-8") == pth_line()
        record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        assert any(line.startswith(PTH_NAME + ",") for line in z.read(record).decode().splitlines())
        assert not [n for n in z.namelist() if n.startswith(("devtools/", "tests/"))]
