"""Re-check an experiment's saved evaluation samples with the current answer checker, read-only.

    python experiments/rescore.py experiments/training experiments/frozen-base

For every ``evals/<benchmark>/<row>/seed<N>.jsonl`` under each output directory, every sample's
saved text is checked again against its reference (the ``math`` reward, in the reward worker with
its deadline) and compared with the ``correct`` recorded when it was evaluated. Prints, per row
and seed, Avg@k as recorded and as re-checked, and how many samples changed, with examples.
Written after the checker learned to refuse arithmetic left undone ("2 + -7" for -5): it tells
how much of a study's scores came from that loophole. The files are not modified.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from introllm.training.rewards import RewardWorker


def rescore_file(path: Path, worker: RewardWorker) -> dict:
    """Recorded and re-checked accuracy of one evaluation file (mean over its samples = Avg@k)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    result = worker.score("math", [r["text"] for r in rows], [r["answer"] for r in rows], [{} for _ in rows])
    now = [reward >= 1.0 for reward in result.rewards]
    lost = [r for r, ok in zip(rows, now) if r["correct"] and not ok]
    gained = [r for r, ok in zip(rows, now) if ok and not r["correct"]]
    return {
        "samples": len(rows),
        "recorded": sum(bool(r["correct"]) for r in rows) / len(rows),
        "rechecked": sum(now) / len(rows),
        "lost": len(lost),
        "gained": len(gained),
        "examples": Counter(f"{r['text'].strip()[:40]!r} (answer {r['answer']})" for r in lost).most_common(2),
        "timeouts": result.num_timeouts,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outputs", nargs="+", type=Path, help="experiment output directories (their evals/ is read)")
    ap.add_argument("--json", type=Path, help="also write every file's figures here")
    args = ap.parse_args(argv)
    files = []
    for out in args.outputs:
        found = sorted((out / "evals").glob("*/*/seed*.jsonl"))
        if not found:
            ap.error(f"{out}: no evals/<benchmark>/<row>/seed<N>.jsonl files")
        files += found
    report = {}
    print(f"{'file':<62}{'recorded':>9}{'now':>7}{'lost':>6}{'gained':>7}  most common lost")
    with RewardWorker(timeout=10) as worker:
        for path in files:
            r = rescore_file(path, worker)
            report[str(path)] = r
            ex = "; ".join(f"{text} x{n}" for text, n in r["examples"])
            print(
                f"{str(path.relative_to(path.parents[3])):<62}{100 * r['recorded']:>8.1f}%{100 * r['rechecked']:>6.1f}%"
                f"{r['lost']:>6}{r['gained']:>7}  {ex}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
