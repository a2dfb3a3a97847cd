"""Answer extraction and checking on the inputs of issue 12 (items 7-9), each with a right and a
wrong value, and on the gold answers of the benchmark files users hold.

Imports only names that the reward module has always exported, so that this file also runs against
older code (it did: see the report of the branch that added it)."""

import json
from pathlib import Path

import pytest

from introllm.training.rewards import RewardWorker, extract_answer, math_reward

BENCHMARKS = Path("/work/shared/benchmarks")

# ------------------------------------------------------------------ item 7: last box wins, phrases only

ISSUE_7 = [
    "To find the answer, we add the two numbers.\n3 + 4 = 7\nSo the total is \\boxed{7}.",
    "3 + 4 = 7, so the total is \\boxed{7}.\nI hope this answer helps!",
    "There are two possible answers to consider here.\nThe sum is 3 + 4, which gives \\boxed{7}.",
    "My first answer is \\boxed{5}.\nChecking again, 3 + 4 = 7, so \\boxed{7}.",
    "**Final Answer**\n\\[\n\\boxed{7}\n\\]",
]


@pytest.mark.parametrize("completion", ISSUE_7)
def test_issue_7_examples_score_1_against_7(completion):
    assert math_reward(completion, "7", {}) == 1.0
    assert extract_answer(completion) == "7"


@pytest.mark.parametrize("completion", ISSUE_7)
def test_issue_7_examples_with_a_wrong_last_box_score_0(completion):
    i = completion.rindex("\\boxed{7}")
    wrong = completion[:i] + "\\boxed{8}" + completion[i + len("\\boxed{7}") :]
    assert math_reward(wrong, "7", {}) == 0.0
    assert extract_answer(wrong) == "8"


def test_an_earlier_right_box_does_not_rescue_a_wrong_last_box():
    completion = "So \\boxed{7}.\nWait, I made an error: 3 + 5 = 8, so \\boxed{8}."
    assert math_reward(completion, "7", {}) == 0.0
    assert math_reward(completion, "8", {}) == 1.0


@pytest.mark.parametrize(
    "completion, extracted",
    [
        ("3 + 4 = 7.\nAnswer: 7", "7"),  # the format the default training prompt asks for
        ("**Answer:** 7", "7"),
        ("**Answer**: 7", "7"),
        ("The answer is **7**.", "7"),
        ("Adding gives 7.\nThe final answer is $7$.", "7"),
        ("**Final Answer**\n7", "7"),
        ("## Final Answer\n\n$7$", "7"),
        ("Answer: 8\nNo, 3 + 4 = 7, so the answer is 7.", "7"),  # the last phrase wins
        ("Answer: 7. That is 3 + 4, not 4 + 4 = 8.", "7"),  # the first sentence after the phrase
        ("The final answer is $7$. I hope it is correct.", "7"),  # Minerva's few-shot format
        ("So, the final answer is $7.$", "7"),  # SmolLM2 on MATH-500
    ],
)
def test_answer_phrases_without_a_box(completion, extracted):
    assert extract_answer(completion) == extracted
    assert math_reward(completion, "7", {}) == 1.0
    assert math_reward(completion, "8", {}) == 0.0


def test_a_phrase_followed_by_reasoning_is_checked_on_the_rest_of_its_line():
    assert math_reward("Answer: Let me add them. 3 + 4 = 7", "7", {}) == 1.0
    assert math_reward("Answer: Let me add them. 3 + 4 = 8", "7", {}) == 0.0


@pytest.mark.parametrize(
    "completion",
    [
        "To find the answer, we add 3 and 4 and get 7.",
        "Both answers, 3 and 4, add up to 7.",
        "The answer to this kind of question with 2 numbers: add them. 3 + 4 = 7",
    ],
)
def test_the_word_answer_alone_is_not_a_phrase_the_last_number_counts(completion):
    assert math_reward(completion, "7", {}) == 1.0
    assert math_reward(completion, "3", {}) == 0.0


# ------------------------------------------------------------------ item 8: escaped dollars and formats


