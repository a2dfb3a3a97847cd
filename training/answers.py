"""Which part of a completion is its final answer, and whether it equals the reference (paper B.3:
R(x, y) = 1 if the final answer matches the ground truth after symbolic verification, else 0).

The final answer is, in this order (the first that exists wins):

1. the **last** ``\\boxed{...}`` (or ``\\fbox{...}``), so a corrected answer beats an earlier one;
2. otherwise the first sentence after the last answer *phrase*: "Answer:", "**Answer:**",
   "answer =", "the answer is", "the final answer is", or a line that is only a "Final Answer"
   heading ("**Final Answer**", "## Final Answer"; then the next paragraph). LaTeX there without
   ``$`` is read as a box is. The word "answer" anywhere else ("to find the answer", "I hope this
   answer helps", "two possible answers") means nothing;
3. otherwise the last mathematical expression (math checking) or the last number (string form).

Math checking uses math-verify's own extraction (``math_verify.parse``) on that part, the way
open-r1's accuracy reward does (``LatexExtractionConfig(boxed_match_priority=0)``, first match):
its boxed extraction, LaTeX environments, number formats (``1,000``, ``$5``, ``50%``), unit and
``\\text{}`` removal. Where we deviate from calling ``parse`` on the whole completion, and why:

* math-verify's own "last box" keeps earlier boxes near the last one when a comma or "and" lies
  between them ("my first answer is \\boxed{5}. Checking again, 3 + 4 = 7, so \\boxed{7}" parses as
  the set {5, 7}); we hand it the text from the start of the last box, so only that box counts.
* math-verify anchors on the word "answer" anywhere (priorities 100/200 of its regexes); we locate
  answer phrases ourselves (step 2) and hide the bare word from it in step 3.
* ``\\$`` is a dollar sign, not a math delimiter; only an unescaped ``$`` delimits math. Outside a
  box we replace ``\\$`` by a space before parsing (math-verify's number pattern cannot see a
  number right after a backslash); inside a box math-verify's normalisation drops it.

The reference answer is always parsed as the content of a ``\\boxed{}`` (or, when it holds one, as
its last box), so a gold written ``\\$18.90``, ``50\\%``, ``90^\\circ``, ``10\\text{ cm}`` or
``$\\frac{1}{2}$`` parses like the same text in a model's box. In both, LaTeX spacing between
digit groups (``32,\\!348``, ``1\\,000``) is a thousands separator.

Everything here is parsing only; nothing is evaluated. sympy can still be slow on hostile input,
so call these in the reward worker process, which has a deadline (see rewards.py).
"""

from __future__ import annotations

import re

# An answer phrase: "answer" followed (after optional markdown bold) by ":", "=" or "is", or a line
# holding only a "Final Answer" heading. Group-free; the match end is where the answer starts.
_PHRASE = re.compile(
    r"\banswer[ \t]*(?:\*\*|__)?[ \t]*(?::|=|\bis\b)"
    r"|^[ \t>#*_]*final[ \t]+answer[ \t*_:]*$",
    re.IGNORECASE | re.MULTILINE,
)
_ANSWER_WORD = re.compile(r"answer", re.IGNORECASE)
_ESCAPED_DOLLAR = re.compile(r"(?<!\\)\\\$")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:/\d+)?")
_MATH_DELIMITER = re.compile(r"(?<!\\)\$|\\\(|\\\[")  # an unescaped $, \( or \[
_LATEX_HINT = re.compile(r"\\[a-zA-Z]|[\^_{]")  # a command, a power, a subscript or a group
# A LaTeX thin space, negative space, ``\ `` or ``{,}`` between digit groups: 32,\!348 and 1\,000
# are 32348 and 1000 (MATH writes them so), which math-verify would read as 32 and 1*0.
_DIGIT_GROUP = re.compile(r"(?<=\d)(?:,|\{,\})?(?:\\[!,;: ]|~)*(?:,|\{,\})?(?=\d{3}(?!\d))")
_SENTENCE_END = re.compile(r"\.\s+(?=[A-Z])")  # "7. This is because", "$7$. I hope it is correct"
_BOX_SPACE = re.compile(r"\\(boxed|fbox)\s+\{")  # "\boxed {7}": LaTeX allows the space, math-verify does not
# Scientific notation as programs and Minerva Math's golds write it (4.5e33, 1.2E-5): a number, not
# 4.5 * e * 33. Only between non-word characters, so names such as "x2e5" stay as they are.
_SCIENTIFIC = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?)[eE]([+-]?\d+)(?![\w.])")
# After LaTeX commands and \text{} are removed, a word of three or more letters: prose, not math.
_PROSE_WORD = re.compile(r"[A-Za-z]{3,}")
_COMMAND_OR_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}|\\[A-Za-z]+")
_MATH_WRAP = re.compile(r"^(?:\$\$(.+)\$\$|(?<!\\)\$(.+)(?<!\\)\$|\\\[(.+)\\\]|\\\((.+)\\\))$", re.DOTALL)


