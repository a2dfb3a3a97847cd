"""A second reader of evaluation records (issue 27: the report's numbers re-derived from the saved
samples by another script). Reads `introllm eval --output` JSONL files with nothing but the standard
library and the answer checker's verdicts are *not* trusted: each sample is re-checked with
``introllm.training.answers.is_correct`` against its gold answer.

    python experiments/spot_check.py FILE.jsonl [FILE.jsonl ...]

Prints per file: problems, samples per problem, Avg@k (mean correctness over all samples, in %),
Pass@k (share of problems with at least one correct sample, in %), the token-mean tau, and how
many stored verdicts the re-check disagrees with.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

from introllm.training.answers import is_correct


def main(paths: list[str]) -> None:
    for path in paths:
        by_problem: dict[str, list[bool]] = defaultdict(list)
        disagree, taus = 0, []
        for line in open(path):
            r = json.loads(line)
            ok = is_correct(r["text"], r["answer"])
            disagree += ok != r["correct"]
            by_problem[r["problem_id"]].append(ok)
            taus += r["tau"]
        k = max(len(v) for v in by_problem.values())
        avg = 100 * sum(sum(v) for v in by_problem.values()) / sum(len(v) for v in by_problem.values())
        passk = 100 * sum(any(v) for v in by_problem.values()) / len(by_problem)
        tau = sum(taus) / len(taus) if taus else float("nan")
        print(
            f"{path}: {len(by_problem)} problems x {k}: Avg@{k} {avg:.2f}  Pass@{k} {passk:.2f}  "
            f"mean tau {tau:.3f}  re-check disagrees on {disagree}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
