"""Answer extraction and the reward worker: right, wrong, hanging and hostile answers."""

import time
from pathlib import Path

import pytest

from introllm.training.rewards import RewardWorker, extract_answer, load_scorer, math_reward

HERE = Path(__file__).parent


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 + 4 = 7. Answer: 7", "7"),
        ("answer: -12.", "-12"),
        ("The answer is **42**", "42"),
        ("so \\boxed{\\frac{1}{2}} holds", "\\frac{1}{2}"),
        ("first 3 then 5", "5"),
        ("no digits at all", ""),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


COMPLETIONS = [
    "3 + 4 = 7. Answer: 7",
    "So the answer is $\\frac{3}{4}$.",
    "**Final Answer**\n\\[\n\\boxed{\\sqrt{2}}\n\\]",
    "First \\boxed{2}, then \\boxed{(1, 2)}",
    "Answer: 10^{3}",
    "It costs \\$5.50 in all",
    "The final answer is $-12$. I hope it is correct.",
]


@pytest.mark.parametrize("completion", COMPLETIONS)
def test_string_and_math_extraction_pick_the_same_part(completion):
    """The string the rg / exact scorers and reports see is what the math scorer checks."""
    from introllm.training.answers import is_correct

    extracted = extract_answer(completion)
    assert extracted
    assert is_correct(completion, extracted)


def test_the_answers_module_doctests_hold():
    import doctest

    from introllm.training import answers

    failed, attempted = doctest.testmod(answers)
    assert attempted >= 5 and failed == 0


def test_a_reference_that_does_not_parse_is_an_error_not_a_reward():
    from introllm.training.answers import parse_gold

    for gold in ["", "  ", "\\boxed{"]:
        with pytest.raises(ValueError, match="could not be parsed"):
            parse_gold(gold)
        with pytest.raises(ValueError):
            math_reward("Answer: 1", gold, {})


def test_math_reward_checks_equivalent_forms():
    assert math_reward("Answer: 0.5", "\\frac{1}{2}", {}) == 1.0
    assert math_reward("\\boxed{\\frac{2}{4}}", "1/2", {}) == 1.0
    assert math_reward("Answer: 3", "4", {}) == 0.0


@pytest.fixture(scope="module")
def worker():
    with RewardWorker(timeout=3.0) as w:
        yield w


def test_worker_scores_right_and_wrong_answers(worker):
    result = worker.score("math", ["Answer: 12", "Answer: 13"], ["12", "12"], [{}, {}])
    assert result.rewards == [1.0, 0.0]
    assert result.num_errors == result.num_timeouts == 0


def test_reasoning_gym_scorer(worker):
    import reasoning_gym

    entry = next(
        iter(
            reasoning_gym.create_dataset(
                "basic_arithmetic", size=1, seed=3, min_terms=2, max_terms=2, min_digits=1, max_digits=1
            )
        )
    )
    good, _ = worker.check("rg", f"Answer: {entry['answer']}", entry["answer"], entry)
    bad, _ = worker.check("rg", "Answer: 123456", entry["answer"], entry)
    assert good == 1.0 and bad < 1.0


def test_a_hanging_check_is_killed_at_the_deadline_and_the_worker_restarts(worker):
    t = time.monotonic()
    reward, error = worker.check("sleep", "", "60", {})
    assert (reward, error) == (0.0, "timeout")
    assert time.monotonic() - t < 10
    assert worker.check("math", "Answer: 2", "2", {}) == (1.0, None)


def test_an_adversarial_expression_finishes_within_the_timeout_with_reward_0(worker):
    # sympy would evaluate this power tower exactly, for longer than anyone waits
    hostile = "Answer: 10^{10^{10^{10}}}"
    worker.check("math", "Answer: 1", "1", {})  # worker started: the clock below times the check only
    t = time.monotonic()
    result = worker.score("math", [hostile], ["2^{x}"], [{}])  # a symbolic reference: sympy compares them
    assert time.monotonic() - t < worker.timeout + 5
    assert result.rewards == [0.0] and result.num_timeouts == 1
    assert worker.check("math", "Answer: 7", "7", {}) == (1.0, None)  # a fresh worker took over


def test_an_injection_string_has_no_side_effect(worker, tmp_path):
    target = tmp_path / "pwned"
    payloads = [
        f"Answer: __import__('os').system('touch {target}')",
        f"Answer: \\boxed{{__import__('pathlib').Path('{target}').touch()}}",
        f"Answer: eval(\"open('{target}', 'w')\")",
    ]
    result = worker.score("math", payloads, ["1"] * 3, [{}] * 3)
    assert result.rewards == [0.0, 0.0, 0.0]
    assert not target.exists()


def test_an_unparsable_reference_scores_0_and_counts_as_an_error_in_the_worker(worker):
    result = worker.score("math", ["Answer: 1"], [""], [{}])
    assert result.rewards == [0.0] and result.num_errors == 1


def test_a_raising_reward_counts_as_zero_and_as_an_error(worker):
    result = worker.score(f"{HERE / 'data' / 'parity_reward.py'}:boom", ["x", "yy"], ["1", "1"], [{}, {}])
    assert result.rewards == [0.0, 0.0]
    assert result.num_errors == 2


def test_user_reward_from_a_file(worker):
    result = worker.score(f"{HERE / 'data' / 'parity_reward.py'}:parity", ["x", "yy"], ["1", "1"], [{}, {}])
    assert result.rewards == [0.0, 1.0]


def test_unknown_rewards_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        load_scorer("nope")
    with pytest.raises(ValueError, match="does not exist"):
        load_scorer("/no/such/file.py:fn")
    with pytest.raises(ValueError, match="no function 'missing'"):
        load_scorer(f"{HERE / 'data' / 'parity_reward.py'}:missing")