def last_box_start(text: str) -> int:
    """Index of the last ``\\boxed`` or ``\\fbox`` in text, -1 when there is none."""
    return max(text.rfind("\\boxed"), text.rfind("\\fbox"))


def answer_phrase_span(text: str) -> str | None:
    """The text after the last answer phrase (rest of its line, or the next paragraph when the
    phrase ends its line, as a "**Final Answer**" heading does); None when there is no phrase.

    >>> answer_phrase_span("3 + 4 = 7. Answer: 7")
    ' 7'
    >>> answer_phrase_span("To find the answer, we add.") is None
    True
    """
    last = None
    for last in _PHRASE.finditer(text):
        pass
    if last is None:
        return None
    line, _, tail = text[last.end() :].partition("\n")
    if line.strip(" \t*_:"):
        return line
    return tail.lstrip("\n").split("\n\n", 1)[0]


def extract_answer(text: str) -> str:
    """The final answer of a completion as a string (for string scorers such as reasoning-gym's and
    for reports): the last box's content, else the cleaned text after the last answer phrase, else
    the last number; '' when there is none. Same order as ``parse_completion``.

    >>> extract_answer("3 + 4 = 7. Answer: 7")
    '7'
    >>> extract_answer("My first answer is \\\\boxed{5}. Checking again, so \\\\boxed{7}.")
    '7'
    >>> extract_answer("The answer is **42**.")
    '42'
    """
    text = _BOX_SPACE.sub(lambda m: "\\" + m.group(1) + "{", text)
    start = last_box_start(text)
    if start >= 0:
        from latex2sympy2_extended.math_normalization import extract_boxed_content

        return extract_boxed_content(text[start:], mode="last").strip()
    span = answer_phrase_span(text)
    if span is not None:
        return _clean_span(span)
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else ""


def _clean_span(span: str) -> str:
    """The answer in the text after a phrase: its first sentence ("7. This is because..." -> "7"),
    without markdown emphasis, a leading colon, a trailing full stop or one math wrapper."""
    s = _SENTENCE_END.split(span.strip(), maxsplit=1)[0]
    s = s.strip().strip("*_").strip().lstrip(":").strip().strip("*_").strip()
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip().rstrip("*_").rstrip()
    m = _MATH_WRAP.match(s)
    if m:  # "$1.$" -> "1"
        s = next(g for g in m.groups() if g is not None).strip()
        s = s[:-1].rstrip() if s.endswith(".") and not s.endswith("..") else s
    return s


def normalise(text: str) -> str:
    """The rewrites done before math-verify sees a completion or a reference: LaTeX spacing between
    digit groups (``_join_digit_groups``), a space between ``\\boxed`` and its brace, and scientific
    notation written as a program writes it.

    >>> normalise("\\\\boxed {4.5e33}")
    '\\\\boxed{4.5\\\\times 10^{33}}'
    """
    text = _BOX_SPACE.sub(lambda m: "\\" + m.group(1) + "{", _join_digit_groups(text))
    return _SCIENTIFIC.sub(lambda m: f"{m.group(1)}\\times 10^{{{m.group(2)}}}", text)


def looks_like_math(span: str) -> bool:
    """Whether an answer span is mathematics only (``6 - 5i``, ``1,-2``, ``2n-2``, ``\\frac{1}{2}``,
    ``x = 3``), as opposed to prose (``7 apples``, ``Let me add``): no word of three or more letters
    once LaTeX commands and ``\\text{}`` are removed.

    >>> looks_like_math("6 - 5i"), looks_like_math("\\\\frac{\\\\pi}{2}"), looks_like_math("Let me add")
    (True, True, False)
    """
    return bool(span.strip()) and not _PROSE_WORD.search(_COMMAND_OR_TEXT.sub(" ", span))


def _join_digit_groups(text: str) -> str:
    """``32,\\!348`` / ``1\\,000`` / ``1\\ 000`` / ``1{,}000`` -> ``32,348`` / ``1,000``.

    >>> _join_digit_groups("\\\\$32,\\\\!348 and 1\\\\,000 and 1{,}000 and 3.14159")
    '\\\\$32,348 and 1,000 and 1,000 and 3.14159'
    """
    return _DIGIT_GROUP.sub(lambda m: "," if m.group(0) else "", text)


def _plain(text: str) -> str:
    """Text outside a box as math-verify should see it: ``\\$`` is a currency sign (a space here),
    and the bare word "answer" is hidden so that it cannot anchor math-verify's extraction."""
    return _ANSWER_WORD.sub("reply", _ESCAPED_DOLLAR.sub(" ", text))


def _configs():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    boxed = LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)
    return boxed, [LatexExtractionConfig(), ExprExtractionConfig()]


