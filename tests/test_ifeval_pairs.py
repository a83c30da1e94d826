"""The ifeval-mini pair maker: pairs that follow or break IFEval constraints, labelled by lm-eval's own checkers."""

import pytest

pytest.importorskip("langdetect")
pytest.importorskip("immutabledict")

from w2s_eval.world.ifeval_pairs import (  # noqa: E402
    REWRITES,
    PairMaker,
    cut_reference,
    fits_budget,
    make_constraint_pairs,
    min_words,
)

REFERENCE = (
    "Kickball is a simple game, much like baseball. Players kick a rubber ball instead of hitting it. "
    "Each team takes turns kicking and fielding. The team with more runs after nine innings wins. "
    "Bases are run in order, and a runner is out when tagged or hit below the shoulders."
)
ITEMS = [
    ("How is kickball played?", REFERENCE),
    (
        "Describe a good breakfast, please.",
        "A good breakfast has protein, fibre and fruit. Eggs, oats and "
        "berries are a fine start. Drink water, and add coffee or tea if you like it.",
    ),
    (
        "What is the capital of France?",
        "The capital of France is Paris. It lies on the Seine, and it has been the capital for centuries.",
    ),
]


def _checker(instruction_id, args):
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    c = INSTRUCTION_DICT[instruction_id](instruction_id)
    c.build_description(**args)
    return c


@pytest.fixture(scope="module")
def pairs(ifeval_home):
    return make_constraint_pairs(ITEMS, 60, seed=3, cache=ifeval_home)


def test_pairs_follow_and_break_by_the_registry_checkers(pairs):
    rows, info = pairs
    assert info["pairs"] == len(rows) == 60 and info["tries"] >= 60 and info["types"] >= 10
    for p in rows:
        assert p["prompt"].startswith(p["instruction"]) and p["chosen"] != p["rejected"]
        checks = [_checker(i, a) for i, a in zip(p["instruction_id_list"], p["kwargs"])]
        # the label is the checker's: the chosen text meets every constraint, the rejected one breaks one
        assert all(c.check_following(p["chosen"]) for c in checks)
        assert not all(c.check_following(p["rejected"]) for c in checks)
        assert p["r_chosen"] == 1.0 > p["r_rejected"]
        for c in checks:  # the registry's own description is in the prompt
            assert c.build_description(**(c.get_instruction_args() or {})).split("{")[0][:20] in p["prompt"]


def test_pairs_are_deterministic_and_leave_random_alone(pairs, ifeval_home):
    import random

    random.seed(123)
    before = random.random()
    random.seed(123)
    again, _ = make_constraint_pairs(ITEMS, 60, seed=3, cache=ifeval_home)
    assert random.random() == before  # the module random's state is restored
    assert again == pairs[0]
    other, _ = make_constraint_pairs(ITEMS, 60, seed=4, cache=ifeval_home)
    assert other != pairs[0]


def test_pair_maker_rejects_unknown_ids_and_empty_input(ifeval_home):
    with pytest.raises(ValueError, match="no rewrite for instruction ids"):
        PairMaker(ids=("language:response_language",))
    with pytest.raises(ValueError, match="at least one"):
        make_constraint_pairs([], 3, 0)


def test_every_rewrite_meets_its_own_constraint(ifeval_home):
    import random

    from w2s_eval.world.ifeval_pairs import _constraint, seeded_random

    rng = random.Random(0)
    with seeded_random(0):
        for instruction_id, rewrite in REWRITES.items():
            c = _constraint(instruction_id, ITEMS[0][0], rng)
            text = rewrite(cut_reference(REFERENCE, 60), c.args, rng, ITEMS[0][0])
            assert c.checker.check_following(text), instruction_id


def test_budget_filter_and_reference_cut():
    assert min_words("length_constraints:number_words", {"relation": "at least", "num_words": 300}) == 300
    assert min_words("length_constraints:number_words", {"relation": "less than", "num_words": 300}) == 0
    assert min_words("punctuation:no_comma", {}) == 0
    assert fits_budget(["punctuation:no_comma", "detectable_format:number_bullet_lists"], [{}, {"num_bullets": 3}], 75)
    assert not fits_budget(["length_constraints:number_paragraphs"], [{"num_paragraphs": 6}], 75)
    cut = cut_reference(REFERENCE, 20)
    assert REFERENCE.startswith(cut) and cut.endswith(".") and len(cut.split()) <= 20
    assert cut_reference("one two three four five", 3) == "one two three"
