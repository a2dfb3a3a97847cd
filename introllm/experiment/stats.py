"""Per-problem scores and percentile-bootstrap intervals over problems (the experiment report).

The unit of resampling is the *problem*: a benchmark's problems are the sample we generalise
from, and the k samples of one problem are not independent draws of anything we care about
(Avg@k and Pass@k are already per-problem statistics). Paired differences resample the same
problems for both methods, so problem difficulty cancels out (Efron & Tibshirani, *An
Introduction to the Bootstrap*, 1993, ch. 13, the percentile interval; Dror et al., "The Hitchhiker's
Guide to Testing Statistical Significance in NLP", ACL 2018, on paired bootstrap over examples).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from introllm.training.evaluate import pass_at_k


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval (all in the unit of the values, e.g. a fraction)."""

    mean: float
    lo: float
    hi: float

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def problem_scores(records: Iterable[dict[str, Any]], *, k: int) -> dict[str, tuple[float, float]]:
    """{problem_id: (Avg@k, Pass@k)} from an evaluation's per-sample records (``introllm eval``).

    Avg@k is the mean correctness of the problem's n samples; Pass@k the unbiased estimator of
    Chen et al. (2021) from n >= k samples. Raises ValueError if a problem has fewer than k samples.
    """
    by_problem: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        by_problem[str(r["problem_id"])].append(bool(r["correct"]))
    out = {}
    for pid, correct in by_problem.items():
        if len(correct) < k:
            raise ValueError(f"problem {pid} has {len(correct)} samples, fewer than k={k}")
        out[pid] = (sum(correct) / len(correct), pass_at_k(len(correct), sum(correct), k))
    return out


def resample_indices(num_items: int, *, num_resamples: int, seed: int) -> np.ndarray:
    """(num_resamples, num_items) indices drawn with replacement by numpy's PCG64 from ``seed``:
    the same seed and sizes give the same resamples, so reports are reproducible."""
    if num_items < 1 or num_resamples < 1:
        raise ValueError(f"need at least one item and one resample, got {num_items} items, {num_resamples} resamples")
    return np.random.default_rng(seed).integers(0, num_items, size=(num_resamples, num_items))


def bootstrap_interval(values: np.ndarray | list[float], indices: np.ndarray, *, confidence: float = 0.95) -> Interval:
    """Mean of ``values`` (shape (n,)) with the percentile-bootstrap interval of the mean.

    ``indices`` (shape (B, n), from :func:`resample_indices`) picks each resample; the interval
    is the (1 - confidence) / 2 and (1 + confidence) / 2 percentiles of the B resampled means,
    with numpy's default linear interpolation between order statistics. For a paired
    difference, pass the per-problem differences.

    Four resamples of four values: resampled means 1, 4, 2.5, 1.5; sorted 1, 1.5, 2.5, 4; the
    2.5 % point lies 0.075 of the way from the first to the second, the 97.5 % point 0.925 of the
    way from the third to the fourth:

    >>> iv = bootstrap_interval([1.0, 2.0, 3.0, 4.0], np.array([[0, 0, 0, 0], [3, 3, 3, 3], [0, 1, 2, 3], [0, 0, 1, 1]]))
    >>> iv.mean, round(iv.lo, 6), round(iv.hi, 6)
    (2.5, 1.0375, 3.8875)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or not len(v):
        raise ValueError(f"values must be a non-empty 1-d array, got shape {v.shape}")
    if indices.ndim != 2 or indices.shape[1] != len(v):
        raise ValueError(f"indices must have shape (B, {len(v)}), got {indices.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    means = v[indices].mean(axis=1)  # (B,)
    alpha = (1 - confidence) / 2
    lo, hi = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return Interval(float(v.mean()), float(lo), float(hi))


@dataclass(frozen=True)
class SeedInterval:
    """Mean over seeds with a Student-t interval (n - 1 degrees of freedom), and the values."""

    mean: float
    lo: float
    hi: float
    values: tuple


def seed_interval(values: list[float], *, confidence: float = 0.95) -> SeedInterval:
    """Mean of per-seed values with a two-sided t-interval over seeds: what varies between training
    runs (and evaluation seeds), which the bootstrap over problems does not see. With one value the
    interval is undefined (NaN ends). Needs scipy (``pip install scipy``: the dev extra has it).

    >>> iv = seed_interval([1.0, 2.0, 3.0])
    >>> iv.mean, round(iv.lo, 3), round(iv.hi, 3)
    (2.0, -0.484, 4.484)
    """
    n = len(values)
    mean = float(np.mean(values)) if n else float("nan")
    if n < 2:
        return SeedInterval(mean, float("nan"), float("nan"), tuple(values))
    try:
        from scipy import stats
    except ImportError:
        raise ValueError("the report's intervals over seeds need scipy: pip install scipy") from None
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * np.std(values, ddof=1) / np.sqrt(n))
    return SeedInterval(mean, mean - half, mean + half, tuple(values))