def parse_completion(text: str) -> list:
    """math-verify's parse of a completion's final answer (see the module docstring for the order):
    a list of sympy objects and strings, [] when nothing parses. Never raises on model text.

    >>> parse_completion("My first answer is \\\\boxed{5}.\\nChecking again, so \\\\boxed{7}.")
    [7, '7']
    """
    from math_verify import parse

    boxed, anywhere = _configs()
    text = normalise(text)
    start = last_box_start(text)
    if start >= 0:
        return parse(text[start:], [boxed], extraction_mode="first_match")
    span = answer_phrase_span(text)
    if span is None:
        return parse(_plain(text), anywhere)
    bare = _clean_span(span)
    if bare and not _MATH_DELIMITER.search(bare) and (_LATEX_HINT.search(bare) or looks_like_math(bare)):
        # mathematics after the phrase ("Answer: 6 - 5i", "Answer: 1,-2", "Answer: \\frac{1}{2}"):
        # read it as a box (and a gold answer) is read, not as the last number in it
        found = parse(f"\\boxed{{{bare}}}", [boxed], extraction_mode="first_match", fallback_mode="no_fallback")
        if found:
            return found
    # the first sentence after the phrase, else the rest of it ("Answer: Let me add. 3 + 4 = 7")
    return parse(_plain(bare), anywhere, fallback_mode="no_fallback") or parse(_plain(span), anywhere)


def parse_gold(answer: str) -> list:
    """math-verify's parse of a reference answer, written as the content of a ``\\boxed{}`` (a
    reference that holds a box is taken at its last box).

    Raises:
        ValueError: the reference does not parse (every sample of that problem would score 0).
    """
    from math_verify import parse

    boxed, _ = _configs()
    text = normalise(str(answer).strip())
    start = last_box_start(text)
    source = text[start:] if start >= 0 else f"\\boxed{{{text}}}"
    gold = parse(source, [boxed], extraction_mode="first_match")
    if not gold:
        raise ValueError(f"reference answer {answer!r} could not be parsed")
    return gold


def is_plain_number(expr) -> bool:
    """Whether a parsed answer is a number written out (``-5``, ``0.25``, ``\\frac{3}{4}``, ``3/4``,
    ``50\\%``, ``4.5 \\times 10^{33}``), as opposed to arithmetic still to do (``2 + -7``, ``3 \\cdot 4``, ``2^{10}``).
    math-verify keeps what it parses unevaluated (sympy ``evaluate=False``), so the two differ
    in the parsed object even where their values are equal.

    >>> from sympy import Integer, Rational, Add, Mul, Pow
    >>> is_plain_number(Integer(-5)), is_plain_number(Mul(3, Pow(4, -1, evaluate=False), evaluate=False))
    (True, True)
    >>> is_plain_number(Add(2, -7, evaluate=False))
    False
    """
    import sympy

    if isinstance(expr, sympy.Number):
        return True
    if isinstance(expr, sympy.Mul) and len(expr.args) == 2:
        a, b = expr.args
        if a == -1:  # -(x)
            return is_plain_number(b)
        if (
            isinstance(a, sympy.Integer)
            and isinstance(b, sympy.Pow)
            and isinstance(b.base, sympy.Integer)
            and b.exp == -1
        ):
            return True  # a/b written without \frac
        if isinstance(a, sympy.Number) and isinstance(b, sympy.UnevaluatedExpr) and b.args[0] == sympy.Rational(1, 100):
            return True  # a percentage
        if (
            isinstance(a, sympy.Number)
            and isinstance(b, sympy.Pow)
            and b.base == 10
            and isinstance(b.exp, sympy.Integer)
        ):
            return True  # scientific notation, 4.5 \times 10^{33}
    return False


def _value(expr):
    """The value side of ``x = 3`` (a name set equal to something); any other answer unchanged."""
    import sympy

    if isinstance(expr, sympy.Eq) and isinstance(expr.lhs, sympy.Symbol):
        return expr.rhs
    return expr


def is_correct(completion: str, answer: str) -> bool:
    """Whether the completion's final answer equals the reference under math-verify.

    One rule on top of math-verify: when the reference is a number, the answer must be a number
    too, not an expression that evaluates to it. Otherwise a model that restates the question
    ("Calculate 2 + -7." -> "2 + -7") is paid for it: math-verify reads the expression, sympy
    compares its value, and GRPO finds that shortcut (it did, in one of this project's studies:
    docs/results.md). MATH's own grader (Hendrycks et al., string equality after normalisation)
    rejects such answers as well.

    >>> is_correct("To find the answer, we add.\\n3 + 4 = 7\\nSo the total is \\\\boxed{7}.", "7")
    True
    >>> is_correct("2 + -7", "-5"), is_correct("2 + -7 = -5", "-5")
    (False, True)

    Raises:
        ValueError: the reference does not parse.
    """
    from math_verify import verify

    gold = parse_gold(answer)
    pred = parse_completion(completion)
    if not pred:
        return False
    if is_plain_number(gold[0]) and not isinstance(pred[0], str) and not is_plain_number(_value(pred[0])):
        return False
    return verify(gold, pred)
