"""The paper's analyses as PNG files plus an index.html (``introllm plot``).

    fig2_tau_by_level.png     tau distribution by difficulty level (Fig. 2)
    fig3_token_tau.png        per-token tau of one completion minus the mean tau at each position (Fig. 3)
    fig4_hot_tokens.png       the 100 hottest contexts (previous token) as a word cloud (Fig. 4)
    fig4b_tau_context.png     mean tau by position and by sampling entropy
    fig5_tau_training.png     tau mean and extremes over training, overall and by level (Fig. 5)
    fig6_runs.png             entropy, reward and held-out accuracy of the runs on shared axes (Fig. 6)
    fig7_length.png           response length over training (Fig. 7)

Token-level figures (2-4) read per-token traces from an evaluation record file (``--eval``) or,
without one, from the first run's samples.jsonl. Training figures (5-7) read each run's
metrics.jsonl and are drawn only when runs are given: ``--eval FILE`` alone draws figures 2-4.
"""

from __future__ import annotations

import html
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

FIGURES = {
    "fig2_tau_by_level.png": "Temperature distribution by difficulty level (paper Fig. 2).",
    "fig3_token_tau.png": "Per-token temperature of one completion, minus the mean temperature at each position (Fig. 3).",
    "fig4_hot_tokens.png": "The 100 contexts (the token before) with the highest mean temperature chosen after them, "
    "seen at least 5 times; size grows with temperature (Fig. 4).",
    "fig4b_tau_context.png": "Mean temperature by position, and by the entropy of the sampling distribution (Fig. 4, context).",
    "fig5_tau_training.png": "Mean, minimum and maximum temperature over training, overall and by level (Fig. 5).",
    "fig6_runs.png": "Token entropy, reward and held-out accuracy of each run (Fig. 6).",
    "fig7_length.png": "Mean response length over training (Fig. 7).",
}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def traces_from(eval_file: Path | None, run_dirs: list[Path]) -> list[dict[str, Any]]:
    """Per-completion traces: {tokens, tau, updated, level, correct}."""
    if eval_file is not None:
        rows = _read_jsonl(eval_file)
        if not rows:
            raise ValueError(f"{eval_file} holds no evaluation records")
        try:
            return [
                {
                    "tokens": r["tokens"],
                    "tau": r["tau"],
                    "updated": r["updated"],
                    "level": r.get("level") if r.get("level") is not None else r.get("subject"),
                    "correct": r.get("correct"),
                    "entropy": r.get("entropy"),
                }
                for r in rows
            ]
        except (KeyError, TypeError):
            raise ValueError(
                f"{eval_file} is not a records file of introllm eval (rows need tokens, tau and updated)"
            ) from None
    out = []
    for run in run_dirs[:1]:
        for s in _read_jsonl(run / "samples.jsonl"):
            for c in s["completions"]:
                out.append(
                    {
                        "tokens": c["tokens"],
                        "tau": c["tau"],
                        "updated": c["updated"],
                        "level": None,
                        "correct": c["reward"] >= 1,
                    }
                )
    return out


