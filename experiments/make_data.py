"""Write the studies' problem files (experiments/data/*.jsonl) from reasoning-gym, reproducibly.

    python experiments/make_data.py            # rewrites experiments/data/ (seconds)

Why files and not ``rg:<task>``: ``introllm train`` and ``introllm eval`` draw reasoning-gym
problems with the same fixed generator seed, so an ``rg:`` evaluation would score the very
problems the head was trained on. Here the arithmetic problems are split by *expression*
(``5 - 3`` asked in any wording lands on one side only) into a training file and a held-out
file; the second family (greatest common divisor of two numbers up to 30) is never trained on, so any
of its problems is held out. (Leg counting, the first choice, was dropped: the base model scored
0 of 24 on it at tau 0.6, which leaves nothing for a temperature to change.)
Rows are {"question", "answer", "level", "id"}; answers are integers, checked with math-verify.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import reasoning_gym

OUT = Path(__file__).parent / "data"
ARITH_ARGS = {
    "min_terms": 2,
    "max_terms": 2,
    "min_digits": 1,
    "max_digits": 1,
}  # the training default of introllm train
GCD_ARGS = {
    "min_numbers": 2,
    "max_numbers": 2,
    "min_value": 2,
    "max_value": 30,
}  # small numbers, so a 135M model scores at all
HELDOUT = 128


def rows(task: str, args: dict, size: int, seed: int) -> list[dict]:
    out, seen = [], set()
    for entry in reasoning_gym.create_dataset(task, size=size, seed=seed, **args):
        if entry["question"] in seen:
            continue
        seen.add(entry["question"])
        meta = entry.get("metadata") or {}
        out.append(
            {
                "question": entry["question"],
                "answer": str(entry["answer"]),
                "level": task,
                "id": f"{task}-{len(out)}",
                "_key": meta.get("expression", entry["question"]),
            }
        )
    return out


def write(name: str, items: list[dict]) -> None:
    OUT.mkdir(exist_ok=True)
    with open(OUT / name, "w") as f:
        for r in items:
            f.write(json.dumps({k: v for k, v in r.items() if k != "_key"}) + "\n")
    print(f"{OUT / name}: {len(items)} problems")


PRODUCTS_ARGS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}  # Study 3 (issue 27)


def split_by_key(items: list[dict], held_share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) with every key on one side only; about ``held_share`` of the keys held out."""
    keys = sorted({r["_key"] for r in items})
    random.Random(seed).shuffle(keys)
    held_keys = set(keys[: round(held_share * len(keys))])
    held = [r for r in items if r["_key"] in held_keys]
    train = [r for r in items if r["_key"] not in held_keys]
    assert not {r["_key"] for r in held} & {r["_key"] for r in train}
    return train, held


def study3() -> None:
    """Study 3's families, chosen by the sweep (docs/results.md): one-digit products (100 distinct
    questions; split by the unordered pair, so 3 * 4 and 4 * 3 fall on one side) and the GCD of two
    numbers in [2, 30] (split by the unordered pair of numbers)."""
    products = rows("products", PRODUCTS_ARGS, 4000, seed=20261205)
    for r in products:  # "3 * 4" and "4 * 3" are one key
        r["_key"] = tuple(sorted(r["_key"].replace(" ", "").split("*")))
    train, held = split_by_key(products, 0.4, seed=3)
    write("products-train.jsonl", train)
    write("products-heldout.jsonl", held)
    gcd = rows("gcd", GCD_ARGS, 4000, seed=20261205)
    for r in gcd:
        r["_key"] = tuple(sorted(int(x) for x in r["question"].split(":")[1].split(".")[0].split(",")))
    train, held = split_by_key(gcd, 0.2, seed=3)
    write("gcd-train.jsonl", train)
    write("gcd-study3-heldout.jsonl", held[:128])


def main() -> None:
    arith = rows("basic_arithmetic", ARITH_ARGS, 3000, seed=20261130)
    keys = sorted({r["_key"] for r in arith})
    random.Random(0).shuffle(keys)
    held_keys, total = set(), 0
    for k in keys:  # whole expressions into the held-out side until it holds HELDOUT problems
        if total >= HELDOUT:
            break
        held_keys.add(k)
        total += sum(r["_key"] == k for r in arith)
    held = [r for r in arith if r["_key"] in held_keys][:HELDOUT]
    train = [r for r in arith if r["_key"] not in held_keys]
    assert not {r["_key"] for r in held} & {r["_key"] for r in train}
    write("arithmetic-train.jsonl", train)
    write("arithmetic-heldout.jsonl", held)
    write("gcd-heldout.jsonl", rows("gcd", GCD_ARGS, HELDOUT * 2, seed=20261130)[:HELDOUT])


if __name__ == "__main__":
    main()
    study3()