def test_issue_8_escaped_dollar_in_the_box_and_in_the_gold():
    assert math_reward("\\boxed{\\$18.90}", "18.90", {}) == 1.0
    assert math_reward("\\boxed{18.90}", "\\$18.90", {}) == 1.0  # the gold parses
    assert math_reward("\\boxed{\\$18.90}", "\\$18.90", {}) == 1.0
    assert math_reward("\\boxed{\\$18.09}", "\\$18.90", {}) == 0.0


@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        # currency: only an unescaped $ delimits math
        ("The total is \\boxed{\\$18.90}.", "\\$18.90", 1.0),
        ("The total is \\boxed{\\$19.80}.", "\\$18.90", 0.0),
        ("Answer: \\$18.90", "18.90", 1.0),
        ("Answer: \\$18.09", "18.90", 0.0),
        ("She pays \\$5 for lunch and \\$13.90 for dinner, \\$18.90 in all.", "\\$18.90", 1.0),
        ("She pays \\$5 for lunch and \\$13.90 for dinner, \\$19.90 in all.", "\\$18.90", 0.0),
        ("Answer: $18.90", "\\$18.90", 1.0),
        ("Answer: $81.90", "\\$18.90", 0.0),
        # percent
        ("\\boxed{50\\%}", "50\\%", 1.0),
        ("\\boxed{40\\%}", "50\\%", 0.0),
        ("Answer: 50%", "50\\%", 1.0),
        ("Answer: 5%", "50\\%", 0.0),
        # units in \text{}
        ("\\boxed{10\\text{ cm}}", "10\\text{ cm}", 1.0),
        ("\\boxed{12\\text{ cm}}", "10\\text{ cm}", 0.0),
        ("\\boxed{10\\text{ cm}}", "10", 1.0),
        ("\\boxed{12\\text{ cm}}", "10", 0.0),
        # thousands separators
        ("\\boxed{1,000}", "1000", 1.0),
        ("\\boxed{1,001}", "1000", 0.0),
        ("\\boxed{1{,}000}", "1,000", 1.0),
        ("\\boxed{1{,}100}", "1,000", 0.0),
        ("Answer: 12,345", "12345", 1.0),
        ("Answer: 12,354", "12345", 0.0),
        ("\\boxed{\\$32,\\!348}", "\\$32,\\!348", 1.0),  # MATH-500's way (LaTeX negative space)
        ("\\boxed{\\$32,\\!384}", "\\$32,\\!348", 0.0),
        ("Answer: 32,\\!348", "32348", 1.0),
        ("Answer: 32,\\!384", "32348", 0.0),
        ("\\boxed{1\\,000}", "1000", 1.0),  # SI thin space
        ("\\boxed{1\\,010}", "1000", 0.0),
        # degrees
        ("\\boxed{90^\\circ}", "90^\\circ", 1.0),
        ("\\boxed{80^\\circ}", "90^\\circ", 0.0),
        ("\\boxed{90^{\\circ}}", "90", 1.0),
        ("\\boxed{90^{\\circ}}", "9", 0.0),
        ("Answer: 90°", "90^\\circ", 1.0),
        ("Answer: 60°", "90^\\circ", 0.0),
    ],
)
def test_formats_right_and_wrong(completion, gold, expected):
    assert math_reward(completion, gold, {}) == expected


# ------------------------------------------------------------------ item 9: rewards are binary by default


def _rg_entry():
    import reasoning_gym

    entry = next(
        iter(
            reasoning_gym.create_dataset(
                "basic_arithmetic", size=1, seed=3, min_terms=2, max_terms=2, min_digits=1, max_digits=1
            )
        )
    )
    return entry


# ------------------------------------------------------------------ arithmetic left undone is not an answer


