"""Verifiable rewards (paper B.3): 1 if the final answer is right, else 0. Which part of a completion
is its final answer, and how math is checked: answers.py.

Every built-in reward is binary except `rg-partial`, which passes reasoning-gym's partial credit
through. Why binary: GRPO normalises rewards within a group (eq. 3), so in a group where no sample
is right, partial credit becomes the whole signal, and a tiny difference is scaled up to a full
advantage. reasoning-gym's default scorer gives len(gold)/len(answer) to any answer that *contains*
the gold ("Answer: 7 apples" scores 0.125 against 7, a wrong "-16" 0.67 against 16), so those
advantages would reward wrong answers that happen to contain the gold.

Checks run in a separate worker process. Model output is adversarial input: a pathological
expression can make sympy (under math-verify) run for minutes or exhaust memory, so each check has
a deadline after which the worker is killed and restarted, and the answer scores 0. Model output is
only ever parsed, never evaluated (no ``eval``, no ``sympify`` of raw text by us).

This module imports nothing heavy at the top: the worker process starts fast.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .answers import extract_answer, is_correct  # extract_answer is also imported from here (evaluate.py)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- scorers (run in the worker)

_SCORERS: dict[str, Callable[[str, str, dict], float]] = {}


def scorer(name: str):
    def wrap(fn):
        _SCORERS[name] = fn
        return fn

    return wrap


def reward_names() -> list[str]:
    return sorted(n for n in _SCORERS if n != "sleep")


@functools.cache
def load_scorer(name: str) -> Callable[[str, str, dict], float]:
    """A built-in scorer by name, or your own as 'package.module:function' or 'path/file.py:function'
    (called as fn(completion, answer, metadata) -> float, in the worker process)."""
    if name in _SCORERS:
        return _SCORERS[name]
    target, sep, attr = name.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(
            f"unknown reward {name!r}; valid: {', '.join(reward_names())}, or module:function / file.py:function"
        )
    import importlib
    import importlib.util

    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"introllm_user_reward_{abs(hash(target))}", target)
        if spec is None or not Path(target).is_file():
            raise ValueError(f"reward file {target} does not exist")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ValueError(f"reward module {target!r} cannot be imported: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"reward {name!r}: {target} has no function {attr!r}")
    return fn


@scorer("math")
def math_reward(completion: str, answer: str, metadata: dict) -> float:
    """1.0 if the completion's final answer equals the reference under math-verify, else 0.0
    (answers.is_correct: last box, else answer phrase, else last expression).

    Raises:
        ValueError: the reference answer does not parse.
    """
    return 1.0 if is_correct(completion, answer) else 0.0


def _rg_score(completion: str, metadata: dict) -> float:
    import reasoning_gym

    task = metadata.get("metadata", {}).get("source_dataset")
    if not task:
        raise ValueError("a reasoning-gym problem without metadata.source_dataset")
    return float(reasoning_gym.get_score_answer_fn(task)(extract_answer(completion), metadata))


@scorer("rg")
def rg_reward(completion: str, answer: str, metadata: dict) -> float:
    """The reasoning-gym task's own scorer on the extracted answer, made binary: 1.0 only when it
    gives full credit (see the module docstring for why; `rg-partial` keeps partial credit)."""
    return 1.0 if _rg_score(completion, metadata) >= 1.0 else 0.0


@scorer("rg-partial")
def rg_partial_reward(completion: str, answer: str, metadata: dict) -> float:
    """The reasoning-gym task's own score in [0, 1] on the extracted answer, partial credit included
    ("Answer: 7 apples" against 7: 0.125)."""
    return _rg_score(completion, metadata)


@scorer("exact")
def exact_reward(completion: str, answer: str, metadata: dict) -> float:
    """String equality of the extracted answer and the reference (whitespace-trimmed)."""
    return 1.0 if extract_answer(completion).strip() == answer.strip() else 0.0


@scorer("sleep")
def _sleep_reward(completion: str, answer: str, metadata: dict) -> float:
    """Test hook: sleeps for float(answer) seconds (exercises the deadline without sympy)."""
    import time

    time.sleep(float(answer))
    return 1.0


def _worker(conn) -> None:
    import importlib

    # math-verify logs every parse that hits its own timeout at WARNING, with the whole completion
    # (tens of kB of hostile text per sample on stderr); failures reach the parent as reward 0.
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    for name in ("math_verify", "reasoning_gym"):  # import the checkers before the first deadline starts
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    conn.send("ready")
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        name, completion, answer, metadata = job
        try:
            conn.send((float(load_scorer(name)(completion, answer, metadata)), None))
        except Exception as e:  # any failure of a scorer is a zero reward, reported to the parent
            conn.send((0.0, f"{type(e).__name__}: {e}"[:300]))


@dataclass
class RewardResult:
    rewards: list[float]
    num_errors: int = 0  # checks that raised (scored 0)
    num_timeouts: int = 0  # checks killed at the deadline (scored 0)


class RewardWorker:
    """Scores completions in a child process, one check at a time, each with a deadline.

    >>> with RewardWorker(timeout=5) as w:            # doctest: +SKIP
    ...     w.score("math", ["Answer: 4"], ["4"], [{}]).rewards
    [1.0]
    """

    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_worker, args=(child,), daemon=True, name="introllm-reward")
        self._proc.start()
        child.close()
        self._conn = parent
        try:
            ready = parent.poll(120) and parent.recv() == "ready"
        except EOFError:
            ready = False
        if not ready:
            self._kill()
            raise RuntimeError(
                "the reward worker process did not start (a script that trains must be a file, "
                'with its entry point under `if __name__ == "__main__":`)'
            )

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._conn.close()
        self._proc = self._conn = None

    def check(
        self, name: str, completion: str, answer: str, metadata: dict[str, Any] | None = None
    ) -> tuple[float, str | None]:
        """(reward, error or None) for one completion; 'timeout' when the deadline passed."""
        load_scorer(name)  # a bad name fails here, in the caller, with a clear message
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((name, completion, answer, metadata or {}))
        if self._conn.poll(self.timeout):
            try:
                return self._conn.recv()
            except EOFError:
                self._kill()
                return 0.0, "worker died"
        self._kill()
        return 0.0, "timeout"

    def score(self, name: str, completions: list[str], answers: list[str], metadata: list[dict]) -> RewardResult:
        result = RewardResult(rewards=[])
        for completion, answer, meta in zip(completions, answers, metadata, strict=True):
            reward, error = self.check(name, completion, answer, meta)
            result.rewards.append(reward)
            if error == "timeout":
                result.num_timeouts += 1
            elif error is not None:
                result.num_errors += 1
                log.debug("reward check failed: %s", error)
        return result

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(2)
            except (BrokenPipeError, OSError):
                pass
        self._kill()

    def __enter__(self) -> RewardWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resolve_reward(reward: str, dataset: str) -> str:
    """'auto' -> the reasoning-gym scorer for rg: data, math-verify otherwise."""
    if reward == "auto":
        return "rg" if dataset.startswith("rg:") else "math"
    return reward
