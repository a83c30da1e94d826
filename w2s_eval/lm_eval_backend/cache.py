"""``--use_cache`` made safe for ``--model w2s``.

lm-eval keys its request cache (``P_rank<r>.db``, sqlite) by the request alone, so a second run with other
w2s settings into the same ``P`` would get the first run's answers. When lm-eval attaches the cache, the
backend stores the run's identity (every model arg that decides an answer, with the resolved method) in a
table of that file (``w2s_eval_identity``, JSON text) or refuses a cache made with another identity, naming
the first differing field (:func:`w2s_eval.provenance.diff_fields`); a cache holding answers but no
identity (another backend, an older w2s-eval) is refused too.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Optional

from ..provenance import diff_fields, mismatch_message
from ..spec import PLACEMENT_FIELDS

__all__ = ["IDENTITY_TABLE", "PLACEMENT_KEYS", "cache_identity", "check_cache_identity"]

IDENTITY_TABLE = "w2s_eval_identity"
# model args that change where or how fast the answers are computed, not the answers
PLACEMENT_KEYS = PLACEMENT_FIELDS + ("batch_size", "loglik_batch_size", "stats_path", "trust_remote_code")


def cache_identity(model_args: dict) -> dict:
    """The part of the resolved model args (``W2SArgs.to_dict()``) that decides the answers."""
    return {k: v for k, v in model_args.items() if k not in PLACEMENT_KEYS}


def _answers(con: sqlite3.Connection) -> int:
    """How many answers lm-eval's own tables in this file hold."""
    n = 0
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
        if table != IDENTITY_TABLE:
            n += con.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
    return n


def check_cache_identity(db_path: str, identity: dict) -> Optional[dict]:
    """Record ``identity`` in the cache file ``db_path``, or check it against the one recorded there.

    Returns the recorded identity (None when this call recorded it); raises ValueError naming the first
    differing field when the cache was made by another configuration.
    """
    fix = f"use another --use_cache path for these settings, or delete {db_path} to start that cache afresh"
    con = sqlite3.connect(db_path, timeout=60)
    try:
        with con:
            con.execute(f'CREATE TABLE IF NOT EXISTS "{IDENTITY_TABLE}" (key TEXT PRIMARY KEY, value TEXT NOT NULL)')
            row = con.execute(f'SELECT value FROM "{IDENTITY_TABLE}" WHERE key = ?', ("identity",)).fetchone()
            if row is None:
                n = _answers(con)
                if n:
                    raise ValueError(
                        f"w2s: the request cache {db_path} holds {n} answers but no record of the "
                        f"settings that made them (another model backend or an older w2s-eval); "
                        f"refusing to reuse them: {fix}"
                    )
                con.execute(
                    f'INSERT INTO "{IDENTITY_TABLE}" (key, value) VALUES (?, ?)',
                    ("identity", json.dumps(identity, sort_keys=True, default=str)),
                )
                return None
            recorded = json.loads(row[0])
    finally:
        con.close()
    diffs = diff_fields(recorded, json.loads(json.dumps(identity, default=str)))
    if diffs:
        raise ValueError("w2s: " + mismatch_message(f"the request cache {db_path}", diffs, fix[0].upper() + fix[1:]))
    return recorded
