"""Do the gold answers of the public benchmark files verify against themselves when written as a
model writes them (issue 26, item 12-14's acceptance)? Prints counts per file and format.

    python scripts/gold-self-check.py [--benchmarks ../shared/benchmarks] [--json OUT.json]

Each gold is read as `introllm eval` reads it (training.data: answer field, OlympiadBench's list
joined, Minerva's last box of the solution) and written four ways: in a box, after "Answer:",
after "The final answer is", and in a sentence ("The final answer is $X$. I hope it is correct.").
Scored by the reward worker (math-verify with the project's rules), 1.0 expected everywhere.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FILES = {  # file -> (answer field, gold in the last box of that field)
    "math500": ("answer", False),
    "aime24": ("answer", False),
    "amc23": ("answer", False),
    "minerva_math": ("solution", True),
    "olympiadbench": ("final_answer", False),
}
FORMATS = {
    "boxed": "So the result is \\boxed{{{g}}}.",
    "Answer:": "Answer: {g}",
    "final answer is": "The final answer is {g}",
    "sentence": "The final answer is ${g}$. I hope it is correct.",
}


def golds(path: Path, field: str, boxed: bool) -> list[str]:
    from introllm.training.answers import last_box_start

    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        answer = json.loads(line)[field]
        if isinstance(answer, list):
            answer = ", ".join(str(a) for a in answer)
        answer = str(answer)
        if boxed:
            from latex2sympy2_extended.math_normalization import extract_boxed_content

            answer = extract_boxed_content(answer[last_box_start(answer) :], mode="last")
        # a gold answer written by a model loses its outer $...$ (it would nest inside ours)
        out.append(answer.strip().strip("$").strip())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmarks", default=str(Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))
    p.add_argument("--json", default="", help="also write the counts and the failures here")
    p.add_argument("--show", type=int, default=5, help="failures printed per file and format")
    args = p.parse_args()
    from introllm.training.rewards import RewardWorker

    report = {}
    print(f"| file | golds | {' | '.join(FORMATS)} |\n|---|---:|" + "---:|" * len(FORMATS))
    with RewardWorker(timeout=30.0) as worker:
        for name, (field, boxed) in FILES.items():
            gs = golds(Path(args.benchmarks) / f"{name}.jsonl", field, boxed)
            cells, report[name] = [], {}
            for fmt, template in FORMATS.items():
                completions = [template.format(g=g) for g in gs]
                result = worker.score("math", completions, gs, [{}] * len(gs))
                failed = [g for g, r in zip(gs, result.rewards) if r != 1.0]
                report[name][fmt] = {"right": len(gs) - len(failed), "failed": failed}
                cells.append(f"{len(gs) - len(failed)}")
                for g in failed[: args.show]:
                    print(f"  {name} / {fmt}: {g!r}")
            print(f"| {name} | {len(gs)} | {' | '.join(cells)} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
