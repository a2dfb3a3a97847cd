"""MeanShift: one fixed temperature equal to the mean of a learned policy's temperatures.

The baseline of SimpleDeco ("Token-Level Control or Just a Better Mean?", COLM 2026): if a
learned head only helps because it moves the *average* temperature to a better value, a single
fixed tau at that average does as well. Evaluating a checkpoint at ``fixed:<its token-mean tau>``
on the same benchmark separates the two effects; the difference learned - MeanShift is what
per-token control adds beyond its mean.

The mean is over every generated token of every sample (token-weighted, the tau the sampler
actually used at that token, so tokens where the Bernoulli gate kept the previous tau count with
that tau), read from the learned evaluation's records file (``introllm eval --policy learned``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .evaluate import load_summary

DECIMALS = 4
"""The MeanShift tau is rounded to this many decimals, so that it reads the same in the policy
spec, the command line and the report."""


def token_mean_tau(records_path: str | Path) -> float:
    """Token-weighted mean of the per-token ``tau`` of every record in an evaluation records file.

    Raises ValueError if the file is missing, holds no records or no tokens.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "r.jsonl")
    ...     _ = open(p, "w").write('{"tau": [0.6, 0.8]}\\n{"tau": [1.3]}\\n')
    ...     round(token_mean_tau(p), 6)
    0.9
    """
    path = Path(records_path)
    if not path.is_file():
        raise ValueError(f"{path}: no evaluation records (write them with introllm eval --policy learned)")
    total, count = 0.0, 0
    with open(path) as f:
        for line in f:
            if line.strip():
                taus = json.loads(line).get("tau") or []
                total += sum(taus)
                count += len(taus)
    if not count:
        raise ValueError(f"{path} holds no per-token temperatures")
    return total / count


def meanshift_policy(
    records_path: str | Path, *, checkpoint: str | None = None, dataset: str | None = None
) -> tuple[str, float]:
    """(policy spec ``fixed:T``, T) for the MeanShift baseline of a learned evaluation.

    When ``checkpoint`` / ``dataset`` are given they must match the learned evaluation's summary
    (the tau of one model on one benchmark says nothing about another); ValueError names both.
    The learned evaluation must have used a policy other than a fixed one.
    """
    summary = load_summary(records_path)
    if summary.policy.startswith("fixed") or summary.policy == "greedy":
        raise ValueError(f"{records_path}: MeanShift needs a learned evaluation, this one used policy {summary.policy}")
    if checkpoint is not None and summary.checkpoint != (checkpoint or "embedded"):
        raise ValueError(f"{records_path} evaluated checkpoint {summary.checkpoint}, not {checkpoint or 'embedded'}")
    if dataset is not None and summary.dataset != dataset:
        raise ValueError(f"{records_path} evaluated dataset {summary.dataset}, not {dataset}")
    tau = round(token_mean_tau(records_path), DECIMALS)
    return f"fixed:{tau:.{DECIMALS}f}", tau


def mean_matched_policy(
    records_path: str | Path, target: float, *, checkpoint: str | None = None, dataset: str | None = None
) -> tuple[str, float]:
    """(policy spec ``shifted:delta=D``, D) for the mean-matched row: the learned policy with its
    temperatures moved by D = target - its token-mean tau on this benchmark (the records of a
    learned evaluation, checked as for ``meanshift_policy``), so that per-token variation is
    compared with a fixed tau at the same mean. Raises ValueError as meanshift_policy does, and for
    a target that is not a positive number."""
    if not (target > 0):
        raise ValueError(f"mean-matched needs a target tau > 0, got {target}")
    _, mean = meanshift_policy(records_path, checkpoint=checkpoint, dataset=dataset)
    delta = round(target - token_mean_tau(records_path), DECIMALS)
    return f"shifted:delta={delta}", delta


def resolve_for_eval(cfg, data, output: str | Path, *, source: str = "", on_progress=None) -> tuple[str, float]:
    """The spec that ``introllm eval --policy meanshift`` (``fixed:T``) or ``--policy
    mean-matched:T`` (``shifted:delta=D``) samples with, and T or D.

    ``source`` is the records file of a learned evaluation of the same checkpoint on the same
    benchmark (``--meanshift-from``); without one, a first pass with the learned policy is run
    (same seed, k, n, limit) and kept beside ``output`` as ``<output>.learned.jsonl``, reused if
    it is already there. ``cfg`` is an ``EvalConfig``, ``data`` a ``DataConfig``.
    """
    from dataclasses import replace

    from .evaluate import evaluate, summary_path

    if not source:
        out = Path(output)
        source_path = out.with_name(out.name.removesuffix(".jsonl") + ".learned.jsonl")
        if not summary_path(source_path).is_file():
            evaluate(replace(cfg, policy="learned", name=""), data, source_path, on_progress=on_progress)
        source = str(source_path)
    if cfg.policy.startswith("mean-matched"):
        target = cfg.policy.partition(":")[2]
        try:
            value = float(target)
        except ValueError:
            raise ValueError(f"--policy mean-matched:T needs a temperature T, got {cfg.policy!r}") from None
        return mean_matched_policy(source, value, checkpoint=cfg.checkpoint, dataset=data.dataset)
    return meanshift_policy(source, checkpoint=cfg.checkpoint, dataset=data.dataset)


def derived(policy: str) -> bool:
    """Whether ``policy`` is resolved from a learned evaluation first (meanshift, mean-matched:T)."""
    return policy == "meanshift" or policy.startswith("mean-matched")
