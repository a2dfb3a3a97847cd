"""Study 2 re-read (docs/results.md): each trained model at a common temperature minus the frozen
base at the same temperature, paired bootstrap over problems (the report's own statistics).

    python experiments/reread_vs_base.py        # after `introllm experiment experiments/training.toml`

The base's evaluations are made by hand, as the trained ones are (float32, seed 0, same problems):

    introllm eval --k 8 --limit 64 --max-new-tokens 64 --batch-prompts 8 --dtype float32 \\
      --dataset experiments/data/arithmetic-heldout.jsonl --policy greedy --seed 0 \\
      --output experiments/training/evals/arithmetic-held-out/base-at-greedy/seed0.jsonl
    (and --policy fixed:0.3 into base-at-fixed-0.3/)

A method's seeds are pooled per problem (the mean of its seeds' Avg@8), as the report pools them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from introllm.experiment.stats import bootstrap_interval, problem_scores, resample_indices

EVALS = Path("experiments/training/evals/arithmetic-held-out")


def pooled(files: list[Path]) -> tuple[list[str], np.ndarray]:
    """(problem ids, Avg@8 per problem averaged over the files' seeds)."""
    per = [problem_scores((json.loads(line) for line in f.open()), k=8) for f in files]
    ids = sorted(per[0])
    return ids, np.array([[s[i][0] for i in ids] for s in per]).mean(0)


def main() -> int:
    for temp in ("greedy", "fixed-0.3"):
        base_files = sorted((EVALS / f"base-at-{temp}").glob("seed*.jsonl"))
        if not base_files:
            print(f"no base evaluation at {temp} under {EVALS} (see this script's docstring)")
            return 1
        ids_b, base = pooled(base_files)
        idx = resample_indices(len(ids_b), num_resamples=10000, seed=0)
        for method in ("introllm", "grpo-0.6", "grpo-1.0"):
            files = sorted((EVALS / f"{method}-at-{temp}").glob("seed*.jsonl"))
            if not files:
                continue
            ids, score = pooled(files)
            if ids != ids_b:
                print(f"{method} at {temp}: other problems than the base's; skipped")
                continue
            ci = bootstrap_interval(100 * (score - base), idx)
            seeds = ", ".join(f.stem for f in files)
            print(f"{method} at {temp} ({seeds}) minus the base: {ci.mean:+.1f} [{ci.lo:+.1f}, {ci.hi:+.1f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
