"""``--use_cache`` with ``--model w2s``: the cache file records the settings that made its answers
and refuses a run with other settings (issue 12 item 1). The stock-CLI run is in test_lm_eval_cli.py."""

from __future__ import annotations

import sqlite3

import pytest

from w2s_eval.lm_eval_backend.args import parse_model_args
from w2s_eval.lm_eval_backend.cache import IDENTITY_TABLE, cache_identity, check_cache_identity


def _identity(**kw):
    args, _ = parse_model_args({"strong": "S", "method": "base", **kw})
    return cache_identity(args.to_dict())


def test_same_settings_reuse_other_settings_refused(tmp_path):
    db = str(tmp_path / "lm_rank0.db")
    assert check_cache_identity(db, _identity()) is None  # first run records
    assert check_cache_identity(db, _identity(batch_size=3, device="cpu")) == _identity()  # placement only: reuse
    with pytest.raises(ValueError, match=r"strong is 'S' there but 'T' now"):
        check_cache_identity(db, _identity(strong="T"))
    with pytest.raises(ValueError, match=r"method is 'base' there but 'cbs' now.*another --use_cache path"):
        check_cache_identity(db, _identity(method="cbs", w=2, k=2, l=4))
    with pytest.raises(ValueError, match=r"seed is 0 there but 1 now"):
        check_cache_identity(db, _identity(seed=1))


def test_cache_with_answers_but_no_identity_is_refused(tmp_path):
    from sqlitedict import SqliteDict  # lm-eval's cache store

    db = str(tmp_path / "lm_rank0.db")
    with SqliteDict(db, autocommit=True) as d:
        d["some-request-hash"] = "an answer of another backend"
    with pytest.raises(ValueError, match="holds 1 answers but no record of the settings"):
        check_cache_identity(db, _identity())
    with sqlite3.connect(db) as con:  # nothing was recorded by the refusal
        assert con.execute(f'SELECT COUNT(*) FROM "{IDENTITY_TABLE}"').fetchone()[0] == 0