@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        ("2 + -7", "-5", 0.0),  # the question restated: what GRPO learned in Study 2, seed 2 (docs/results.md)
        ("Calculate ( 2 + -7 ).\n2 + -7", "-5", 0.0),
        ("\\boxed{2+(-7)}", "-5", 0.0),
        ("Answer: 3 \\cdot 4", "12", 0.0),
        ("\\boxed{2^{10}}", "1024", 0.0),
        ("2 + -7 = -5", "-5", 1.0),  # worked, then the value: the value counts
        ("\\boxed{-(5)}", "-5", 1.0),
        ("3/4", "\\frac{3}{4}", 1.0),
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("\\boxed{50\\%}", "50\\%", 1.0),
        ("\\boxed{\\sqrt{12}}", "2\\sqrt{3}", 1.0),  # a symbolic reference still compares by value
        ("\\boxed{2 \\cdot 3}", "2 \\cdot 3", 1.0),
    ],
)
def test_a_numeric_reference_needs_a_number_not_an_expression_worth_it(completion, gold, expected):
    assert math_reward(completion, gold, {}) == expected


def test_reasoning_gym_reward_is_binary_by_default_and_partial_on_request():
    from introllm.training.rewards import load_scorer, resolve_reward

    entry = _rg_entry()
    gold = entry["answer"]
    rg, partial = load_scorer(resolve_reward("auto", "rg:basic_arithmetic")), load_scorer("rg-partial")
    assert rg(f"Answer: {gold}", gold, entry) == 1.0
    assert rg(f"\\boxed{{{gold}}}", gold, entry) == 1.0
    assert rg(f"Answer: {gold} apples", gold, entry) == 0.0
    assert rg("Answer: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18", gold, entry) == 0.0
    # reasoning-gym's own score: len(gold) / len(answer) when the answer contains the gold
    assert partial(f"Answer: {gold} apples", gold, entry) == pytest.approx(len(gold) / len(f"{gold} apples"))
    assert partial(f"Answer: {gold}", gold, entry) == 1.0


def test_a_wrong_sign_gets_partial_credit_only_from_rg_partial():
    """Seen on SmolLM2's own samples: "-16" against 16 is 2/3 'right' under partial credit."""
    from introllm.training.rewards import load_scorer

    entry = {"answer": "16", "metadata": {"source_dataset": "basic_arithmetic"}}
    assert load_scorer("rg")("Answer: -16", "16", entry) == 0.0
    assert load_scorer("rg-partial")("Answer: -16", "16", entry) == pytest.approx(2 / 3)
    assert load_scorer("rg")("Answer: 16", "16", entry) == 1.0


def test_the_training_doc_says_what_the_default_rewards_do():
    doc = (Path(__file__).parent.parent / "docs" / "training.md").read_text()
    assert "binary" in doc and "rg-partial" in doc


# ------------------------------------------------------------------ benchmark gold answers


def _golds(name: str) -> list[str]:
    return [
        str(json.loads(line)["answer"])
        for line in (BENCHMARKS / f"{name}.jsonl").read_text().splitlines()
        if line.strip()
    ]


@pytest.fixture(scope="module")
def worker():
    with RewardWorker(timeout=10.0) as w:
        yield w


def test_the_issue_examples_through_the_reward_worker(worker):
    """Training and eval score through the worker process: the same answers there."""
    completions = ISSUE_7 + ["\\boxed{\\$18.90}", "\\boxed{18.90}", "My first answer is \\boxed{7}.\nNo: \\boxed{8}."]
    golds = ["7"] * 5 + ["18.90", "\\$18.90", "7"]
    result = worker.score("math", completions, golds, [{}] * len(golds))
    assert result.rewards == [1.0] * 7 + [0.0]
    assert result.num_errors == result.num_timeouts == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["math500", "aime24", "amc23"])
def test_every_benchmark_gold_in_a_box_verifies_against_itself(worker, name):
    golds = _golds(name)
    completions = [f"Putting it together, the result is\n\\[\n\\boxed{{{g}}}\n\\]" for g in golds]
    result = worker.score("math", completions, golds, [{}] * len(golds))
    failed = [g for g, r in zip(golds, result.rewards) if r != 1.0]
    assert failed == [], f"{len(failed)}/{len(golds)} golds of {name} do not verify against themselves: {failed[:20]}"
    assert result.num_errors == result.num_timeouts == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["math500", "aime24", "amc23"])
