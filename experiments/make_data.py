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