def make_plots(run_dirs: list[Path], output: Path, eval_file: Path | None = None) -> list[Path]:
    """Write the figures and index.html into ``output``; returns the files written. Figures 5-7
    need ``run_dirs``; with only ``eval_file`` the token-level figures 2-4 are written. Raises
    ValueError on a directory without metrics.jsonl or when there are no traces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {}
    for d in run_dirs:
        metrics = [m for m in _read_jsonl(d / "metrics.jsonl")]
        if not metrics:
            raise ValueError(f"{d} is not a training run directory (no metrics.jsonl)")
        runs[d.name] = metrics
    traces = [t for t in traces_from(eval_file, run_dirs) if t["tau"]]
    if not traces:
        raise ValueError("no per-token traces: pass --eval FILE from introllm eval, or a run with samples.jsonl")
    output.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name, tight=True):
        if tight:
            fig.tight_layout()
        fig.savefig(output / name, dpi=110)
        plt.close(fig)
        written.append(output / name)

    # Fig. 2: tau by level
    by_level: dict[str, list[float]] = defaultdict(list)
    for t in traces:
        by_level[str(t["level"]) if t["level"] is not None else "all"].extend(t["tau"])
    levels = sorted(by_level)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(levels)), 4))
    ax.violinplot([by_level[lv] for lv in levels], showmedians=True)
    ax.set_xticks(range(1, len(levels) + 1), [lv[:18] for lv in levels], rotation=20)
    ax.set_ylabel("temperature")
    ax.set_title("Temperature by difficulty level")
    save(fig, "fig2_tau_by_level.png")

    # Fig. 3: one completion's tau minus the mean tau at each position
    pos_sum: dict[int, list[float]] = defaultdict(list)
    for t in traces:
        for i, tau in enumerate(t["tau"]):
            pos_sum[i].append(tau)
    pos_mean = {i: statistics.mean(v) for i, v in pos_sum.items()}
    example = max(traces, key=lambda t: (bool(t["correct"]), min(len(t["tau"]), 80)))
    m = min(len(example["tau"]), 80)
    delta = [example["tau"][i] - pos_mean[i] for i in range(m)]
    fig, ax = plt.subplots(figsize=(max(8, 0.22 * m), 4))
    ax.bar(range(m), delta, color=["#d62728" if d > 0 else "#1f77b4" for d in delta])
    ax.set_xticks(range(m), [repr(tok)[1:-1][:10] for tok in example["tokens"][:m]], rotation=90, fontsize=7)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("tau - mean tau at position")
    ax.set_title("Per-token temperature of one completion")
    save(fig, "fig3_token_tau.png")

    # Fig. 4: the contexts tau was chosen in (previous token, position)
    hottest = hot_contexts(traces, min_count=MIN_TOKEN_COUNT, top=100)
    save(_word_cloud(plt, [(tau, tok) for tau, tok, _ in hottest]), "fig4_hot_tokens.png", tight=False)
    save(_context_figure(plt, traces), "fig4b_tau_context.png")

    if not runs:
        return _write_index(output, written, run_dirs, eval_file)

    # Fig. 5: tau over training, overall and by level
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, metrics in runs.items():
        steps = [m["step"] for m in metrics if "tau_mean" in m]
        (line,) = ax.plot(steps, [m["tau_mean"] for m in metrics if "tau_mean" in m], label=f"{name} mean")
        ax.fill_between(
            steps,
            [m["tau_min"] for m in metrics if "tau_mean" in m],
            [m["tau_max"] for m in metrics if "tau_mean" in m],
            color=line.get_color(),
            alpha=0.15,
        )
        per_level: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for m in metrics:
            for lv, v in (m.get("tau_mean_by_level") or {}).items():
                per_level[lv].append((m["step"], v))
        if len(per_level) > 1:
            for lv, pts in sorted(per_level.items()):
                ax.plot(*zip(*pts), lw=0.8, ls="--", label=f"{name} {lv[:16]}")
    ax.set_xlabel("step"), ax.set_ylabel("temperature"), ax.set_title("Temperature over training (band: min-max)")
    ax.legend(fontsize=7)
    save(fig, "fig5_tau_training.png")

    # Fig. 6: entropy, reward, held-out accuracy on shared axes
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharex=True)
    for name, metrics in runs.items():
        for ax, key, title in zip(
            axes, ("entropy", "reward", "eval_accuracy"), ("token entropy", "reward", "held-out accuracy")
        ):
            pts = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o" if key == "eval_accuracy" else None, ms=3, label=name)
            ax.set_title(title), ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    save(fig, "fig6_runs.png")

    # Fig. 7: response length
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, metrics in runs.items():
        pts = [(m["step"], m["response_length"]) for m in metrics if "response_length" in m]
        ax.plot(*zip(*pts), label=name)
    ax.set_xlabel("step"), ax.set_ylabel("tokens"), ax.set_title("Mean response length over training")
    ax.legend(fontsize=8)
    save(fig, "fig7_length.png")

    return _write_index(output, written, run_dirs, eval_file)


MIN_TOKEN_COUNT = 5
"""Fig. 4 leaves out context tokens seen fewer times: a mean over one or two draws is noise."""


def hot_contexts(
    traces: list[dict[str, Any]], *, min_count: int = MIN_TOKEN_COUNT, top: int = 100
) -> list[tuple[float, str, int]]:
    """(mean tau, context token, count) of the ``top`` hottest contexts, hottest first.

    The head chooses tau_t from h_t, the hidden state *after* the previous token y_{t-1}, before
    y_t is drawn; so tau_t is paired with y_{t-1} (its context; ``<start>`` for the first token),
    not with y_t, which was drawn *at* tau_t (a high tau mechanically yields rare words, which
    would then look "hot"). Contexts seen fewer than ``min_count`` times are left out.

    >>> hot_contexts([{"tokens": ["a", "b", "a", "b", "a"], "tau": [1.0, 0.5, 1.5, 0.7, 1.3]}], min_count=2)
    [(1.4, 'b', 2), (0.6, 'a', 2)]
    """
    taus: dict[str, list[float]] = defaultdict(list)
    for t in traces:
        previous = ["<start>", *[tok.strip() or repr(tok) for tok in t["tokens"][:-1]]]
        for ctx, tau in zip(previous, t["tau"]):
            taus[ctx].append(tau)
    rows = [(round(statistics.mean(v), 6), tok, len(v)) for tok, v in taus.items() if len(v) >= min_count]
    return sorted(rows, reverse=True)[:top]


def _context_figure(plt, traces: list[dict[str, Any]]):
    """Mean tau by position in the answer, and by the entropy of the distribution each token was
    drawn from (where the records hold it; that entropy is at the token's own tau, so it rises
    with tau by construction: read it as a description, not as a cause)."""
    by_pos: dict[int, list[float]] = defaultdict(list)
    pairs = []
    for t in traces:
        for i, tau in enumerate(t["tau"]):
            by_pos[min(i // 8, 15)].append(tau)
        for tau, ent in zip(t["tau"], t.get("entropy") or []):
            if ent is not None:
                pairs.append((ent, tau))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    keys = sorted(by_pos)
    axes[0].plot([8 * k for k in keys], [statistics.mean(by_pos[k]) for k in keys], marker="o")
    axes[0].set_xlabel("token position (bins of 8; the last bin holds the rest)")
    axes[0].set_ylabel("mean tau")
    axes[0].set_title("tau by position")
    if pairs:
        pairs.sort()
        size = max(1, len(pairs) // 10)
        bins = [pairs[i : i + size] for i in range(0, len(pairs), size)]
        axes[1].plot(
            [statistics.mean(e for e, _ in b) for b in bins],
            [statistics.mean(t for _, t in b) for b in bins],
            marker="o",
        )
        axes[1].set_xlabel("entropy of the sampling distribution (nats, deciles)")
        axes[1].set_title("tau by entropy (at the token's own tau)")
    else:
        axes[1].text(0.5, 0.5, "no entropies in these records", ha="center", va="center")
    return fig


def _write_index(output: Path, written: list[Path], run_dirs: list[Path], eval_file: Path | None) -> list[Path]:
    index = output / "index.html"
    names = {p.name for p in written}
    items = "\n".join(
        f'<figure><img src="{n}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
        for n, c in FIGURES.items()
        if n in names
    )
    sources = ", ".join(html.escape(str(d)) for d in run_dirs) or "none"
    sources += f"; evaluation {html.escape(str(eval_file))}" if eval_file else ""
    index.write_text(
        "<!doctype html><meta charset=utf-8><title>IntroLLM analysis</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}figure{margin:2em 0}</style>"
        f"<h1>IntroLLM analysis</h1><p>Runs: {sources}</p>\n{items}\n"
    )
    written.append(index)
    return written


def _word_cloud(plt, words: list[tuple[float, str]]):
    """Place words (hottest biggest) on a spiral without overlaps."""
    import math

    fig = plt.figure(figsize=(10, 6))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.axis("off")
    renderer = fig.canvas.get_renderer()
    placed = []
    if not words:
        ax.text(0.5, 0.5, "no tokens", ha="center")
        return fig
    hi, lo = words[0][0], words[-1][0]
    cmap = plt.get_cmap("coolwarm")
    for rank, (tau, tok) in enumerate(words):
        x = (tau - lo) / (hi - lo) if hi > lo else 1.0
        size = 9 + 22 * x
        for i in range(2000):
            r, a = 0.004 * i, 0.35 * i
            px, py = 0.5 + r * math.cos(a) * 0.9, 0.5 + r * math.sin(a) * 0.6
            if not (0.03 < px < 0.97 and 0.05 < py < 0.95):
                continue
            text = ax.text(px, py, tok[:20], fontsize=size, ha="center", va="center", color=cmap(0.1 + 0.9 * x))
            box = text.get_window_extent(renderer).expanded(1.05, 1.1)
            if (
                not any(box.overlaps(b) for b in placed)
                and ax.bbox.contains(box.x0, box.y0)
                and ax.bbox.contains(box.x1, box.y1)
            ):
                placed.append(box)
                break
            text.remove()
    return fig