def test_a_benchmark_gold_does_not_verify_against_a_different_gold(worker, name):
    golds = _golds(name)
    others = golds[1:] + golds[:1]

    def value(s):  # "x=5" and "5" are the same answer
        return s.rpartition("=")[2].replace(" ", "")

    pairs = [(g, o) for g, o in zip(golds, others) if value(g) != value(o)]
    result = worker.score("math", [f"\\boxed{{{o}}}" for _, o in pairs], [g for g, _ in pairs], [{}] * len(pairs))
    wrongly_right = [(g, o) for (g, o), r in zip(pairs, result.rewards) if r != 0.0]
    assert wrongly_right == []


# ------------------------------------------------------------------ issue 26, items 12-14

ISSUE_26 = [
    # item 12: a named value in the box, and a space before the box's brace
    ("\\boxed{x=3}", "3", 1.0),
    ("\\boxed{x=4}", "3", 0.0),
    ("\\boxed {7}", "7", 1.0),
    ("\\boxed {8}", "7", 0.0),
    ("\\boxed{3 + 4}", "7", 0.0),  # the numeric-reference rule still holds
    # item 13: an answer with structure after a phrase, parsed as a box is
    ("Answer: 6 - 5i", "6-5i", 1.0),
    ("Answer: 6 - 5i", "5", 0.0),
    ("Answer: 6 + 5i", "6-5i", 0.0),
    ("Answer: 1,-2", "1,-2", 1.0),
    ("Answer: 1,-2", "1", 0.0),
    ("Answer: 1,2", "1,-2", 0.0),
    ("Answer: $2n-2$", "2n-2", 1.0),
    ("Answer: $2n-3$", "2n-2", 0.0),
    ("The final answer is $6 - 5i$. I hope it is correct.", "6-5i", 1.0),
    ("The final answer is $6 + 5i$. I hope it is correct.", "6-5i", 0.0),
    ("Answer: 7 apples", "7", 1.0),  # prose after the number: still the number
    ("Answer: 2 + -7", "-5", 0.0),
    # item 14: scientific notation in golds and answers
    ("\\boxed{4.5 \\times 10^{33}}", "4.5e33", 1.0),
    ("\\boxed{4.6 \\times 10^{33}}", "4.5e33", 0.0),
    ("\\boxed{4.5 \\times 10^{32}}", "4.5e33", 0.0),
    ("\\boxed{4.5e33}", "4.5 \\times 10^{33}", 1.0),
    ("Answer: 3.83e35", "3.83 \\times 10^{35}", 1.0),
    ("\\boxed{1.2e-5}", "0.000012", 1.0),
    ("\\boxed{1.2e-5}", "0.00012", 0.0),
]


@pytest.mark.parametrize("completion, gold, expected", ISSUE_26)
def test_issue_26_checker_cases_with_right_and_wrong_neighbours(completion, gold, expected):
    assert math_reward(completion, gold, {}) == expected


@pytest.mark.slow
def test_every_gold_of_the_five_files_verifies_in_four_formats():
    """scripts/gold-self-check.py: each gold written boxed, after "Answer:", after "The final answer
    is" and in a sentence. The files' own odd golds (a "$,$" inside one, "np.arcsin(10/13)") leave a
    few failures outside a box; the floors are the counts measured when items 12-14 were fixed."""
    import subprocess
    import sys

    script = Path(__file__).parent.parent / "scripts" / "gold-self-check.py"
    out = Path(__file__).parent / ".gold-self-check.json"
    try:
        subprocess.run(
            [sys.executable, str(script), "--benchmarks", str(BENCHMARKS), "--json", str(out), "--show", "0"],
            check=True,
            capture_output=True,
            timeout=900,
        )
        report = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    right = {name: {fmt: r["right"] for fmt, r in formats.items()} for name, formats in report.items()}
    for name in ("math500", "aime24", "amc23"):
        assert set(right[name].values()) == {len(_golds(name))}, right[name]
    assert right["minerva_math"]["boxed"] == 272 and min(right["minerva_math"].values()) >= 261, right
    assert right["olympiadbench"]["boxed"] == 675 and min(right["olympiadbench"].values()) >= 652, right
