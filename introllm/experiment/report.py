"""The Markdown report of an experiment (``OUT/report.md``): scores with bootstrap intervals,
paired differences against the baseline, learned tau against its MeanShift, the training runs
with the paper's figures 2-7, and the config and commands that produced it all.

Everything in it is a function of the finished jobs' files (no clock, no host name), so an
experiment that was stopped and resumed writes the same report as one that ran straight through.
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runner import ExperimentConfig, Job, slug
from .stats import Interval, bootstrap_interval, problem_scores, resample_indices


@dataclass
class RowData:
    """One report row on one benchmark: its finished evaluations, pooled over seeds."""

    row: str
    seeds: list  # seeds with a finished evaluation
    missing: list  # seeds without one
    scores: dict  # problem_id -> (Avg@k, Pass@k), mean over seeds
    per_seed: dict  # seed -> (Avg@k, Pass@k) over problems
    tau_mean: float | None  # token-weighted mean tau of all its samples
    policies: list  # the policy spec of each seed's evaluation (MeanShift: fixed:T)
    k: int
    n: int


def _read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def collect(cfg: ExperimentConfig, jobs: list[Job], done: set[str]) -> dict[str, dict[str, RowData]]:
    """{benchmark: {row: RowData}} from the finished evaluation jobs, rows in config order."""
    from introllm.training.evaluate import load_summary

    out: dict[str, dict[str, RowData]] = {}
    for b in cfg.benchmarks:
        rows: dict[str, RowData] = {}
        for row in cfg.row_names():
            evals = [j for j in jobs if j.kind == "eval" and j.benchmark == b.name and j.row == row]
            finished = [j for j in evals if j.id in done]
            if not finished:
                continue
            per_problem: dict[str, list[tuple[float, float]]] = {}
            per_seed, policies, tau_sum, tau_count, ks, ns = {}, [], 0.0, 0, set(), set()
            for j in finished:
                s = load_summary(j.records)
                records = _read_jsonl(j.records)
                scores = problem_scores(records, k=s.k)
                ks.add(s.k), ns.add(s.n), policies.append(s.policy)
                for pid, v in scores.items():
                    per_problem.setdefault(pid, []).append(v)
                per_seed[j.seed] = (
                    statistics.mean(v[0] for v in scores.values()),
                    statistics.mean(v[1] for v in scores.values()),
                )
                for r in records:
                    tau_sum += sum(r.get("tau") or [])
                    tau_count += len(r.get("tau") or [])
            if len(ks) != 1:
                raise ValueError(f"{b.name}: row {row} has evaluations with different k ({sorted(ks)})")
            incomplete = sorted(pid for pid, v in per_problem.items() if len(v) != len(finished))
            if incomplete:
                raise ValueError(f"{b.name}: row {row}'s seeds evaluated different problems (e.g. {incomplete[0]})")
            rows[row] = RowData(
                row=row,
                seeds=[j.seed for j in finished],
                missing=[j.seed for j in evals if j.id not in done],
                scores={
                    pid: (statistics.mean(a for a, _ in v), statistics.mean(p for _, p in v))
                    for pid, v in per_problem.items()
                },
                per_seed=per_seed,
                tau_mean=tau_sum / tau_count if tau_count else None,
                policies=policies,
                k=ks.pop(),
                n=min(ns),
            )
        out[b.name] = rows
    return out


def _interval(values: list[float], cfg: ExperimentConfig) -> Interval:
    idx = resample_indices(len(values), num_resamples=cfg.bootstrap_resamples, seed=cfg.bootstrap_seed)
    return bootstrap_interval(values, idx, confidence=cfg.confidence)


def _pct(iv: Interval, signed: bool = False) -> str:
    """``12.3 [8.1, 16.0]`` in percent (``+1.2 [-0.5, +3.0]`` for differences; never ``-0.0``)."""

    def f(x: float) -> str:
        v = round(100 * x, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
        return f"{v:+.1f}" if signed else f"{v:.1f}"

    return f"{f(iv.mean)} [{f(iv.lo)}, {f(iv.hi)}]"


def paired(a: RowData, b: RowData, cfg: ExperimentConfig) -> tuple[int, Interval, Interval] | None:
    """(problems, Avg@k difference, Pass@k difference) of a - b over the problems both evaluated,
    with paired bootstrap intervals; None if they share no problem or differ in k."""
    common = sorted(set(a.scores) & set(b.scores))
    if not common or a.k != b.k:
        return None
    d_avg = [a.scores[p][0] - b.scores[p][0] for p in common]
    d_pass = [a.scores[p][1] - b.scores[p][1] for p in common]
    return len(common), _interval(d_avg, cfg), _interval(d_pass, cfg)


def write_report(cfg: ExperimentConfig, jobs: list[Job], done: set[str]) -> Path:
    """Write ``OUT/report.md`` (and ``OUT/figures/``) from the finished jobs; returns its path."""
    out = Path(cfg.output)
    data = collect(cfg, jobs, done)
    conf = f"{100 * cfg.confidence:g} %"
    lines = [f"# Experiment: {cfg.name}", ""]
    todo = [j.id for j in jobs if j.id not in done]
    if todo:
        lines += [
            f"**Incomplete: {len(todo)} of {len(jobs)} jobs have not finished** ({', '.join(todo[:6])}{', ...' if len(todo) > 6 else ''}); "
            "rows below use the finished ones only.",
            "",
        ]
    lines += [
        f"Seeds: {', '.join(map(str, cfg.seeds))}. Baseline of the paired differences: **{cfg.baseline}**. "
        f"Scores in percent. Intervals: {conf} percentile bootstrap over problems ({cfg.bootstrap_resamples} resamples, "
        f"resampling seed {cfg.bootstrap_seed}). A row's score on a problem is the mean over its seeds, so an interval "
        "measures the spread from the choice of problems for these seeds, not from the choice of seeds: the per-seed "
        "column shows that. Paired differences resample the same problems for both rows.",
        "",
    ]
    for b in cfg.benchmarks:
        rows = data[b.name]
        if not rows:
            lines += [f"## {b.name}", "", "No finished evaluation yet.", ""]
            continue
        any_row = next(iter(rows.values()))
        k, n = any_row.k, any_row.n
        num_problems = len(any_row.scores)
        lines += [
            f"## {b.name}",
            "",
            f"`{b.dataset}`, {num_problems} problems, k = {k}, n = {n} samples per problem.",
            "",
            f"| Row | Seeds | Avg@{k} ({conf} CI) | Pass@{k} ({conf} CI) | Avg@{k} per seed | Mean tau |",
            "|---|---:|---|---|---|---:|",
        ]
        for r in rows.values():
            avg = _interval([v[0] for v in r.scores.values()], cfg)
            pas = _interval([v[1] for v in r.scores.values()], cfg)
            seeds = f"{len(r.seeds)}" + (f" (of {len(r.seeds) + len(r.missing)})" if r.missing else "")
            per_seed = ", ".join(f"{100 * r.per_seed[s][0]:.1f}" for s in r.seeds)
            tau = "–" if r.tau_mean is None else f"{r.tau_mean:.3f}"
            lines.append(f"| {r.row} | {seeds} | {_pct(avg)} | {_pct(pas)} | {per_seed} | {tau} |")
        lines.append("")
        base = rows.get(cfg.baseline)
        if base is None:
            lines += [f"Baseline {cfg.baseline} has no finished evaluation on {b.name}: no paired differences.", ""]
        else:
            lines += [
                f"Paired differences against **{cfg.baseline}** (row minus baseline, percentage points; "
                "an interval that excludes 0 is a difference these problems support):",
                "",
                f"| Row | Problems | Δ Avg@{k} ({conf} CI) | Δ Pass@{k} ({conf} CI) |",
                "|---|---:|---|---|",
            ]
            for r in rows.values():
                if r.row == cfg.baseline:
                    continue
                d = paired(r, base, cfg)
                lines.append(
                    f"| {r.row} | – | – | – |"
                    if d is None
                    else f"| {r.row} | {d[0]} | {_pct(d[1], True)} | {_pct(d[2], True)} |"
                )
            lines.append("")
        ms_rows = [
            (m.name, f"{m.name} MeanShift")
            for m in cfg.methods
            if m.meanshift and m.name in rows and f"{m.name} MeanShift" in rows
        ]
        if ms_rows:
            lines += [
                "Per-token temperature against its own mean (learned row minus its MeanShift row: the same checkpoints "
                "at one fixed tau equal to their token-mean tau on this benchmark; > 0 means per-token control adds "
                "something beyond the mean):",
                "",
                f"| Method | MeanShift tau per seed | Δ Avg@{k} ({conf} CI) | Δ Pass@{k} ({conf} CI) |",
                "|---|---|---|---|",
            ]
            for learned, ms in ms_rows:
                taus = ", ".join(p.split(":", 1)[1] if p.startswith("fixed:") else p for p in rows[ms].policies)
                d = paired(rows[learned], rows[ms], cfg)
                lines.append(
                    f"| {learned} | {taus} | – | – |"
                    if d is None
                    else f"| {learned} | {taus} | {_pct(d[1], True)} | {_pct(d[2], True)} |"
                )
            lines.append("")
        lines += _seed_section(cfg, rows, k, conf)
        lines += _comparison_section(cfg, rows, k, conf)
        pareto = _pareto_figure(rows, b.name, k, out / "figures" / f"pareto-{slug(b.name)}.png")
        if pareto is not None:
            lines += [f"![Avg@{k} against Pass@{k} on {b.name}]({pareto.relative_to(out)})", ""]
    lines += _training_section(cfg, jobs, done, out)
    lines += [
        "## How this was produced",
        "",
        "Config file:",
        "",
        "```toml",
        cfg.source.rstrip(),
        "```",
        "",
        "Commands, in the order they ran (`introllm experiment` adds `--resume RUN` to a stopped training, "
        "`--overwrite` to a restarted one; each job's output is in `logs/`):",
        "",
    ]
    lines += [f"{i}. `{j.command()}`" for i, j in enumerate(jobs, 1)]
    lines.append("")
    path = out / "report.md"
    tmp = path.with_name("report.md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


def _seed_line(values: list[float], cfg: ExperimentConfig) -> str:
    from .stats import seed_interval

    iv = seed_interval(values, confidence=cfg.confidence)
    if len(values) < 2:
        return f"{100 * iv.mean:+.1f} (one seed)"
    return f"{100 * iv.mean:+.1f} [{100 * iv.lo:+.1f}, {100 * iv.hi:+.1f}]"


def _seed_section(cfg: ExperimentConfig, rows: dict[str, RowData], k: int, conf: str) -> list[str]:
    """Rows with several seeds: mean over seeds with a t-interval over seeds."""
    from .stats import seed_interval

    multi = [r for r in rows.values() if len(r.seeds) > 1]
    if not multi:
        return []
    lines = [
        f"Over seeds (each seed's score over all problems; mean and {conf} t-interval over seeds: what another "
        "training run or sampling seed would give):",
        "",
        f"| Row | Seeds | Avg@{k} ({conf} t over seeds) | Pass@{k} ({conf} t over seeds) |",
        "|---|---:|---|---|",
    ]
    for r in multi:
        cells = []
        for i in (0, 1):
            iv = seed_interval([r.per_seed[s][i] for s in r.seeds], confidence=cfg.confidence)
            cells.append(f"{100 * iv.mean:.1f} [{100 * iv.lo:.1f}, {100 * iv.hi:.1f}]")
        lines.append(f"| {r.row} | {len(r.seeds)} | {cells[0]} | {cells[1]} |")
    return lines + [""]


def seed_differences(a: RowData, b: RowData, metric: int) -> tuple[list[float], bool]:
    """Per-seed differences a - b of Avg@k (metric 0) or Pass@k (1): paired on the seeds both rows
    have; if b has a single seed (a fixed row evaluated once), each of a's seeds minus that value.
    Returns (differences, paired)."""
    common = [s for s in a.seeds if s in b.per_seed]
    if len(common) >= 2 or len(b.seeds) != 1:
        return [a.per_seed[s][metric] - b.per_seed[s][metric] for s in common], True
    only = b.per_seed[b.seeds[0]][metric]
    return [a.per_seed[s][metric] - only for s in a.seeds], False


def _comparison_section(cfg: ExperimentConfig, rows: dict[str, RowData], k: int, conf: str) -> list[str]:
    """The config's comparisons a - b with both kinds of interval."""
    pairs = [(a, b) for a, b in cfg.comparisons if a in rows and b in rows]
    if not pairs:
        return []
    lines = [
        "Comparisons (a - b, percentage points) with both kinds of interval: the paired bootstrap over problems "
        f"(these problems, these seeds) and a {conf} t-interval over seeds (another run), with the per-seed differences:",
        "",
        f"| a - b | Δ Avg@{k}, bootstrap over problems | Δ Avg@{k}, t over seeds | per seed | "
        f"Δ Pass@{k}, bootstrap | Δ Pass@{k}, t over seeds |",
        "|---|---|---|---|---|---|",
    ]
    for a, b in pairs:
        d = paired(rows[a], rows[b], cfg)
        boot = ("–", "–") if d is None else (_pct(d[1], True), _pct(d[2], True))
        avg, was_paired = seed_differences(rows[a], rows[b], 0)
        pas, _ = seed_differences(rows[a], rows[b], 1)
        note = "" if was_paired else f" (vs {b}'s one seed)"
        per_seed = ", ".join(f"{100 * v:+.1f}" for v in avg) + note
        lines.append(
            f"| {a} - {b} | {boot[0]} | {_seed_line(avg, cfg)} | {per_seed} | {boot[1]} | {_seed_line(pas, cfg)} |"
        )
    return lines + [""]


