"""A self-contained HTML page showing a temperature trace: the text with each token coloured by
its temperature (hover for the numbers), and tau by position as an inline SVG chart."""

from __future__ import annotations

import html
from collections.abc import Sequence

from .render import tau_colour


def _chart(temperatures: Sequence[float], updated: Sequence[bool], tau_min: float, tau_max: float) -> str:
    w, h, pad = 800, 160, 30
    n = max(len(temperatures), 2)
    lo, hi = (
        min(tau_min, *temperatures, 0.0) if temperatures else 0.0,
        max(tau_max, *temperatures) if temperatures else tau_max,
    )
    x = lambda i: pad + (w - 2 * pad) * i / (n - 1)  # noqa: E731
    y = lambda t: h - pad - (h - 2 * pad) * (t - lo) / ((hi - lo) or 1)  # noqa: E731
    points = " ".join(f"{x(i):.1f},{y(t):.1f}" for i, t in enumerate(temperatures))
    marks = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(t):.1f}" r="2.5" fill="{tau_colour(t, tau_min, tau_max)}" stroke="#333" stroke-width="0.5"/>'
        for i, (t, u) in enumerate(zip(temperatures, updated))
        if u
    )
    grid = "".join(
        f'<line x1="{pad}" x2="{w - pad}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>'
        f'<text x="4" y="{y(t) + 4:.1f}" font-size="10" fill="#666">{t:.1f}</text>'
        for t in (tau_min, 1.0, tau_max)
    )
    return (
        f'<svg viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="temperature by token position">{grid}'
        f'<polyline points="{points}" fill="none" stroke="#555" stroke-width="1.2"/>{marks}'
        f'<text x="{w / 2}" y="{h - 6}" font-size="10" fill="#666" text-anchor="middle">token position (dots: temperature updated)</text></svg>'
    )


def trace_page(
    prompt: str,
    tokens: Sequence[str],
    temperatures: Sequence[float],
    updated: Sequence[bool],
    *,
    title: str = "IntroLLM temperature trace",
    tau_min: float = 0.6,
    tau_max: float = 1.5,
) -> str:
    spans = "".join(
        f'<span style="background:{tau_colour(t, tau_min, tau_max)}" class="{"upd" if u else ""}" '
        f'title="token {i}: tau {t:.3f}{" (updated)" if u else ""}">{html.escape(p) or "&#8203;"}</span>'
        for i, (p, t, u) in enumerate(zip(tokens, temperatures, updated))
    )
    mean = sum(temperatures) / len(temperatures) if temperatures else 0.0
    legend = "".join(
        f'<span style="background:{tau_colour(tau_min + (tau_max - tau_min) * k / 8, tau_min, tau_max)}">&nbsp;&nbsp;&nbsp;</span>'
        for k in range(9)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
.text {{ font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.9; }}
.text span {{ border-radius: 3px; padding: 1px 0; }}
.text span.upd {{ box-shadow: inset 2px 0 0 #000; }}
.prompt {{ color: #555; border-left: 3px solid #ccc; padding-left: .75rem; white-space: pre-wrap; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="prompt">{html.escape(prompt)}</p>
<div class="text">{spans}</div>
<p>{len(temperatures)} tokens · mean tau {mean:.3f} · {sum(map(bool, updated))} updates ·
tau {tau_min:.2f} {legend} {tau_max:.2f} · a black left edge marks a token where the temperature was updated; hover a token for its tau.</p>
{_chart(list(temperatures), list(updated), tau_min, tau_max)}
</body></html>
"""
