"""A reward for tests on random tiny models, whose completions are never right: 1 for an even
number of characters. It varies within a group, so advantages (and gradients) are non-zero."""


def parity(completion: str, answer: str, metadata: dict) -> float:
    return float(len(completion) % 2 == 0)


def boom(completion: str, answer: str, metadata: dict) -> float:
    raise RuntimeError("this reward always fails")