def fixed_tau(policies: list[str]) -> float | None:
    """The temperature of a row whose evaluations all used one fixed policy (greedy: 0), else None."""
    taus = set()
    for p in policies:
        if p == "greedy":
            taus.add(0.0)
        elif p.startswith("fixed:"):
            taus.add(float(p.split(":", 1)[1]))
        else:
            return None
    return taus.pop() if len(taus) == 1 else None


def _pareto_figure(rows: dict[str, RowData], bench: str, k: int, path: Path) -> Path | None:
    """Avg@k (x) against Pass@k (y): the fixed-temperature rows as a line labelled with tau, every
    other row as a point (its seeds as small points). None when matplotlib is missing or no row has
    both."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fixed, other = [], []
    for r in rows.values():
        avg = statistics.mean(v[0] for v in r.scores.values())
        pas = statistics.mean(v[1] for v in r.scores.values())
        tau = fixed_tau(r.policies) if "MeanShift" not in r.row else None
        (fixed if tau is not None else other).append((tau, r, avg, pas))
    if not fixed and not other:
        return None
    fig, ax = plt.subplots(figsize=(7, 5.5))
    fixed.sort(key=lambda x: x[0])
    if fixed:
        ax.plot(
            [100 * x[2] for x in fixed], [100 * x[3] for x in fixed], "-o", color="0.45", label="fixed tau (greedy = 0)"
        )
        placed: list[tuple[float, float]] = []
        for tau, _, avg, pas in fixed:
            # a label whose point lies within a point or so of an earlier one goes below it, not on it
            near = any(abs(100 * avg - x) < 1.0 and abs(100 * pas - y) < 1.0 for x, y in placed)
            placed.append((100 * avg, 100 * pas))
            ax.annotate(
                f"{tau:g}",
                (100 * avg, 100 * pas),
                textcoords="offset points",
                xytext=(4, -10 if near else 4),
                fontsize=8,
                color="0.3",
            )
    markers = "s^Dv<>P*Xh"
    for i, (_, r, avg, pas) in enumerate(other):
        colour = f"C{i % 10}"
        ax.scatter(
            [100 * v[0] for v in r.per_seed.values()],
            [100 * v[1] for v in r.per_seed.values()],
            s=12,
            color=colour,
            alpha=0.45,
        )
        ax.scatter(
            [100 * avg],
            [100 * pas],
            s=70,
            marker=markers[i % len(markers)],
            color=colour,
            label=r.row,
            edgecolor="black",
            linewidth=0.6,
        )
    ax.set_xlabel(f"Avg@{k} (%)")
    ax.set_ylabel(f"Pass@{k} (%)")
    ax.set_title(f"{bench}: exploitation (Avg@{k}) against exploration (Pass@{k})")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _training_section(cfg: ExperimentConfig, jobs: list[Job], done: set[str], out: Path) -> list[str]:
    trains = [j for j in jobs if j.kind == "train" and j.id in done]
    if not trains:
        return []
    lines = [
        "## Training runs",
        "",
        "From each run's `metrics.jsonl` (held-out accuracy: the trainer's own held-out split, Avg over its samples).",
        "",
        "| Method | Seed | Steps | Held-out accuracy, start → end | Reward, last step | "
        "Mean tau, last step | Update rate, last step |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for j in trains:
        metrics = _read_jsonl(Path(j.run_dir) / "metrics.jsonl")
        # NaN where the run had no held-out split (eval_size 0)
        evals = [m["eval_accuracy"] for m in metrics if isinstance(m.get("eval_accuracy"), (int, float))]
        evals = [a for a in evals if math.isfinite(a)]
        last = metrics[-1]
        acc = f"{100 * evals[0]:.1f} → {100 * evals[-1]:.1f}" if evals else "–"

        def num(key: str, scale: float = 1.0, fmt: str = "{:.3f}") -> str:
            return fmt.format(scale * last[key]) if isinstance(last.get(key), (int, float)) else "–"

        lines.append(
            f"| {j.method} | {j.seed} | {last.get('step', '–')} | {acc} | {num('reward')} | {num('tau_mean')} | {num('update_rate')} |"
        )
    lines.append("")
    from introllm.training.plots import FIGURES, make_plots

    for m in cfg.methods:
        runs = [Path(j.run_dir) for j in trains if j.method == m.name]
        if not runs:
            continue
        evals = [j for j in jobs if j.kind == "eval" and j.row == m.name and j.id in done]
        target = out / "figures" / slug(m.name)
        lines += [f"### Figures: {m.name}", ""]
        try:
            with (
                warnings.catch_warnings()
            ):  # tokens outside the font (CJK, control characters) draw as boxes; not worth a warning each
                warnings.simplefilter("ignore", UserWarning)
                make_plots(runs, target, Path(evals[0].records) if evals else None)
        except ValueError as e:
            lines += [f"No figures: {e}", ""]
            continue
        source = (
            f"token-level figures from `{Path(evals[0].records).relative_to(out)}`"
            if evals
            else "token-level figures from the first run's samples"
        )
        lines += [f"Runs: {', '.join(f'`{r.relative_to(out)}`' for r in runs)}; {source}.", ""]
        lines += [f"![{caption}](figures/{slug(m.name)}/{name})" for name, caption in FIGURES.items()]
        lines.append("")
    return lines
